"""An HTTP fault proxy between the bridge and a real kube-apiserver.

The bridge talks plain HTTP to the proxy on 127.0.0.1 (``kubeconfig()`` writes a kubeconfig
for it); the proxy forwards every request to the real API server over TLS with the
credentials of the kubeconfig it was built from (the world's admin client certificate),
relays watch streams line by line, and on demand answers or mangles them instead:

- ``empty_watches(kind, seconds)``: new watches of a kind get ``200``, no body, closed at
  once.
- ``fail(status, seconds, kind=None, retry_after=None)``: every request (of a kind) gets
  that status with a ``Status`` body (and ``Retry-After``); open watches are cut first.
- ``malformed_line(kind)``: one line that is not JSON in the live watch of a kind (else the
  next one); the stream then goes on.
- ``truncate(kind)``: the live watch ends with half a line and a chunk header promising
  more than ever comes, then EOF.
- ``stall(kind, seconds=0)``: the live watch, and new watches of the kind for ``seconds``,
  go silent after their headers (the connection stays open).
- ``oversized_line(kind, size)``: one line of ``size`` bytes in the live watch.
- ``cut(kind=None)``: reset the open watch connections.

Every request is recorded (arrival time, verb, kind, watch?, status, fault applied), so a
test can bound requests per second per kind during a fault. The *kind* of a request is
``plural.group`` (``plural`` for the core group) for resource paths, ``discovery`` for
``/api``, ``/apis`` and group/version documents, and the first path segment otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

MALFORMED_LINE = b'{"type":"MODIFIED","object":{"kind": this is not JSON\n'
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host",
        "content-encoding", "accept-encoding", "authorization", "upgrade", "te", "trailer",
        "proxy-authorization", "proxy-connection"}


def path_kind(path: str) -> str:
    """``plural.group`` for a resource path (any namespace, name or subresource)."""
    parts = [p for p in path.split("/") if p]
    if not parts:
        return "discovery"
    if parts[0] == "api":  # /api/v1/[namespaces/NS/]plural[/name[/sub]]
        rest, group = parts[2:], ""
    elif parts[0] == "apis":  # /apis/GROUP/VERSION/[namespaces/NS/]plural[/name[/sub]]
        rest, group = parts[3:], parts[1] if len(parts) > 1 else ""
    else:
        return parts[0]
    if not rest:
        return "discovery"
    if rest[0] == "namespaces" and len(rest) >= 3:
        rest = rest[2:]
    return f"{rest[0]}.{group}" if group else rest[0]


@dataclass(frozen=True)
class Request:
    at: float  # time.monotonic() at arrival
    method: str
    kind: str
    watch: bool
    status: int = 0  # 0 until answered
    fault: str = ""  # the fault applied to it, if any


@dataclass
class Fault:
    action: str  # empty | status | malformed | truncate | stall | oversized | cut
    kind: str | None  # None: every kind
    watch: bool | None = None  # None: watches and other requests alike
    until: float = 0.0  # monotonic end of a timed fault (new requests); 0: one-shot
    status: int = 500
    retry_after: int | None = None
    size: int = 0
    hits: int = 0
    applied: asyncio.Future[None] | None = None  # one-shot: resolved once injected

    def matches(self, kind: str, watch: bool, now: float) -> bool:
        return (now < self.until and (self.kind is None or self.kind == kind)
                and (self.watch is None or self.watch == watch))


@dataclass(eq=False)
class _Stream:
    """One live relayed watch."""

    kind: str
    request: web.Request
    actions: list[Fault] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    stalled: bool = False

    def post(self, fault: Fault) -> None:
        self.actions.append(fault)
        self.wake.set()


class FaultProxy:
    def __init__(self, server: str, ssl_context: ssl.SSLContext | None,
                 authorization: str | None = None) -> None:
        self.upstream = server.rstrip("/")
        self._ssl = ssl_context
        self._authorization = authorization
        self.port = 0
        self.requests: list[Request] = []
        self._faults: list[Fault] = []  # timed faults on new requests
        self._queued: list[Fault] = []  # one-shot stream faults waiting for a watch
        self._streams: set[_Stream] = set()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_kubeconfig(cls, path: Path | str) -> FaultProxy:
        """Forward with the server address and credentials of a kubeconfig."""
        cfg = k8s_client.Configuration()
        k8s_config.load_kube_config(config_file=str(path), client_configuration=cfg)
        ctx: ssl.SSLContext | None = None
        if str(cfg.host).startswith("https"):
            ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert or None)
            if cfg.cert_file:
                ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
            if not cfg.verify_ssl:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
        authorization = None
        for setting in cfg.auth_settings().values():
            if str(setting.get("key", "")).lower() == "authorization" and setting.get("value"):
                authorization = str(setting["value"])
        return cls(str(cfg.host), ctx, authorization)

    # ---- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> FaultProxy:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self._ssl if self._ssl else False, limit=0),
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.clear()
        for stream in list(self._streams):
            stream.post(Fault("cut", stream.kind))
        await asyncio.sleep(0)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kubeconfig(self, path: Path) -> Path:
        """A kubeconfig that points at the proxy (plain HTTP, no credentials of its own)."""
        config = {
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "proxy", "cluster": {"server": self.url}}],
            "users": [{"name": "proxy", "user": {}}],
            "contexts": [{"name": "proxy", "context": {"cluster": "proxy", "user": "proxy"}}],
            "current-context": "proxy",
        }
        path.write_text(json.dumps(config, indent=2))
        return path

    # ---- counting --------------------------------------------------------------------------

    def select(self, kind: str | None = None, watch: bool | None = None,
               since: float = 0.0, until: float = float("inf"),
               method: str | None = None) -> list[Request]:
        return [r for r in self.requests
                if since <= r.at < until and (kind is None or r.kind == kind)
                and (watch is None or r.watch == watch)
                and (method is None or r.method == method)]

    def rate(self, kind: str | None = None, watch: bool | None = None,
             since: float = 0.0, until: float | None = None) -> float:
        """Requests per second in [since, until) (until: now)."""
        end = time.monotonic() if until is None else until
        return len(self.select(kind, watch, since, end)) / max(end - since, 1e-9)

    def counts(self, since: float = 0.0, until: float = float("inf"),
               ) -> Counter[tuple[str, str, bool]]:
        """Requests per (verb, kind, watch?) in [since, until)."""
        return Counter((r.method, r.kind, r.watch) for r in self.select(since=since,
                                                                       until=until))

    def per_second(self, kind: str | None, since: float, until: float,
                   watch: bool | None = None) -> list[int]:
        """Requests in each whole second of [since, until)."""
        out = [0] * max(int(until - since), 0)
        for r in self.select(kind, watch, since, until):
            index = int(r.at - since)
            if index < len(out):
                out[index] += 1
        return out

    def live(self, kind: str | None = None) -> int:
        """Watches (of ``kind``) being relayed now."""
        return sum(1 for s in self._streams if kind is None or s.kind == kind)

    # ---- faults ----------------------------------------------------------------------------

    def clear(self) -> None:
        """End every timed fault and drop queued one-shot faults."""
        self._faults.clear()
        for fault in self._queued:
            if fault.applied is not None and not fault.applied.done():
                fault.applied.cancel()
        self._queued.clear()
        for stream in self._streams:
            stream.stalled = False

    def empty_watches(self, kind: str, seconds: float) -> Fault:
        """New watches of ``kind`` get an empty ``200`` at once, for ``seconds``."""
        fault = Fault("empty", kind, watch=True, until=time.monotonic() + seconds)
        self._faults.append(fault)
        return fault

    def fail(self, status: int = 500, seconds: float = 15.0, kind: str | None = None,
             retry_after: int | None = None, cut: bool = True) -> Fault:
        """Every request (of ``kind``) gets ``status`` for ``seconds``; open watches (of
        ``kind``) are cut first so the client has to come back and meet it."""
        fault = Fault("status", kind, until=time.monotonic() + seconds, status=status,
                      retry_after=retry_after)
        self._faults.append(fault)
        if cut:
            self.cut(kind)
        return fault

    def cut(self, kind: str | None = None) -> int:
        """Reset the open watch connections (of ``kind``); returns how many."""
        streams = [s for s in self._streams if kind is None or s.kind == kind]
        for stream in streams:
            stream.post(Fault("cut", kind))
        return len(streams)

    async def malformed_line(self, kind: str, timeout: float = 30) -> Fault:
        """One line that is not JSON in ``kind``'s watch stream (then it goes on)."""
        return await self._inject(Fault("malformed", kind), timeout)

    async def truncate(self, kind: str, timeout: float = 30) -> Fault:
        """``kind``'s watch stream ends inside a chunk, in the middle of a line."""
        return await self._inject(Fault("truncate", kind), timeout)

    async def oversized_line(self, kind: str, size: int, timeout: float = 30) -> Fault:
        """One line of ``size`` bytes (and no newline before it) in ``kind``'s stream."""
        return await self._inject(Fault("oversized", kind, size=size), timeout)

    async def stall(self, kind: str, seconds: float = 0.0, timeout: float = 30) -> Fault:
        """``kind``'s live watch goes silent (the connection stays open); new watches of
        ``kind`` in the next ``seconds`` get their headers and then silence too."""
        if seconds:
            self._faults.append(Fault("stall", kind, watch=True,
                                      until=time.monotonic() + seconds))
        return await self._inject(Fault("stall", kind), timeout)

    async def _inject(self, fault: Fault, timeout: float) -> Fault:
        """Apply a one-shot fault to the live watches of its kind (or queue it for the next
        one) and wait until it has been written."""
        fault.applied = asyncio.get_running_loop().create_future()
        live = [s for s in self._streams if s.kind == fault.kind]
        if live:
            for stream in live:
                stream.post(fault)
        else:
            self._queued.append(fault)
        await asyncio.wait_for(asyncio.shield(fault.applied), timeout)
        return fault

    def _timed(self, kind: str, watch: bool) -> Fault | None:
        now = time.monotonic()
        self._faults = [f for f in self._faults if now < f.until]
        for fault in self._faults:
            if fault.matches(kind, watch, now):
                fault.hits += 1
                return fault
        return None

    # ---- serving ---------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        kind = path_kind(request.path)
        watch = request.query.get("watch", "") in ("1", "true", "True")
        index = len(self.requests)
        self.requests.append(Request(time.monotonic(), request.method, kind, watch))

        def answered(status: int, fault: str = "") -> None:
            self.requests[index] = Request(self.requests[index].at, request.method, kind,
                                           watch, status, fault)

        fault = self._timed(kind, watch)
        if fault is not None and fault.action == "status":
            answered(fault.status, f"status {fault.status}")
            return _status_response(fault.status, fault.retry_after)
        if fault is not None and fault.action == "empty":
            answered(200, "empty")
            return web.Response(status=200, body=b"", content_type="application/json")
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        headers["Accept-Encoding"] = "identity"
        if self._authorization:
            headers["Authorization"] = self._authorization
        body = await request.read()
        try:
            upstream = await self._session.request(
                request.method, self.upstream + request.path_qs, headers=headers,
                data=body or None)
        except (aiohttp.ClientError, OSError) as exc:
            answered(502, "upstream unreachable")
            return web.Response(status=502, text=f"fault proxy: upstream: {exc!r}")
        try:
            if not watch or upstream.status != 200:
                data = await upstream.read()
                answered(upstream.status)
                return web.Response(status=upstream.status, body=data,
                                    headers=_response_headers(upstream))
            answered(200, "stall" if fault is not None and fault.action == "stall" else "")
            return await self._relay(request, upstream, kind,
                                     stalled=fault is not None and fault.action == "stall")
        finally:
            upstream.release()

    async def _relay(self, request: web.Request, upstream: aiohttp.ClientResponse, kind: str,
                     stalled: bool) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers=_response_headers(upstream))
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        stream = _Stream(kind, request, stalled=stalled)
        for fault in [f for f in self._queued if f.kind == kind]:
            self._queued.remove(fault)
            stream.post(fault)
        self._streams.add(stream)
        tail = b""  # an unfinished line: faults are only ever written between lines
        read: asyncio.Future[bytes] = asyncio.ensure_future(upstream.content.readany())
        try:
            while True:
                wake = asyncio.ensure_future(stream.wake.wait())
                await asyncio.wait({read, wake}, timeout=1.0,
                                   return_when=asyncio.FIRST_COMPLETED)
                wake.cancel()
                stream.wake.clear()
                if request.transport is None or request.transport.is_closing():
                    break  # the client went away (also noticed while stalled)
                while stream.actions:
                    if not await self._apply(stream.actions.pop(0), stream, resp):
                        return resp
                if not read.done():
                    continue
                chunk = read.result()
                if not chunk:  # the server ended the watch
                    if tail and not stream.stalled:
                        await resp.write(tail)
                    break
                if not stream.stalled:
                    data = tail + chunk
                    cut = data.rfind(b"\n") + 1
                    tail = data[cut:]
                    if cut:
                        await resp.write(data[:cut])
                read = asyncio.ensure_future(upstream.content.readany())
        except (ConnectionError, aiohttp.ClientError, OSError):
            pass  # either side went away
        finally:
            read.cancel()
            self._streams.discard(stream)
            for fault in stream.actions:  # posted but never applied: the next watch gets it
                if fault.applied is not None and not fault.applied.done():
                    self._queued.append(fault)
        with contextlib.suppress(ConnectionError, OSError):
            await resp.write_eof()
        return resp

    async def _apply(self, fault: Fault, stream: _Stream, resp: web.StreamResponse) -> bool:
        """Do ``fault`` to a live stream; False when the stream is over."""
        transport = stream.request.transport
        go_on = True
        try:
            if fault.action == "malformed":
                await resp.write(MALFORMED_LINE)
            elif fault.action == "oversized":
                await resp.write(b'{"type":"ADDED","object":{"pad":"')
                piece = b"x" * (1 << 20)
                left = max(fault.size - 40, 0)
                while left > 0:
                    await resp.write(piece[:left])
                    left -= len(piece)
                await resp.write(b'"}}\n')
            elif fault.action == "stall":
                stream.stalled = True
            elif fault.action == "truncate":
                await resp.write(b'{"type":"MODIFIED","object":{"apiVersion":"v1","kind":')
                if transport is not None:  # a chunk of 4 KiB announced, 10 bytes sent
                    transport.write(b'1000\r\n"Truncated')
                    transport.close()
                go_on = False
            elif fault.action == "cut":
                if transport is not None:
                    transport.abort()
                go_on = False
        except (ConnectionError, OSError):
            go_on = False  # the client gave up (e.g. on an oversized line): it has seen it
        finally:  # also when the client's disconnect cancels this handler mid-write
            if fault.applied is not None and not fault.applied.done():
                fault.applied.set_result(None)
            fault.hits += 1
        return go_on


def _response_headers(upstream: aiohttp.ClientResponse) -> dict[str, str]:
    return {k: v for k, v in upstream.headers.items()
            if k.lower() not in _HOP and k.lower() not in ("date", "server")}


def _status_response(status: int, retry_after: int | None) -> web.Response:
    reason = {429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable"}.get(
        status, "Unknown")
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Failure", "message": f"fault proxy: {status}",
                            "reason": reason, "code": status}
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    if retry_after is not None:
        body["details"] = {"retryAfterSeconds": retry_after}
    return web.Response(status=status, body=json.dumps(body).encode(),
                        content_type="application/json", headers=headers)
