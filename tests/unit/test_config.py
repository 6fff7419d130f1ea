"""Bad configs: each gets FILE:LINE: path: message with a hint, exit 2, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.cli import main
from bridge.config.loader import ConfigProblems, load

GOOD = """\
cluster: local
kubeconfig: ${KUBECONFIG:-/nonexistent}
http: {port: 9090}
watch:
  crds: all
  builtins: []
  exclude: ["*.example.com/secretthings"]
  namespaces: []
sinks:
  - {name: out, type: jsonl, path: "-"}
  - {name: bus, type: kafka, bootstrap_servers: "localhost:9092",
     topic: "k8s.{group}.{plural}"}
  - {name: js, type: nats, url: "nats://localhost:4222", stream: K8S,
     subject: "k8s.{group}.{plural}.{namespace}.{name}"}
checkpoint: {store: file, path: ./.kube-event-bridge}
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def check(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str) -> tuple[int, str]:
    code = main(["check-config", write(tmp_path, text)])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def test_the_design_minimal_config_is_valid(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert check(tmp_path, capsys, GOOD)[0] == 0
    config = load(write(tmp_path, GOOD), env={"KUBECONFIG": "/k"})
    assert config.kubeconfig == "/k" and [s.type for s in config.sinks] == [
        "jsonl", "kafka", "nats"]


@pytest.mark.parametrize("text, line, needle", [
    ("sinks: [ {name: a, type: jsonl\n", 2, "invalid YAML"),
    ("cluster: a\nsinks:\n\t- {name: a, type: jsonl}\n", 3, "tab"),
    ("http: {port: eighty}\nsinks: [{name: a, type: jsonl}]\n", 1, "http.port"),
    ("sinks: [{name: a, type: jsonl}]\nwatchh: {}\n", 2, "known keys here"),
    ("sinks:\n  - {name: a, type: carrier-pigeon}\n", 2, "unknown sink type 'carrier-pigeon'"),
    ("sinks:\n  - {name: a, type: kafka, bootstrap_servers: x,\n     topic: 'k.{plurals}'}\n",
     3, "unknown placeholder {plurals}"),
    ("kubeconfig: ${NOPE_NOT_SET}\nsinks: [{name: a, type: jsonl}]\n", 1, "${NOPE_NOT_SET}"),
    ("sinks:\n  - {name: a, type: jsonl}\n  - {name: a, type: jsonl}\n", 1,
     "duplicate sink name 'a'"),
    ("sinks: []\n", 1, "no sinks configured"),
    ("cluster: x\n", 0, "sinks: required"),
    ("sinks:\n  - {name: a, type: kafka}\n", 2, "sinks[0].bootstrap_servers"),
    ("sinks:\n  - {name: a, type: jsonl, colour: red}\n", 2, "known keys here"),
])
def test_bad_configs(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, line: int,
                     needle: str) -> None:
    code, err = check(tmp_path, capsys, text)
    assert code == 2
    assert needle in err, err
    first = err.splitlines()[0]
    assert first.startswith(str(tmp_path / "c.yaml") + (f":{line}:" if line else ":")), first


def test_secret_values_from_the_environment_never_appear(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT_SECRET", "hunter2")
    code, err = check(tmp_path, capsys, "http: {port: '${PORT_SECRET}'}\n"
                                        "sinks: [{name: a, type: jsonl}]\n")
    assert code == 2 and "hunter2" not in err


def test_every_problem_is_listed(tmp_path: Path) -> None:
    with pytest.raises(ConfigProblems) as problems:
        load(write(tmp_path, "http: {port: x}\nwatch: {crds: some}\nsinks: []\n"))
    assert len(problems.value.problems) == 3


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot read the config file" in capsys.readouterr().err


def test_run_with_a_missing_kubeconfig_exits_2(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, f"kubeconfig: {tmp_path}/missing\nhttp: {{port: 0}}\n"
                           "sinks: [{name: a, type: 'null'}]\n")
    assert main(["run", "--config", path]) == 2
    err = capsys.readouterr().err
    assert "kubeconfig" in err and "does not exist" in err and "Traceback" not in err


def test_run_with_an_invalid_kubeconfig_exits_2(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "kubeconfig"
    bad.write_text("this: [is not a kubeconfig\n")
    path = write(tmp_path, f"kubeconfig: {bad}\nhttp: {{port: 0}}\n"
                           "sinks: [{name: a, type: 'null'}]\n")
    assert main(["run", "--config", path]) == 2
    assert "cannot load Kubernetes credentials" in capsys.readouterr().err


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and "kube-event-bridge 0.1.0" in capsys.readouterr().out
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "check-config" in out and "exit codes" in out
