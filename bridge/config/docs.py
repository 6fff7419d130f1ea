"""Generate ``config/schema.json`` and ``docs/config-reference.md`` from the config model.

    python -m bridge.config.docs          # write both
    python -m bridge.config.docs --check  # exit 1 if either is out of date (run by tests)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

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


def models_in(annotation: Any) -> list[type[BaseModel]]:
    """The models an annotation holds (``X``, ``X | None``, ``list[X]``, ``dict[str, X]``,
    annotated unions), in order."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in get_args(annotation):
        found += [m for m in models_in(arg) if m not in found]
    return found


def _shape(annotation: Any) -> str:
    """How a field holding one model is written: a section, a list or map of them."""
    origin = get_origin(annotation)
    if origin is list:
        return "list of sections"
    if origin is dict:
        return "map of sections"
    if type(None) in get_args(annotation):
        return "section or null"
    return "section"


def _item(annotation: Any, path: str) -> str:
    """The key path of the model a field holds: ``[]`` for list items, ``.<key>`` for maps."""
    origin = get_origin(annotation)
    if origin is list:
        return f"{path}[]"
    if origin is dict:
        return f"{path}.<key>"
    return path


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "**required**"
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            return "(section)"
        return f"`{json.dumps(value)}`"
    return f"`{json.dumps(field.default, default=str)}`"


def _text(text: str | None) -> str:
    return " ".join((text or "").split()).replace("|", "\\|")


class Reference:
    """Renders models as tables. Every model gets one section, where it is first met; a
    model met again (TLS under several keys) links there, and its section names every
    key it appears under."""

    def __init__(self, paths: dict[type[BaseModel], list[str]]) -> None:
        self.paths = paths  # every key path of every model, in order of appearance
        self.done: set[type[BaseModel]] = set()

    def table(self, model: type[BaseModel], prefix: str) -> list[str]:
        """``model``'s table, then the sections of the models its fields hold."""
        lines = ["| key | type | default | description |", "|---|---|---|---|"]
        nested: list[type[BaseModel]] = []
        for name, field in model.model_fields.items():
            key = f"{prefix}{name}"
            if name == "sinks" and model is Config:
                lines.append("| `sinks` | list of sinks | **required** | see [*Sinks*](#sinks) |")
                continue
            held = models_in(field.annotation)
            description = _text(field.description)
            if len(held) == 1:
                link = f"see [`{self.title(held[0])}`](#{_anchor(self.paths[held[0]][0])})"
                description = f"{description}; {link}" if description else link
                kind = _shape(field.annotation)
                if held[0] not in self.done:
                    self.done.add(held[0])
                    nested.append(held[0])
            else:
                kind = f"`{_type(field.annotation)}`"
            lines.append(f"| `{key}` | {kind} | {_default(field)} | {description} |")
        out = [*lines, ""]
        for sub in nested:
            out += self.section(sub)
        return out

    def title(self, model: type[BaseModel]) -> str:
        """A model's key path; for one under several keys, its last name (``tls``)."""
        first, *others = self.paths[model]
        return first.rsplit(".", 1)[-1] if others else first

    def section(self, model: type[BaseModel]) -> list[str]:
        paths, title = self.paths[model], self.title(model)
        heading = f"`{title}`"
        if len(paths) > 1:
            heading += " (" + ", ".join(f"`{p}`" for p in paths) + ")"
        out = [f'<a id="{_anchor(paths[0])}"></a>', "", f"### {heading}", ""]
        if _text(model.__doc__):
            out += [_text(model.__doc__), ""]
        return out + self.table(model, f"{title}.")


def _anchor(path: str) -> str:
    words = "".join(c if c.isalnum() else " " for c in path).split()
    return "-".join(words)


def key_paths() -> dict[type[BaseModel], list[str]]:
    """Every model reachable from ``Config`` (built-in sink types included) and every key
    path it appears under, in the order the reference meets them."""
    paths: dict[type[BaseModel], list[str]] = {}

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            if name == "sinks" and model is Config:
                continue
            for sub in models_in(field.annotation):
                path = _item(field.annotation, f"{prefix}{name}")
                known = paths.setdefault(sub, [])
                if path not in known:
                    known.append(path)
                    walk(sub, f"{path}.")

    walk(Config, "")
    for sink in BUILTIN_SINK_SETTINGS.values():
        walk(sink, "sinks[].")
    return paths


def reference() -> str:
    doc = Reference(key_paths())
    out = [
        "# Configuration reference",
        "",
        "Generated from the config model by `python -m bridge.config.docs`; do not edit.",
        "The same model produces `config/schema.json`. A commented example is",
        "`config/example.yaml`. Strings may use `${VAR}` or `${VAR:-default}` (environment",
        "variables; their values are never logged). Unknown keys are errors. A key written",
        "`a[]` is an item of the list `a`.",
        "",
        "## Top level",
        "",
        *doc.table(Config, ""),
        '<a id="sinks"></a>',
        "",
        "## Sinks",
        "",
        "Every sink takes `name`, `type`, `filter` and `batch_size`; then its own keys.",
        "Third-party types come from the entry-point group `kube_event_bridge.sinks`",
        "(see `docs/sink-plugins.md`).",
        "",
    ]
    for type_name, model in BUILTIN_SINK_SETTINGS.items():
        out += [f"### `type: {type_name}`", "", _text(model.__doc__), "",
                *doc.table(model, "")]
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
