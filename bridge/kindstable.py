"""``kube-event-bridge kinds``: every kind in the cluster, whether it would be watched, and
the rule that decided it (including "forbidden" for kinds the identity may not list)."""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

import orjson

from bridge.app import selection
from bridge.config.model import Config
from bridge.errors import ApiError
from bridge.kube import auth
from bridge.kube.resources import Resource
from bridge.kube.transport import HttpTransport, Transport
from bridge.watch.engine import CRD_RESOURCE
from bridge.watch.kinds import crd_resource, resolve_builtin


async def decisions(config: Config, transport: Transport) -> list[tuple[Resource, bool, str]]:
    """Every kind in the cluster, sorted, whether the bridge would watch it now, and why."""
    sel = selection(config)
    found: list[tuple[Resource, bool]] = []
    for spec in config.watch.builtins:
        try:
            found.append((await resolve_builtin(transport, spec), True))
        except (LookupError, ValueError) as exc:
            print(f"warning: {exc}", file=sys.stderr)
    crds = orjson.loads(await transport.request("GET", CRD_RESOURCE.collection_path()))
    for crd in crds.get("items") or ():
        resource = crd_resource(crd, dict(config.watch.versions))
        if resource is not None:
            found.append((resource, False))
    decided = []
    for resource, builtin in sorted(found, key=lambda f: (f[0].group, f[0].plural)):
        watched, reason = sel.decide(resource, builtin)
        if watched:
            try:
                await transport.request("GET", resource.collection_path(), {"limit": "1"})
            except ApiError as exc:
                if exc.forbidden:
                    watched, reason = False, f"forbidden ({exc.message or exc.reason})"
        decided.append((resource, watched, reason))
    return decided


async def _rows(config: Config, transport: Transport) -> list[tuple[str, str, str, str, str]]:
    return [(resource.kind, str(resource), "Namespaced" if resource.namespaced else "Cluster",
             "yes" if watched else "no", reason)
            for resource, watched, reason in await decisions(config, transport)]


def render(rows: list[tuple[str, str, str, str, str]], out: TextIO) -> None:
    header = ("KIND", "GROUP/VERSION/RESOURCE", "SCOPE", "WATCHED", "WHY")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        cells = [c.ljust(w) for c, w in zip(row[:4], widths, strict=True)]
        print("  ".join([*cells, row[4]]), file=out)


def print_kinds(config: Config) -> int:
    async def main() -> list[tuple[str, str, str, str, str]]:
        transport = HttpTransport(auth.load(config.kubeconfig, config.context))
        try:
            return await _rows(config, transport)
        finally:
            await transport.close()

    rows = asyncio.run(main())
    render(rows, sys.stdout)
    watched = sum(1 for r in rows if r[3] == "yes")
    print(f"\n{watched} of {len(rows)} kinds would be watched", file=sys.stdout)
    return 0
