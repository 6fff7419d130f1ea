"""deploy/alerts: promtool (built from the Prometheus Go module) accepts the rules and their unit
tests pass (each alert fires on its input series, and look-alike situations do not fire it);
the chart's PrometheusRule carries exactly these rules."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.env import builds

# The first test builds promtool from the Go module proxy when it is not cached (minutes, once
# per machine): more than the default per-test timeout allows.
pytestmark = pytest.mark.timeout(1200)

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "alerts"
RULES = ALERTS / "kube-event-bridge.rules.yaml"
CHART = ROOT / "deploy" / "helm" / "kube-event-bridge"


@pytest.fixture(scope="module")
def promtool() -> Path:
    return builds.promtool()


def run(*cmd: str | Path, cwd: Path = ROOT) -> str:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))}:\n{done.stdout}{done.stderr}"
    return done.stdout


def test_promtool_checks_the_rules(promtool: Path) -> None:
    count = len(yaml.safe_load(RULES.read_text())["groups"][0]["rules"])
    assert f"SUCCESS: {count} rules found" in run(promtool, "check", "rules", RULES)


def test_promtool_unit_tests_pass(promtool: Path) -> None:
    out = run(promtool, "test", "rules", "kube-event-bridge.rules.test.yaml", cwd=ALERTS)
    assert "SUCCESS" in out and "FAILED" not in out


def test_the_chart_s_prometheus_rule_is_these_rules(promtool: Path, tmp_path: Path) -> None:
    rendered = run(builds.helm(), "template", "keb", CHART, "--set",
                   "prometheusRule.enabled=true")
    (rule,) = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "PrometheusRule"]
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    extracted = tmp_path / "from-chart.rules.yaml"
    extracted.write_text(yaml.safe_dump(rule["spec"]))
    run(promtool, "check", "rules", extracted)
