"""Exec credential plugins (kubeconfig ``users[].user.exec``): refreshed off the event loop,
ahead of expiry, client certificates included; failures retried with backoff; a 401 forces
one refresh, never a storm. The plugin is a real subprocess (a small Python script following
a plan); the HTTP session behind ``HttpTransport`` is a fake, so nothing touches a network."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import ssl
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bridge.errors import ApiError, ConfigError
from bridge.kube import auth
from bridge.kube import transport as transport_mod
from bridge.kube.transport import HttpTransport

PLUGIN = r'''
import datetime, json, sys, time
plan_path, log_path = sys.argv[1], sys.argv[2]
with open(log_path, "a") as log:
    log.write(f"{time.time()}\n")
with open(log_path) as log:
    run = sum(1 for _ in log) - 1
with open(plan_path) as f:
    plan = json.load(f)
step = plan[min(run, len(plan) - 1)]
time.sleep(step.get("sleep", 0))
if step.get("exit"):
    sys.stderr.write(step.get("stderr", ""))
    sys.exit(step["exit"])
status = {}
for ours, theirs in (("token", "token"), ("cert", "clientCertificateData"),
                     ("key", "clientKeyData")):
    if ours in step:
        status[theirs] = step[ours]
if "lifetime" in step:
    expires = (datetime.datetime.now(datetime.timezone.utc)
               + datetime.timedelta(seconds=step["lifetime"]))
    status["expirationTimestamp"] = expires.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1",
                  "kind": "ExecCredential", "status": status}))
'''


class Plugin:
    """A fake exec plugin: run N answers ``plan[N]`` (the last one repeats)."""

    def __init__(self, tmp_path: Path, plan: list[dict[str, Any]]) -> None:
        self.script = tmp_path / "plugin.py"
        self.script.write_text(PLUGIN)
        self.plan = tmp_path / "plan.json"
        self.plan.write_text(json.dumps(plan))
        self.log = tmp_path / "runs.log"
        self.kubeconfig = tmp_path / "kubeconfig"
        self.kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443",
                                                   "insecure-skip-tls-verify": True}}],
            "users": [{"name": "u", "user": {"exec": {
                "apiVersion": "client.authentication.k8s.io/v1", "command": sys.executable,
                "args": ["-S", str(self.script), str(self.plan), str(self.log)],
                "interactiveMode": "Never"}}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))

    @property
    def runs(self) -> list[float]:
        """When each run started (wall clock)."""
        if not self.log.exists():
            return []
        return [float(line) for line in self.log.read_text().split()]


def certificate(name: str) -> tuple[str, str]:
    """A self-signed client certificate and its key, PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1)).sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM,
                              serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode())


# ---- a fake aiohttp session behind HttpTransport --------------------------------------------


class Seen:
    def __init__(self, method: str, auth: str | None, ssl_context: Any) -> None:
        self.at = time.monotonic()
        self.method, self.auth, self.ssl = method, auth, ssl_context


class FakeResponse:
    def __init__(self, status: int, lines: asyncio.Queue[bytes | None] | None = None) -> None:
        self.status = status
        self.headers: dict[str, str] = {}
        self._lines = lines
        self.content = self

    async def read(self) -> bytes:
        return b"{}" if self.status < 400 else b'{"reason":"Unauthorized","message":"no"}'

    async def iter_any(self) -> AsyncIterator[bytes]:
        assert self._lines is not None
        while (line := await self._lines.get()) is not None:
            yield line + b"\n"


class FakeCall:
    def __init__(self, response: FakeResponse) -> None:
        self.response = response

    async def __aenter__(self) -> FakeResponse:
        return self.response

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        return None


