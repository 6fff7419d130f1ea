"""The live benchmark's load generator, in its own process so it does not share the
bridge's core: writes at a steady rate (0 = as fast as the API server accepts) and prints
one JSON line per acknowledged write: {"id": "<uid>/<resourceVersion>", "t": <wall time>}.

    python -m bench.livewriter KUBECONFIG COLLECTION_PATH GROUP RATE SECONDS CONCURRENCY PHASE

PHASE prefixes the names of the objects it creates (each phase writes fresh objects).
"""

from __future__ import annotations

import asyncio
import sys
import time

import orjson

from bridge.kube import auth
from bridge.kube.transport import HttpTransport


async def main(kubeconfig: str, path: str, group: str, rate: float, seconds: float,
               concurrency: int, phase: str) -> None:
    writer = HttpTransport(auth.load(kubeconfig))
    names = [f"{phase}-{i}" for i in range(200)]
    created: dict[str, asyncio.Event] = {}  # name -> set once its create was answered
    gate = asyncio.Semaphore(concurrency)
    errors = 0

    async def write(n: int) -> None:
        nonlocal errors
        name = names[n % len(names)]
        answered = created.get(name)
        creating = answered is None
        if answered is None:
            answered = created[name] = asyncio.Event()
        try:
            if creating:
                body = await writer.request("POST", path, body=orjson.dumps({
                    "apiVersion": f"{group}/v1", "kind": "Ping",
                    "metadata": {"name": name}, "spec": {"n": n}}))
            else:
                await answered.wait()  # a write must not overtake the create of its object
                body = await writer.request(
                    "PATCH", f"{path}/{name}", body=orjson.dumps({"spec": {"n": n}}),
                    content_type="application/merge-patch+json")
            meta = orjson.loads(body)["metadata"]
            sys.stdout.write(orjson.dumps({"id": f"{meta['uid']}/{meta['resourceVersion']}",
                                           "t": time.time()}).decode() + "\n")
        except Exception as exc:
            errors += 1
            if creating:
                del created[name]  # not there: the name's next write creates it
            if errors <= 3:
                print(f"livewriter: write {n} failed: {exc!r}", file=sys.stderr)
        finally:
            if creating:
                answered.set()
            gate.release()

    started = time.monotonic()
    stop_at = started + seconds
    tasks = []
    count = 0
    while time.monotonic() < stop_at:
        await gate.acquire()
        tasks.append(asyncio.create_task(write(count)))
        count += 1
        if rate > 0:
            delay = started + count / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
    await asyncio.gather(*tasks)
    sys.stdout.write(orjson.dumps({"done": True, "errors": errors,
                                   "elapsed": time.monotonic() - started}).decode() + "\n")
    await writer.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]),
                     float(sys.argv[5]), int(sys.argv[6]), sys.argv[7]))
