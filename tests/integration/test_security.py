"""Security failure modes as operators meet them, with the real daemon and the secured
brokers: a wrong password or key, an untrusted broker certificate and a missing permission,
for the Kafka and NATS sinks and checkpoint stores.

Each gives one clear line naming the sink or store, the broker and what is wrong, no
traceback, no secret (password, seed, creds content) anywhere in the log, and the
documented outcome: exit code 3 for a refusal at start, or /readyz false with the sink
down (``kube_event_bridge_sink_up{sink=...} 0``) for a permission missing at run time.
The table in docs/security.md is this file in words.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import nkeys
import pytest
from kubernetes import client as k8s

from tests.daemon import BridgeProcess, bridge
from tests.env import pki
from tests.env.world import Endpoints
from tests.secured import create_topics, kafka_client, kafka_password, nats_auth, nats_client
from tests.workload import Workload

pytestmark = pytest.mark.world

EXIT_UNAVAILABLE = 3
STORE_TOPIC = "k8s.security-checkpoints"  # user "limited" may not write k8s.*
NOTHING = {"include": ["nothing.security.keb.example.com/*"]}  # startup fails before a watch


def _plain(settings: dict[str, Any]) -> dict[str, Any]:
    """Sink/store settings as YAML-able config (models and secrets to plain values)."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if value is None:
            continue
        if hasattr(value, "model_dump"):
            value = {k: (v.get_secret_value() if hasattr(v, "get_secret_value") else v)
                     for k, v in value.model_dump().items()}
        out[key] = value
    return out


def rogue_ca(tmp: Path) -> str:
    """A CA that did not sign the broker's certificate."""
    return str(pki.ensure_ca(tmp / "rogue").cert)


def unknown_nkey_seed(tmp: Path) -> Path:
    """The seed of a user no server knows."""
    path = tmp / "stranger.nk"
    path.write_bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))
    return path


@dataclass
class Refusal:
    """A failure at start: the config, the words the one line must hold, the secrets."""

    config: Callable[[Endpoints, Path], dict[str, Any]]
    words: Callable[[Endpoints], tuple[str, ...]]
    secrets: Callable[[Endpoints, Path], list[str]]


def _kafka_sink(endpoints: Endpoints, **override: Any) -> dict[str, Any]:
    return {"sinks": [{"name": "bus", "type": "kafka", **_plain(
        {**kafka_client(endpoints, "scram-sha-512"), **override})}]}


def _wrong_password(endpoints: Endpoints, variant: str) -> dict[str, Any]:
    return kafka_client(endpoints, variant, password="not-the-password-" + variant)


def _kafka_secrets(endpoints: Endpoints, tmp: Path) -> list[str]:
    return [kafka_password(endpoints, u) for u in ("bridge", "limited", "admin")] + [
        "not-the-password-scram-sha-512", "not-the-password-plain"]


def _nats_secrets(endpoints: Endpoints, tmp: Path) -> list[str]:
    found = [endpoints.nats_secure_nkey_seed_file.read_text().strip()]
    creds = endpoints.nats_secure_creds_file.read_text().splitlines()
    found += [line for line in creds if line.startswith(("eyJ", "SU"))]  # JWT, seed
    stranger = tmp / "stranger.nk"
    if stranger.exists():
        found.append(stranger.read_text().strip())
    return found


def _nats_sink(endpoints: Endpoints, variant: str, **override: Any) -> dict[str, Any]:
    return {"sinks": [{"name": "bus", "type": "nats", "stream": "SECURITY",
                       "create_stream": True, **_plain(
                           {**nats_client(endpoints, variant), **override})}]}


