from __future__ import annotations

import re
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel

from bridge.config import docs
from bridge.config.loader import load
from bridge.config.model import CheckpointSettings, Config, RedactionSettings
from sinks.base import RouteFilter
from sinks.kafka import KafkaSettings
from sinks.kafka_security import SaslSettings
from sinks.nats import NatsSettings
from sinks.tls import TlsSettings

ROOT = Path(__file__).resolve().parents[2]


def test_schema_and_reference_are_generated_from_the_model() -> None:
    assert docs.main(["--check"]) == 0, "run: python -m bridge.config.docs"


def test_the_commented_example_is_valid() -> None:
    config = load(str(ROOT / "config" / "example.yaml"), env={})
    assert [s.name for s in config.sinks] == ["out", "bus", "js"]


def _reachable(model: type[BaseModel], found: set[type[BaseModel]]) -> set[type[BaseModel]]:
    """Every model ``model`` holds, at any depth (walked here, not by the generator)."""
    def held(annotation: Any) -> list[type[BaseModel]]:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return [annotation]
        return [m for arg in get_args(annotation) for m in held(arg)]

    for field in model.model_fields.values():
        for sub in held(field.annotation):
            if sub not in found:
                found.add(sub)
                _reachable(sub, found)
    return found


def _sections(text: str) -> dict[str, set[str]]:
    """Heading -> the field names its table lists (the last part of each key)."""
    out: dict[str, set[str]] = {}
    heading = ""
    for line in text.splitlines():
        if line.startswith("#"):
            heading = line
            out[heading] = set()
        elif found := re.match(r"\| `([^`]+)` \|", line):
            out[heading].add(found.group(1).rsplit(".", 1)[-1])
    return out


def test_every_model_reachable_from_the_root_has_a_section_listing_all_its_fields() -> None:
    models = _reachable(Config, {Config})
    assert {TlsSettings, SaslSettings, RedactionSettings, RouteFilter, KafkaSettings,
            NatsSettings, CheckpointSettings} <= models
    sections = _sections(docs.reference())
    for model in models:
        fields = set(model.model_fields)
        assert any(keys == fields for keys in sections.values()), (
            f"{model.__name__}: no section lists exactly {sorted(fields)}")


def test_every_field_of_a_model_in_the_config_module_is_described() -> None:
    missing = [f"{model.__name__}.{name}" for model in _reachable(Config, {Config})
               if model.__module__ == "bridge.config.model"
               for name, field in model.model_fields.items()
               if name in model.__annotations__  # its own, not inherited
               and not field.description and not docs.models_in(field.annotation)]
    assert missing == []


def test_the_docs_cite_no_document_outside_the_repository() -> None:
    cited = [f"{path.relative_to(ROOT)}:{n}" for top in ("README.md", "docs", "bridge", "sinks",
                                                         "tests", "bench", "deploy", "config")
             for path in sorted((ROOT / top).rglob("*") if (ROOT / top).is_dir()
                                else [ROOT / top])
             if path.is_file() and path.suffix in (".md", ".py", ".json", ".yaml", ".yml")
             for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
             if "DESIGN" in line and path.name != "test_config_docs.py"]
    assert cited == []
