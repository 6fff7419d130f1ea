"""The worked example of docs/sink-plugins.md, registered as a real distribution."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import pytest

from bridge.cli import main
from bridge.config.loader import load
from bridge.events.builder import EventBuilder
from sinks import registry
from tests.unit.test_events import delta

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def spool_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    doc = (ROOT / "docs" / "sink-plugins.md").read_text()
    code = re.search(r"`spoolsink.py`:\n\n```python\n(.*?)```", doc, re.S)
    assert code is not None
    site = tmp_path / "site"
    site.mkdir()
    (site / "spoolsink.py").write_text(code.group(1))
    dist = site / "kube_event_bridge_spool-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: kube-event-bridge-spool\n"
                                   "Version: 0.1.0\n")
    (dist / "entry_points.txt").write_text("[kube_event_bridge.sinks]\n"
                                           "spool = spoolsink:SpoolSink\n")
    monkeypatch.syspath_prepend(str(site))
    yield tmp_path
    sys.modules.pop("spoolsink", None)


def test_plugin_config_is_validated_by_the_plugin(spool_plugin: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    bad = spool_plugin / "bad.yaml"
    bad.write_text("sinks:\n  - {name: a, type: spool}\n")
    assert main(["check-config", str(bad)]) == 2
    assert "directory" in capsys.readouterr().err
    assert "spool" in registry.plugin_names()


def test_plugin_delivers(spool_plugin: Path) -> None:
    good = spool_plugin / "good.yaml"
    good.write_text(f"sinks:\n  - {{name: a, type: spool, directory: {spool_plugin}/out}}\n")
    config = load(str(good))
    sink = registry.build(config.sinks[0], "local", 1_000_000)

    async def go() -> list[object]:
        await sink.connect()
        return list(await sink.send([EventBuilder().build(delta())]))

    assert asyncio.run(go()) == [None]
    assert [p.name for p in (spool_plugin / "out").iterdir()] == ["u-1_42.json"]