REFUSALS: dict[str, Refusal] = {
    "kafka-sink-wrong-scram-password": Refusal(
        lambda e, tmp: {"sinks": [{"name": "bus", "type": "kafka",
                                   **_plain(_wrong_password(e, "scram-sha-512"))}]},
        lambda e: ("kafka sink bus", e.kafka_secure_bootstrap_servers,
                   "SASL SCRAM-SHA-512 authentication of user 'bridge' failed"),
        _kafka_secrets),
    "kafka-sink-wrong-plain-password": Refusal(
        lambda e, tmp: {"sinks": [{"name": "bus", "type": "kafka",
                                   **_plain(_wrong_password(e, "plain"))}]},
        lambda e: ("kafka sink bus", e.kafka_secure_bootstrap_servers,
                   "SASL PLAIN authentication of user 'bridge' failed"),
        _kafka_secrets),
    "kafka-sink-untrusted-certificate": Refusal(
        lambda e, tmp: _kafka_sink(e, tls={"ca_file": rogue_ca(tmp)}),
        lambda e: ("kafka sink bus", e.kafka_secure_bootstrap_servers,
                   "the broker's certificate is not trusted", "tls.ca_file"),
        _kafka_secrets),
    "kafka-store-wrong-password": Refusal(
        lambda e, tmp: {"checkpoint": {"store": "kafka", "topic": "keb-security-cp",
                                       **_plain(_wrong_password(e, "scram-sha-512"))},
                        "sinks": [{"name": "out", "type": "null"}]},
        lambda e: ("cannot read the checkpoint from kafka topic keb-security-cp",
                   e.kafka_secure_bootstrap_servers,
                   "SASL SCRAM-SHA-512 authentication of user 'bridge' failed"),
        _kafka_secrets),
    "kafka-store-missing-acl": Refusal(
        lambda e, tmp: {"checkpoint": {"store": "kafka", "topic": STORE_TOPIC,
                                       **_plain(kafka_client(e, "scram-sha-512",
                                                             user="limited"))},
                        "sinks": [{"name": "out", "type": "null"}]},
        lambda e: (f"cannot write the checkpoint to kafka topic {STORE_TOPIC}",
                   e.kafka_secure_bootstrap_servers, f"not authorized for topic {STORE_TOPIC}"),
        _kafka_secrets),
    "nats-sink-unknown-nkey": Refusal(
        lambda e, tmp: _nats_sink(e, "nkey", nkey_seed_file=str(unknown_nkey_seed(tmp))),
        lambda e: ("nats sink bus", e.nats_secure_url, "authentication failed",
                   "stranger.nk"),
        _nats_secrets),
    "nats-sink-untrusted-certificate": Refusal(
        lambda e, tmp: _nats_sink(e, "creds", tls={"ca_file": rogue_ca(tmp)}),
        lambda e: ("nats sink bus", e.nats_secure_creds_url,
                   "the broker's certificate is not trusted"),
        _nats_secrets),
    "nats-kv-store-untrusted-certificate": Refusal(
        lambda e, tmp: {"checkpoint": {"store": "nats-kv", "url": e.nats_secure_creds_url,
                                       "creds_file": str(e.nats_secure_creds_file),
                                       "tls": {"ca_file": rogue_ca(tmp)}},
                        "sinks": [{"name": "out", "type": "null"}]},
        lambda e: ("cannot read the checkpoint from nats-kv", e.nats_secure_creds_url,
                   "the broker's certificate is not trusted"),
        _nats_secrets),
}


def _log_checks(process: BridgeProcess, words: tuple[str, ...], secrets: list[str],
                retries: bool = False) -> str:
    """The one line holding ``words`` (asserted unique), after checking the whole log for
    tracebacks and secrets. With ``retries``, the retry notes that repeat it at INFO level
    are allowed (the worker's "still failing" lines); warnings and errors are not."""
    log = process.log.read_text(errors="replace")
    assert "Traceback" not in log, log
    for secret in secrets:
        assert secret not in log, f"a secret is in the log:\n{log}"
    said = [line for line in log.splitlines() if words[-1] in line
            and not (retries and " INFO " in line)]
    assert len(said) == 1, f"want the problem said once, got {len(said)}:\n{log}"
    assert all(w in said[0] for w in words), f"want {words} in: {said[0]}"
    return said[0]


@pytest.mark.parametrize("case", list(REFUSALS))
async def test_a_refusal_at_start_is_one_line_and_exit_code_3(
        case: str, endpoints: Endpoints, tmp_path: Path) -> None:
    refusal = REFUSALS[case]
    process = bridge(tmp_path, kubeconfig=str(endpoints.kubeconfig), watch=NOTHING,
                     **refusal.config(endpoints, tmp_path))
    process.start()
    assert process.proc is not None
    code = await asyncio.to_thread(process.proc.wait, 60)
    line = _log_checks(process, refusal.words(endpoints), refusal.secrets(endpoints, tmp_path))
    assert code == EXIT_UNAVAILABLE, process.tail()
    assert line.startswith("kube-event-bridge: cannot start: "), line
    said = [text for text in process.log.read_text().splitlines()
            if text.strip() and not text.startswith("==== start") and " INFO " not in text]
    assert said == [line], "\n".join(said)  # no other warning: no library noise either


