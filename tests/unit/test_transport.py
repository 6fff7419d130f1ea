from __future__ import annotations

from collections.abc import AsyncIterator

from bridge.errors import ApiError
from bridge.kube.transport import api_error, line_batches


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_line_batches_across_chunk_boundaries() -> None:
    big = b"x" * 300_000
    out = [lines async for lines in line_batches(_chunks(
        b'{"a":1}\n{"b"', b":2}\n\n", big[:100_000], big[100_000:], b"\n", b"tail"))]
    assert out == [[b'{"a":1}'], [b'{"b":2}'], [big], [b"tail"]]


def test_api_error_from_status_body() -> None:
    err = api_error(410, b'{"kind":"Status","reason":"Expired","message":"too old"}', "/x")
    assert isinstance(err, ApiError) and err.gone and err.message == "too old"
    assert api_error(403, b"not json", "/y").forbidden