class FakeServer:
    """Answers each request with ``status(auth)``; watches stream from ``watch_lines``."""

    def __init__(self, status: Callable[[str | None], int] = lambda auth: 200) -> None:
        self.status = status
        self.seen: list[Seen] = []
        self.watch_lines: asyncio.Queue[bytes | None] = asyncio.Queue()

    def session(self, **kwargs: Any) -> FakeServer:
        self.closed = False
        return self

    def request(self, method: str, path: str, **kw: Any) -> FakeCall:
        auth = kw["headers"].get("Authorization")
        self.seen.append(Seen(method, auth, kw.get("ssl")))
        return FakeCall(FakeResponse(self.status(auth)))

    def get(self, path: str, **kw: Any) -> FakeCall:
        auth = kw["headers"].get("Authorization")
        self.seen.append(Seen("WATCH", auth, kw.get("ssl")))
        return FakeCall(FakeResponse(self.status(auth), self.watch_lines))

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    fake = FakeServer()
    monkeypatch.setattr(transport_mod.aiohttp, "ClientSession", fake.session)
    monkeypatch.setattr(transport_mod.aiohttp, "TCPConnector", lambda **kw: None)
    return fake


# ---- tests -----------------------------------------------------------------------------------


def test_refresh_policy() -> None:
    assert auth.refresh_delay(3600) == pytest.approx(2880)  # 80% of an hour
    assert auth.refresh_delay(120) == pytest.approx(60)  # 60 s before expiry
    assert auth.refresh_delay(30) == pytest.approx(15)  # never before half of it
    assert auth.refresh_delay(-5) == 1.0  # already expired: soon, not in a loop
    assert 0.8 <= auth.retry_delay(1) <= 1.2 and 24 <= auth.retry_delay(50) <= 36


def test_the_first_run_is_part_of_load(tmp_path: Path) -> None:
    plugin = Plugin(tmp_path, [{"token": "t1", "lifetime": 3600}])
    creds = auth.load(str(plugin.kubeconfig))
    assert creds.authorization() == "Bearer t1"
    assert creds.expires_at is not None
    assert 3590 < creds.expires_at - time.monotonic() <= 3600
    assert len(plugin.runs) == 1


def test_a_plugin_failing_at_load_is_a_config_error_saying_why(tmp_path: Path) -> None:
    plugin = Plugin(tmp_path, [{"exit": 3, "stderr": "please log in first"}])
    with pytest.raises(ConfigError, match="exited with 3: please log in first"):
        auth.load(str(plugin.kubeconfig))


async def test_a_hung_plugin_is_killed_after_its_timeout(tmp_path: Path) -> None:
    plugin = Plugin(tmp_path, [{"token": "t1"}, {"sleep": 30, "token": "t2"}])
    creds = auth.load(str(plugin.kubeconfig))
    assert creds._plugin is not None
    creds._plugin.timeout = 0.5
    started = time.monotonic()
    with pytest.raises(auth.CredentialError, match="no answer within"):
        await creds._plugin.run()
    assert time.monotonic() - started < 5


async def test_an_exec_refresh_does_not_stall_the_event_loop(tmp_path: Path,
                                                             server: FakeServer) -> None:
    """The token expires soon; the refresh takes the plugin 1 s; requests and a ticking
    coroutine go on meanwhile (the library ran the plugin inside the request: 1 s stalls)."""
    plugin = Plugin(tmp_path, [{"token": "t1", "lifetime": 2},
                               {"sleep": 1.0, "token": "t2", "lifetime": 3600}])
    transport = HttpTransport(auth.load(str(plugin.kubeconfig)))
    gaps: list[float] = []
    stop = asyncio.Event()

    async def tick() -> None:
        last = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    try:
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            await transport.request("GET", "/api")
            if server.seen[-1].auth == "Bearer t2":
                break
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        await ticker
        await transport.close()
    assert max(gaps) < 0.5, f"the event loop stalled for {max(gaps):.2f}s"  # was >= 1 s
    assert server.seen[-1].auth == "Bearer t2"
    assert len(plugin.runs) == 2
    assert {s.auth for s in server.seen} == {"Bearer t1", "Bearer t2"}


