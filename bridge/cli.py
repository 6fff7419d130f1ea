"""The ``kube-event-bridge`` command line."""

from __future__ import annotations

import argparse
import sys

from bridge import __version__

DESCRIPTION = """\
Watch every CRD kind in a Kubernetes cluster and publish each add, update and delete as a
CloudEvent to Kafka, NATS JetStream or a JSON-lines stream: at least once, in order per
object, with deterministic event ids and resourceVersion checkpoints."""

EPILOG = """\
Exit codes: 0 success, 1 runtime failure, 2 invalid usage or configuration.
Docs: README.md (quickstart, event format, guarantees)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kube-event-bridge",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
