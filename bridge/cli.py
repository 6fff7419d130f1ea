"""The ``kube-event-bridge`` command line.

Exit codes: 0 success; 1 runtime failure; 2 invalid usage or configuration (including an
unusable kubeconfig); 3 something needed at start is unavailable (port in use, unreadable
checkpoint).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable

from bridge import __version__
from bridge.config.loader import ConfigProblems, load
from bridge.config.model import Config
from bridge.errors import BridgeError, ConfigError

DESCRIPTION = """\
Watch every CRD kind in a Kubernetes cluster and publish each add, update and delete as a
CloudEvent to Kafka, NATS JetStream or a JSON-lines stream: at least once, in order per
object, with deterministic event ids and resourceVersion checkpoints."""

EPILOG = """\
commands:
  run --config FILE        run the bridge (SIGTERM/SIGINT: flush, checkpoint, exit 0)
  check-config FILE        validate a config; every problem as FILE:LINE: path: message
  kinds --config FILE      every kind in the cluster, whether it would be watched, and why
  provision --config FILE [--dry-run]
                           create (or only check) the Kafka topics and NATS streams the
                           sinks need for the kinds watched now; one line per destination:
                           ok / created / missing / contradicts (existing ones never altered)

exit codes: 0 ok, 1 runtime failure, 2 invalid usage/config/kubeconfig,
            3 unavailable at start (metrics port in use, unreadable checkpoint)
  provision: 0 all ok or created, 1 something missing or contradicting, 2 invalid config
            or a template with one destination per object, 3 API server or broker unreachable
example config: config/example.yaml; reference: docs/config-reference.md"""

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG, EXIT_UNAVAILABLE = 0, 1, 2, 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kube-event-bridge", description=DESCRIPTION,
                                     epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="run the bridge")
    run.add_argument("--config", "-c", required=True, metavar="FILE", help="YAML config file")
    run.add_argument("--shard", metavar="I/N", help="run only shard I of N (0-based): its "
                     "streams, its own checkpoint; what each worker process runs")
    run.add_argument("--http-port", type=int, metavar="PORT", help="override http.port")
    run.add_argument("--http-address", metavar="ADDRESS", help="override http.address")
    check = sub.add_parser("check-config", help="validate a config file")
    check.add_argument("file", metavar="FILE")
    kinds = sub.add_parser("kinds", help="show what would be watched, and why")
    kinds.add_argument("--config", "-c", required=True, metavar="FILE")
    provision = sub.add_parser("provision", help="create or check the topics and streams the "
                               "sinks need")
    provision.add_argument("--config", "-c", required=True, metavar="FILE")
    provision.add_argument("--dry-run", action="store_true", help="only check; exit 1 when "
                           "something is missing or contradicts the config")
    return parser


def _load(path: str) -> Config | None:
    try:
        return load(path)
    except ConfigProblems as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{path}: {len(exc.problems)} problem(s); see docs/config-reference.md",
              file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_OK
    if args.command == "check-config":
        config = _load(args.file)
        if config is None:
            return EXIT_CONFIG
        print(f"{args.file}: valid")
        return EXIT_OK
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    if args.command == "kinds":
        from bridge.kindstable import print_kinds

        return _guard(lambda: print_kinds(config))
    if args.command == "provision":
        from bridge.provision import provision

        return _guard(lambda: provision(config, dry_run=args.dry_run))
    from sinks.provisioning import name_config_file

    name_config_file(os.path.abspath(args.config))
    try:
        run_config = _run_config(config, args)
    except ValueError as exc:
        print(f"kube-event-bridge: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    sharding = run_config.sharding
    if sharding.index is None and (sharding.worker_count() > 1 or sharding.leases):
        from bridge.workers import run_workers

        return _guard(lambda: run_workers(os.path.abspath(args.config), run_config))
    return _guard(lambda: _run(run_config))


def _run_config(config: Config, args: argparse.Namespace) -> Config:
    """The config as ``run`` uses it: the HTTP overrides, and one shard's view when
    ``--shard`` (or ``sharding.index``) names one."""
    from bridge.sharding.assign import parse_shard
    from bridge.sharding.view import for_shard

    http = {k: v for k, v in (("port", args.http_port), ("address", args.http_address))
            if v is not None}
    if http:
        config = config.model_copy(update={"http": config.http.model_copy(update=http)})
    if args.shard is not None:
        index, count = parse_shard(args.shard)
        return for_shard(config, index, count)
    if config.sharding.index is not None:
        return for_shard(config, config.sharding.index, config.sharding.count())
    return config


def _guard(body: Callable[[], int]) -> int:
    """Map the bridge's errors to exit codes with one clear line each (no tracebacks)."""
    from bridge.app import StartupError

    try:
        return body()
    except ConfigError as exc:
        print(f"kube-event-bridge: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except StartupError as exc:
        print(f"kube-event-bridge: cannot start: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except BridgeError as exc:
        print(f"kube-event-bridge: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _run(config: Config) -> int:
    from bridge import logs, runtime
    from bridge.app import Bridge

    logs.setup(config.logging.format, config.logging.level)
    bridge = Bridge(config)
    runtime.tune_gc()

    async def main_task() -> int:
        loop = asyncio.get_running_loop()
        signals = {"count": 0}

        def on_signal(signum: int) -> None:
            signals["count"] += 1
            if signals["count"] > 1:
                logging.getLogger("bridge").error("second signal: exiting now without flushing")
                os._exit(EXIT_FAILURE)
            logging.getLogger("bridge").info("%s received: shutting down (again to force)",
                                             signal.Signals(signum).name)
            bridge.stopping.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        return await bridge.run()

    return asyncio.run(main_task())


if __name__ == "__main__":
    sys.exit(main())