async def test_client_certificates_are_rotated_before_they_expire(
        tmp_path: Path, server: FakeServer) -> None:
    """New requests present the new certificate before the old one expires; a watch opened
    with the old one keeps streaming."""
    (cert1, key1), (cert2, key2) = certificate("one"), certificate("two")
    plugin = Plugin(tmp_path, [{"cert": cert1, "key": key1, "lifetime": 3},
                               {"cert": cert2, "key": key2, "lifetime": 3600}])
    creds = auth.load(str(plugin.kubeconfig))
    expires_at = creds.expires_at
    assert expires_at is not None and creds.authorization() is None
    first = creds.ssl_context
    assert isinstance(first, ssl.SSLContext)
    transport = HttpTransport(creds)
    try:
        async with transport.stream("/watch", {}, read_timeout=10) as batches:
            assert server.seen[-1].ssl is first
            deadline = time.monotonic() + 6
            while server.seen[-1].ssl is first and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
                await transport.request("GET", "/api")
            assert server.seen[-1].ssl is not first, "the client certificate was not refreshed"
            assert server.seen[-1].at < expires_at, "refreshed only after expiry"
            assert server.seen[-1].ssl is creds.ssl_context
            assert isinstance(creds.ssl_context, ssl.SSLContext)
            server.watch_lines.put_nowait(b'{"type":"ADDED"}')
            assert await anext(batches) == [b'{"type":"ADDED"}']  # the old watch goes on
        assert len(plugin.runs) == 2
    finally:
        await transport.close()


async def test_a_failed_refresh_keeps_the_credentials_and_retries_with_backoff(
        tmp_path: Path, server: FakeServer, caplog: pytest.LogCaptureFixture) -> None:
    plugin = Plugin(tmp_path, [{"token": "t1", "lifetime": 2},
                               {"exit": 1, "stderr": "identity provider unreachable"},
                               {"token": "t3", "lifetime": 3600}])
    transport = HttpTransport(auth.load(str(plugin.kubeconfig)))
    try:
        with caplog.at_level(logging.INFO, logger="bridge.kube.auth"):
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline:
                await transport.request("GET", "/api")
                if server.seen[-1].auth == "Bearer t3":
                    break
                await asyncio.sleep(0.01)
    finally:
        await transport.close()
    auths = [s.auth for s in server.seen]
    assert auths[-1] == "Bearer t3" and set(auths) == {"Bearer t1", "Bearer t3"}
    runs = plugin.runs
    assert len(runs) == 3, f"{len(runs)} plugin runs (expected: load, failure, retry)"
    assert runs[2] - runs[1] >= 0.7  # backoff, not at once
    assert "identity provider unreachable" in caplog.text
    assert "the current credentials stay in use" in caplog.text


async def test_a_401_forces_one_shared_refresh_and_never_a_storm(
        tmp_path: Path, server: FakeServer) -> None:
    plugin = Plugin(tmp_path, [{"token": "t1"}, {"token": "t2"}, {"token": "t3"}])
    valid = {"Bearer t2"}
    server.status = lambda auth: 200 if auth in valid else 401
    transport = HttpTransport(auth.load(str(plugin.kubeconfig)))
    try:
        await asyncio.gather(*(transport.request("GET", f"/api/{i}") for i in range(5)))
        assert len(plugin.runs) == 2  # load, then one refresh shared by the five requests
        async with transport.stream("/watch", {}, read_timeout=10):
            assert server.seen[-1].auth == "Bearer t2"
        valid.clear()  # from now on everything is refused

        async def refused_20_times() -> None:
            for _ in range(20):
                with pytest.raises(ApiError) as refused:
                    await transport.request("GET", "/api")
                assert refused.value.status == 401

        await refused_20_times()
        assert len(plugin.runs) == 2  # a refresh was forced less than 1 s ago
        await asyncio.sleep(1.1)
        await refused_20_times()
        assert len(plugin.runs) == 3  # one more, then the next waits 2 s
        await refused_20_times()
        assert len(plugin.runs) == 3
    finally:
        await transport.close()
