"""deploy/: what can be checked without servers or tools. The chart's values schema is
generated from the config model; the alert rules exist once (the chart holds an identical
copy), use only metrics the bridge exports, and each has a promtool test and a runbook; every
shipped config is a valid bridge config."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

import bridge.delivery.worker  # noqa: F401  (registers the worker's metrics)
from bridge.config import chart_schema
from bridge.config.loader import load
from bridge.config.model import Config
from bridge.metrics import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "kube-event-bridge"
RULES = ROOT / "deploy" / "alerts" / "kube-event-bridge.rules.yaml"
RULE_TESTS = ROOT / "deploy" / "alerts" / "kube-event-bridge.rules.test.yaml"
OPERATIONS = ROOT / "docs" / "operations.md"


def alerts() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"]
            for rule in group["rules"]]


def test_values_schema_is_generated_from_the_config_model() -> None:
    assert chart_schema.main(["--check"]) == 0, "run: python -m bridge.config.chart_schema"


def test_the_chart_renders_the_canonical_rules() -> None:
    copy = CHART / "files" / RULES.name
    assert copy.read_bytes() == RULES.read_bytes(), f"cp {RULES} {copy}"


def test_alerts_use_only_metrics_the_bridge_exports() -> None:
    suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_sum", "_count"]}
    exported = {metric.name + suffix for metric in REGISTRY.collect()
                for suffix in suffixes[metric.type]}
    used = {name for rule in alerts()
            for name in re.findall(r"kube_event_bridge_\w+", rule["expr"])}
    assert used and used <= exported, used - exported


def test_every_alert_has_a_promtool_test_and_a_runbook() -> None:
    names = [rule["alert"] for rule in alerts()]
    assert len(names) == len(set(names))
    tested = {case["alertname"] for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
              for case in test.get("alert_rule_test", [])}
    headings = set(re.findall(r"^### (\w+)$", OPERATIONS.read_text(), re.MULTILINE))
    for rule in alerts():
        name = rule["alert"]
        assert name in tested, f"{name}: no promtool test in {RULE_TESTS.name}"
        assert name in headings, f"{name}: no runbook section '### {name}' in operations.md"
        assert rule["annotations"]["runbook"] == f"docs/operations.md#{name.lower()}"
        assert rule["labels"]["severity"] in ("critical", "warning", "info")


def test_shipped_configs_are_valid() -> None:
    env = {"KAFKA_BOOTSTRAP_SERVERS": "kafka:9092", "NATS_URL": "nats://nats:4222"}
    for path in sorted((ROOT / "deploy").glob("**/config.yaml")):
        load(str(path), env=env)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    config = Config.model_validate(values["config"])
    assert config.leader_election.enabled and config.checkpoint.store == "configmap"
