"""Raw-bytes HTTP to the API server: the seam that makes the watch engine testable offline.

``Transport`` is all the engine needs: one request returning the body, and one streaming
request yielding newline-delimited watch lines as ``bytes`` (no JSON parsing, no models),
a list per network read so the engine handles a read's events in one go.
``HttpTransport`` implements it with aiohttp; unit tests pass a fake.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
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
    ) -> AbstractAsyncContextManager[AsyncIterator[list[bytes]]]: ...

    async def close(self) -> None: ...


def api_error(status: int, body: bytes, path: str, retry_after: str | None = None) -> ApiError:
    """Turn an error response (ideally a ``Status`` object) into an ``ApiError``;
    ``retry_after``: the response's Retry-After header, if any."""
    try:
        status_obj = orjson.loads(body)
        reason = str(status_obj.get("reason") or "")
        message = str(status_obj.get("message") or "")
        retry_after = retry_after or str((status_obj.get("details") or {}).get(
            "retryAfterSeconds") or "")
    except (orjson.JSONDecodeError, AttributeError):
        reason, message = "", body[:200].decode(errors="replace")
    return ApiError(status, reason or "Error", message, path,
                    retry_after=retry_after_seconds(retry_after))


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header (delay-seconds or an HTTP date) as seconds from now."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


async def get_object(transport: Transport, path: str) -> dict[str, Any] | None:
    """GET one object; None when it does not exist (404)."""
    try:
        found: dict[str, Any] = orjson.loads(await transport.request("GET", path))
    except ApiError as exc:
        if exc.not_found:
            return None
        raise
    return found


async def line_batches(chunks: AsyncIterator[bytes]) -> AsyncIterator[list[bytes]]:
    """Re-chunk a byte stream into lists of lines (without newlines, empty lines skipped):
    one list per chunk that completes a line; any line length up to MAX_LINE."""
    partial: list[bytes] = []  # pieces of an unfinished line
    size = 0
    async for chunk in chunks:
        if b"\n" not in chunk:
            partial.append(chunk)
            size += len(chunk)
            if size > MAX_LINE:
                raise TransportError(f"watch line longer than {MAX_LINE} bytes")
            continue
        if partial:
            partial.append(chunk)
            chunk = b"".join(partial)
        lines = chunk.split(b"\n")
        tail = lines.pop()
        partial, size = ([tail], len(tail)) if tail else ([], 0)
        if b"" in lines:
            lines = [line for line in lines if line]
        if lines:
            yield lines
    rest = b"".join(partial)
    if rest.strip():
        yield [rest]


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
            self._creds.start()  # exec credentials: refreshed ahead of expiry from now on
            # TLS is chosen per request (_ssl): a rotated client certificate is presented by
            # new connections (the pool keys connections by context), in-flight watches keep
            # theirs, idle old ones close after keepalive_timeout
            connector = aiohttp.TCPConnector(
                limit=0,
                keepalive_timeout=30,
            )
            self._session = aiohttp.ClientSession(
                base_url=self._creds.server, connector=connector, auto_decompress=True,
                json_serialize=lambda o: orjson.dumps(o).decode(),
            )
        return self._session

    def _ssl(self) -> ssl.SSLContext | bool:
        return self._creds.ssl_context if self._creds.ssl_context is not None else False

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
        for attempt in (1, 2):  # a second one only after a 401 that refreshed credentials
            generation = self._creds.generation
            try:
                async with self._get_session().request(
                    method, path, params=params, data=body, timeout=timeout, ssl=self._ssl(),
                    headers=self._headers(content_type if body is not None else None),
                ) as resp:
                    data = await resp.read()
                    metrics.api_requests.labels(verb=method, code=str(resp.status)).inc()
                    if (resp.status == 401 and attempt == 1
                            and await self._creds.unauthorized(generation)):
                        continue
                    if resp.status >= 400:
                        raise api_error(resp.status, data, path, resp.headers.get("Retry-After"))
                    return data
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                raise TransportError(f"{method} {path}: {exc!r}") from exc
        raise AssertionError("unreachable")

    @asynccontextmanager
    async def stream(
        self, path: str, params: Mapping[str, str], read_timeout: float
    ) -> AsyncIterator[AsyncIterator[list[bytes]]]:
        timeout = aiohttp.ClientTimeout(total=None, connect=self._connect_timeout,
                                        sock_read=read_timeout)
        for attempt in (1, 2):  # a second one only after a 401 that refreshed credentials
            generation = self._creds.generation
            try:
                async with self._get_session().get(
                    path, params=params, timeout=timeout, ssl=self._ssl(),
                    headers=self._headers(),
                ) as resp:
                    metrics.api_requests.labels(verb="WATCH", code=str(resp.status)).inc()
                    if (resp.status == 401 and attempt == 1
                            and await self._creds.unauthorized(generation)):
                        continue
                    if resp.status >= 400:
                        raise api_error(resp.status, await resp.read(), path,
                                        resp.headers.get("Retry-After"))
                    yield _guard(line_batches(resp.content.iter_any()), path)
                    return
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                raise TransportError(f"watch {path}: {exc!r}") from exc

    async def close(self) -> None:
        await self._creds.close()
        if self._session is not None:
            await self._session.close()


async def _guard(batches: AsyncIterator[list[bytes]], path: str,
                 ) -> AsyncIterator[list[bytes]]:
    """Map connection failures raised while iterating to ``TransportError``."""
    try:
        async for lines in batches:
            yield lines
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise TransportError(f"watch {path}: {exc!r}") from exc
