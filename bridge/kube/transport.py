"""Raw-bytes HTTP to the API server: the seam that makes the watch engine testable offline.

``Transport`` is all the engine needs: one request returning the body, and one streaming
request yielding newline-delimited watch lines as ``bytes`` (no JSON parsing, no models).
``HttpTransport`` implements it with aiohttp; unit tests pass a fake.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

import aiohttp
import orjson

from bridge import metrics
from bridge.errors import ApiError, TransportError
from bridge.kube.auth import Credentials

MAX_LINE = 64 * 1024 * 1024  # a watch line is one object; etcd caps objects far below this


class Transport(Protocol):
    async def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        content_type: str = "application/json",
    ) -> bytes: ...

    def stream(
        self, path: str, params: Mapping[str, str], read_timeout: float
    ) -> AbstractAsyncContextManager[AsyncIterator[bytes]]: ...

    async def close(self) -> None: ...


def api_error(status: int, body: bytes, path: str) -> ApiError:
    """Turn an error response (ideally a ``Status`` object) into an ``ApiError``."""
    try:
        status_obj = orjson.loads(body)
        reason = str(status_obj.get("reason") or "")
        message = str(status_obj.get("message") or "")
    except (orjson.JSONDecodeError, AttributeError):
        reason, message = "", body[:200].decode(errors="replace")
    return ApiError(status, reason or "Error", message, path)


async def get_object(transport: Transport, path: str) -> dict[str, Any] | None:
    """GET one object; None when it does not exist (404)."""
    try:
        found: dict[str, Any] = orjson.loads(await transport.request("GET", path))
    except ApiError as exc:
        if exc.not_found:
            return None
        raise
    return found


async def split_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Re-chunk a byte stream into lines (without the newline), any line length up to MAX_LINE."""
    buf = bytearray()
    async for chunk in chunks:
        buf += chunk
        start = 0
        while True:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            if end > start:
                yield bytes(buf[start:end])
            start = end + 1
        del buf[:start]
        if len(buf) > MAX_LINE:
            raise TransportError(f"watch line longer than {MAX_LINE} bytes")
    if buf.strip():
        yield bytes(buf)


class HttpTransport:
    """aiohttp-based transport. One connection pool; a watch holds one connection."""

    def __init__(self, credentials: Credentials, connect_timeout: float = 10.0,
                 request_timeout: float = 60.0) -> None:
        self._creds = credentials
        self._connect_timeout = connect_timeout
        self._request_timeout = request_timeout
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                ssl=self._creds.ssl_context if self._creds.ssl_context is not None else False,
                limit=0,
                keepalive_timeout=30,
            )
            self._session = aiohttp.ClientSession(
                base_url=self._creds.server, connector=connector, auto_decompress=True,
                json_serialize=lambda o: orjson.dumps(o).decode(),
            )
        return self._session

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "kube-event-bridge"}
        auth = self._creds.authorization()
        if auth:
            headers["Authorization"] = auth
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        content_type: str = "application/json",
    ) -> bytes:
        timeout = aiohttp.ClientTimeout(total=self._request_timeout,
                                        connect=self._connect_timeout)
        try:
            async with self._get_session().request(
                method, path, params=params, data=body, timeout=timeout,
                headers=self._headers(content_type if body is not None else None),
            ) as resp:
                data = await resp.read()
                metrics.api_requests.labels(verb=method, code=str(resp.status)).inc()
                if resp.status >= 400:
                    raise api_error(resp.status, data, path)
                return data
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransportError(f"{method} {path}: {exc!r}") from exc

    @asynccontextmanager
    async def stream(
        self, path: str, params: Mapping[str, str], read_timeout: float
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        timeout = aiohttp.ClientTimeout(total=None, connect=self._connect_timeout,
                                        sock_read=read_timeout)
        try:
            async with self._get_session().get(
                path, params=params, timeout=timeout, headers=self._headers()
            ) as resp:
                metrics.api_requests.labels(verb="WATCH", code=str(resp.status)).inc()
                if resp.status >= 400:
                    raise api_error(resp.status, await resp.read(), path)
                yield _guard(split_lines(resp.content.iter_any()), path)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransportError(f"watch {path}: {exc!r}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


async def _guard(lines: AsyncIterator[bytes], path: str) -> AsyncIterator[bytes]:
    """Map connection failures raised while iterating to ``TransportError``."""
    try:
        async for line in lines:
            yield line
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise TransportError(f"watch {path}: {exc!r}") from exc
