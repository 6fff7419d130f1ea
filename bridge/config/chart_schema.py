"""Keep the Helm chart's ``values.schema.json`` in step with the config model.

The chart's own values (replicas, image, RBAC, ...) are described by hand in that file; its
``config`` value is the bridge's config, so that part (and the definitions it refers to) is
taken from the model, as ``config/schema.json`` is.

    python -m bridge.config.chart_schema          # rewrite the generated part
    python -m bridge.config.chart_schema --check  # exit 1 if it is out of date (run by tests)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bridge.config.docs import schema

ROOT = Path(__file__).resolve().parents[2]
CHART_SCHEMA = ROOT / "deploy" / "helm" / "kube-event-bridge" / "values.schema.json"


def with_config(values_schema: dict[str, Any]) -> dict[str, Any]:
    """``values_schema`` with ``properties.config`` and ``$defs`` from the config model."""
    model = json.loads(schema())
    defs = model.pop("$defs")
    for key in ("$schema", "title"):
        model.pop(key)
    model["description"] = ("The bridge's configuration (docs/config-reference.md), written "
                            "to config.yaml; generated from the config model.")
    out = dict(values_schema)
    out["properties"] = {**values_schema["properties"], "config": model}
    out["$defs"] = defs
    return out


def render(values_schema: dict[str, Any]) -> str:
    return json.dumps(with_config(values_schema), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge.config.chart_schema")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    current = CHART_SCHEMA.read_text()
    wanted = render(json.loads(current))
    if current == wanted:
        return 0
    if args.check:
        print(f"{CHART_SCHEMA.relative_to(ROOT)} is out of date: run "
              "python -m bridge.config.chart_schema", file=sys.stderr)
        return 1
    CHART_SCHEMA.write_text(wanted)
    print(f"wrote {CHART_SCHEMA.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