async def _until_down(process: BridgeProcess, sink: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.proc is not None and process.proc.poll() is None, process.tail()
        status, why = process.get("/readyz")
        if status == 503 and f"sinks down: {sink}" in why:
            return why
        await asyncio.sleep(0.3)
    raise AssertionError(f"readiness never said 'sinks down: {sink}':\n{process.tail()}")


async def _denied_at_run_time(process: BridgeProcess, work: Workload,
                              words: tuple[str, ...], secrets: list[str]) -> None:
    process.start()
    await work.run(12)
    try:
        why = await _until_down(process, "bus")
        _, metrics = process.get("/metrics")
        assert 'kube_event_bridge_sink_up{sink="bus"} 0.0' in metrics, why
        assert 'kube_event_bridge_events_failed_total{sink="bus",transient="true"}' in metrics
        assert 'kube_event_bridge_events_dead_lettered_total{' not in metrics  # kept, retried
        await asyncio.sleep(3)  # retries go on; the problem is still said once
        line = _log_checks(process, words, secrets, retries=True)
        assert "WARNING" in line and "sink bus is failing" in line, line
        loud = [text for text in process.log.read_text().splitlines()
                if " WARNING " in text or " ERROR " in text]
        assert loud == [line], "\n".join(loud)
        for text in (why, metrics):
            assert not any(secret in text for secret in secrets)
    finally:
        assert await asyncio.to_thread(process.sigterm) == 0


async def test_kafka_missing_acl_keeps_the_sink_down_and_says_which(
        endpoints: Endpoints, kube: k8s.ApiClient, tmp_path: Path) -> None:
    work = Workload(kube)
    work.setup()
    prefix = f"k8s.sec{uuid.uuid4().hex[:6]}"  # user "limited" may not write k8s.*
    await create_topics(endpoints, [f"{prefix}.{kind.plural}" for kind in work.kinds])
    client = kafka_client(endpoints, "scram-sha-512", user="limited")
    process = bridge(tmp_path, kubeconfig=str(endpoints.kubeconfig), shutdown_grace=1,
                     watch={"include": [work.include]},
                     sinks=[{"name": "bus", "type": "kafka", "topic": prefix + ".{plural}",
                             **_plain(client)}])
    await _denied_at_run_time(
        process, work, ("kafka sink bus", endpoints.kafka_secure_bootstrap_servers,
                        f"not authorized for topic {prefix}."),
        _kafka_secrets(endpoints, tmp_path))


async def test_nats_missing_permission_keeps_the_sink_down_and_says_which(
        endpoints: Endpoints, kube: k8s.ApiClient, tmp_path: Path) -> None:
    work = Workload(kube)
    work.setup()
    run = uuid.uuid4().hex[:6]
    stream = f"SEC{run.upper()}"
    nc = await nats.connect(endpoints.nats_secure_creds_url,  # as bridge, who may do all
                            **nats_auth(nats_client(endpoints, "creds")).options())
    await nc.jetstream().add_stream(name=stream, subjects=[f"k8s.sec{run}.>"])
    await nc.close()
    client = nats_client(endpoints, "creds", user="limited")  # may not publish to k8s.>
    process = bridge(tmp_path, kubeconfig=str(endpoints.kubeconfig), shutdown_grace=1,
                     watch={"include": [work.include]},
                     sinks=[{"name": "bus", "type": "nats", "stream": stream,
                             "ack_timeout": 2, "subject": f"k8s.sec{run}" + ".{plural}.{name}",
                             **_plain(client)}])
    await _denied_at_run_time(
        process, work, ("nats sink bus", endpoints.nats_secure_creds_url,
                        "permissions violation for publish to \"k8s."),
        _nats_secrets(endpoints, tmp_path))
