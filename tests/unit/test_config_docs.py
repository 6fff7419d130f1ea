from __future__ import annotations

from pathlib import Path

from bridge.config import docs
from bridge.config.loader import load

ROOT = Path(__file__).resolve().parents[2]


def test_schema_and_reference_are_generated_from_the_model() -> None:
    assert docs.main(["--check"]) == 0, "run: python -m bridge.config.docs"


def test_the_commented_example_is_valid() -> None:
    config = load(str(ROOT / "config" / "example.yaml"), env={})
    assert [s.name for s in config.sinks] == ["out", "bus", "js"]
