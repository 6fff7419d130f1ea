"""Generate ``config/schema.json`` and ``docs/config-reference.md`` from the config model.

    python -m bridge.config.docs          # write both
    python -m bridge.config.docs --check  # exit 1 if either is out of date (run by tests)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from bridge.config.model import BUILTIN_SINK_SETTINGS, Config

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "config" / "schema.json"
REFERENCE = ROOT / "docs" / "config-reference.md"


def schema() -> str:
    doc = Config.model_json_schema()
    doc["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    doc["title"] = "kube-event-bridge configuration"
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def _type(annotation: Any) -> str:
    text = str(annotation).replace("typing.", "")
    for noise in ("<class '", "'>", "sinks.base.", "bridge.config.model.", "pydantic.types."):
        text = text.replace(noise, "")
    return text.replace("NoneType", "null").replace("|", "\\|")


def _default(field: Any) -> str:
    if field.is_required():
        return "**required**"
    if field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, BaseModel):
            return "(section)"
        return f"`{json.dumps(value)}`"
    return f"`{json.dumps(field.default, default=str)}`"


def _table(model: type[BaseModel], prefix: str) -> list[str]:
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            nested.append((f"{prefix}{name}", annotation))
            lines.append(f"| `{prefix}{name}` | section | | see below |")
            continue
        if name == "sinks" and model is Config:
            lines.append("| `sinks` | list of sinks | **required** | see *Sinks* below |")
            continue
        description = (field.description or "").replace("|", "\\|").replace("\n", " ")
        lines.append(f"| `{prefix}{name}` | `{_type(annotation)}` | {_default(field)} | "
                     f"{description} |")
    out = [*lines, ""]
    for section, sub in nested:
        out += [f"### `{section}`", "", " ".join((sub.__doc__ or "").split()), "",
                *_table(sub, f"{section}.")]
    return out


def reference() -> str:
    out = [
        "# Configuration reference",
        "",
        "Generated from the config model by `python -m bridge.config.docs`; do not edit.",
        "The same model produces `config/schema.json`. A commented example is",
        "`config/example.yaml`. Strings may use `${VAR}` or `${VAR:-default}` (environment",
        "variables; their values are never logged). Unknown keys are errors.",
        "",
        "## Top level",
        "",
        *_table(Config, ""),
        "## Sinks",
        "",
        "Every sink takes `name`, `type`, `filter` and `batch_size`; then its own keys.",
        "Third-party types come from the entry-point group `kube_event_bridge.sinks`",
        "(see `docs/sink-plugins.md`).",
        "",
    ]
    for type_name, model in BUILTIN_SINK_SETTINGS.items():
        out += [f"### `type: {type_name}`", "", " ".join((model.__doc__ or "").split()), "",
                *_table(model, "")]
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge.config.docs")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    wanted = {SCHEMA: schema(), REFERENCE: reference()}
    stale = [p for p, text in wanted.items()
             if not p.exists() or p.read_text() != text]
    if args.check:
        for path in stale:
            print(f"{path.relative_to(ROOT)} is out of date: run python -m bridge.config.docs",
                  file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(wanted[path])
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
