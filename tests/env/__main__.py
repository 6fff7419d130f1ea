"""``python -m tests.env up|down|gap|status|logs|start|stop|kill SERVICE``."""

from __future__ import annotations

import argparse
import shlex
import sys

from tests.env import procs
from tests.env.world import SERVICES, World


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.env",
        description="The local test world: kube-apiserver + etcd, Kafka (KRaft), a secured "
        "Kafka broker (TLS, SASL, ACLs) and NATS JetStream on 127.0.0.1, built and cached "
        "outside the repo.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="build what is missing, start everything, print shell exports")
    down = sub.add_parser("down", help="stop everything and delete the world's data")
    down.add_argument("--keep-data", action="store_true", help="keep data, logs and certs")
    sub.add_parser("gap", help="make every older resourceVersion answer 410 Gone")
    sub.add_parser("status", help="show each service's pid and readiness")
    sub.add_parser("logs", help="print the tail of every service log")
    for verb in ("start", "stop", "kill", "restart"):
        cmd = sub.add_parser(verb, help=f"{verb} one service")
        cmd.add_argument("service", choices=SERVICES)
    args = parser.parse_args(argv)
    world = World()
    try:
        if args.command == "up":
            for key, value in world.up().exports().items():
                print(f"export {key}={shlex.quote(value)}")
        elif args.command == "down":
            world.down(keep_data=args.keep_data)
        elif args.command == "gap":
            revision = world.gap()
            print(f"compacted etcd at revision {revision}; kube-apiserver watch cache reset",
                  file=sys.stderr)
        elif args.command == "status":
            for daemon in world.daemons():
                pid = procs.running_pid(daemon)
                print(f"{daemon.name:16} {'running pid ' + str(pid) if pid else 'stopped'}")
        elif args.command == "logs":
            for daemon in world.daemons():
                print(procs.log_tail(daemon))
        else:
            getattr(world, args.command)(args.service)
    except Exception as exc:  # a CLI: one clear line, no traceback
        print(f"tests.env {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
