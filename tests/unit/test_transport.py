from __future__ import annotations

from collections.abc import AsyncIterator

from bridge.errors import ApiError
from bridge.kube.transport import api_error, split_lines


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_split_lines_across_chunk_boundaries() -> None:
    big = b"x" * 300_000
    out = [line async for line in split_lines(_chunks(b'{"a":1}\n{"b"', b":2}\n\n", big,
                                                      b"\n", b"tail"))]
    assert out == [b'{"a":1}', b'{"b":2}', big, b"tail"]


def test_api_error_from_status_body() -> None:
    err = api_error(410, b'{"kind":"Status","reason":"Expired","message":"too old"}', "/x")
    assert isinstance(err, ApiError) and err.gone and err.message == "too old"
    assert api_error(403, b"not json", "/y").forbidden
