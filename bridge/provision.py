"""``kube-event-bridge provision --config FILE [--dry-run]``: create (or, with ``--dry-run``,
only check) the destinations every sink of the config needs for the kinds the bridge would
watch right now (the kinds of ``kube-event-bridge kinds``): Kafka topics and the dead-letter
topic, NATS streams. Existing destinations are compared with the config and never altered.

Output: one line per destination, ``SINK: WHAT NAME: ok|created|missing|contradicts: details``
(a contradiction says what differs and the command that would change it), then a summary.

Exit codes: 0 every destination is ok (or was created); 1 something is missing (a dry run, or
a creation that failed) or contradicts the config; 2 invalid config or usage, or a template
with one destination per object or namespace; 3 the API server or a broker is unreachable.
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from typing import TextIO

from bridge.config.model import Config
from bridge.errors import BridgeError, ConfigError
from bridge.kindstable import decisions
from bridge.kube import auth
from bridge.kube.transport import HttpTransport
from sinks import registry
from sinks.base import SinkError
from sinks.provisioning import KindRef, Outcome, Provisioner, Scope, UnboundedTemplate

EXIT_OK, EXIT_PROBLEMS, EXIT_CONFIG, EXIT_UNAVAILABLE = 0, 1, 2, 3


async def scope(config: Config) -> Scope:
    """The kinds the bridge would watch now, with the namespaces and event types."""
    transport = HttpTransport(auth.load(config.kubeconfig, config.context))
    try:
        decided = await decisions(config, transport)
    finally:
        await transport.close()
    kinds = tuple(KindRef(r.group, r.version, r.plural, r.kind, r.namespaced)
                  for r, watched, _ in decided if watched)
    return Scope(kinds, tuple(config.watch.namespaces), tuple(config.watch.event_types))


async def _provision(config: Config, found: Scope, *, dry_run: bool,
                     out: TextIO) -> tuple[list[Outcome], int]:
    outcomes: list[Outcome] = []
    code = EXIT_OK
    for settings in config.sinks:
        sink = registry.build(settings, config.cluster, config.events.max_bytes)
        if not isinstance(sink, Provisioner):
            print(f"{settings.name}: {settings.type} sink: nothing to provision", file=out)
            continue
        try:
            done = await sink.provision(found, dry_run=dry_run)
        except UnboundedTemplate as exc:
            print(f"kube-event-bridge: sink {settings.name}: {exc}", file=sys.stderr)
            return outcomes, EXIT_CONFIG
        except SinkError as exc:
            print(f"kube-event-bridge: {exc}", file=sys.stderr)
            code = EXIT_UNAVAILABLE
            continue
        finally:
            await sink.close()
        for outcome in done:
            print(outcome.line(), file=out)
        outcomes += done
    return outcomes, code


def provision(config: Config, *, dry_run: bool, out: TextIO = sys.stdout) -> int:
    try:
        found = asyncio.run(scope(config))
    except ConfigError:
        raise
    except BridgeError as exc:
        print(f"kube-event-bridge: cannot list the kinds to watch: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    print(f"{len(found.kinds)} kinds would be watched"
          + (" (dry run: nothing is created)" if dry_run else ""), file=out)
    outcomes, code = asyncio.run(_provision(config, found, dry_run=dry_run, out=out))
    tally = Counter(o.status.value for o in outcomes)
    print(", ".join(f"{n} {status}" for status, n in sorted(tally.items())) or
          "no destinations", file=out)
    if code != EXIT_OK:
        return code
    return EXIT_PROBLEMS if any(o.failed for o in outcomes) else EXIT_OK
