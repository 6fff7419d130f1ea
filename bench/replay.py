"""A stand-in API server that replays pre-generated watch traffic over real HTTP (loopback),
so our bridge and the naive baseline read the very same bytes the same way.

    python -m bench.replay PORT EVENTS [OBJECTS]   (serves until killed)

With OBJECTS, the first collection also holds that many objects for lists and for the
streaming watch-list (``sendInitialEvents``), for the memory benchmark.
"""

from __future__ import annotations

import asyncio
import random
import sys
import uuid

import orjson
from aiohttp import web

from bench.stream import GROUP, KINDS, make_object, watch_lines


def build_app(events: int, objects: int = 0) -> web.Application:
    streams = watch_lines(events)
    rng = random.Random(5)
    first = f"/apis/{GROUP}/v1/{KINDS[0][0]}"
    initial = [orjson.dumps({"type": "ADDED", "object": make_object(
        KINDS[0][0], KINDS[0][1], n, 10 + n, str(uuid.UUID(int=rng.getrandbits(128))), rng)})
        for n in range(objects)]
    payloads = {path: b"\n".join(lines) + b"\n" for path, lines in streams.items()}
    discovery = orjson.dumps({"kind": "APIResourceList", "groupVersion": f"{GROUP}/v1",
                              "resources": [{"name": p, "kind": k, "namespaced": True,
                                             "verbs": ["list", "watch"]}
                                            for p, k in KINDS]})

    async def group_version(_: web.Request) -> web.Response:
        return web.Response(body=discovery, content_type="application/json")

    async def collection(request: web.Request) -> web.StreamResponse:
        path = request.path
        if request.query.get("watch") not in ("1", "true"):
            return web.Response(body=orjson.dumps({"items": [], "metadata": {
                "resourceVersion": "1"}}), content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        if request.query.get("sendInitialEvents") == "true":
            mine = initial if path == first else []
            body = b"\n".join([*mine, orjson.dumps({"type": "BOOKMARK", "object": {
                "metadata": {"resourceVersion": str(10 + objects), "annotations": {
                    "k8s.io/initial-events-end": "true"}}}})]) + b"\n"
        else:
            body = payloads.get(path, b"")
        try:
            for start in range(0, len(body), 1 << 20):
                await response.write(body[start:start + (1 << 20)])
            await asyncio.sleep(3600)  # a watch stays open
        except ConnectionError:  # the client stopped watching (the naive bridge does)
            pass
        return response

    app = web.Application()
    app.router.add_get(f"/apis/{GROUP}/v1", group_version)
    for plural, _ in KINDS:
        app.router.add_get(f"/apis/{GROUP}/v1/{plural}", collection)
    return app


def main() -> None:
    port, events = int(sys.argv[1]), int(sys.argv[2])
    objects = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    web.run_app(build_app(events, objects), host="127.0.0.1", port=port, print=None,
                access_log=None)


if __name__ == "__main__":
    main()
