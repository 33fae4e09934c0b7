"""The command line of the local stack: ``scripts/stack.py [options] up|status|down``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from devtools.stack.config import (
    BROKER_COUNTS,
    DEFAULT_KAFKA_LISTEN,
    DEFAULT_MONGO_LISTEN,
    DEFAULT_STATE_DIR,
    SERVERS,
    Server,
    ServerState,
)
from devtools.stack.console import rel, say
from devtools.stack.errors import MissingToolError, StackError
from devtools.stack.lifecycle import down, status, up

__all__ = ["main"]


def _print_states(states: Mapping[Server, ServerState]) -> None:
    rows = [row for state in states.values() for row in (state, *state.members)]
    for state in rows:
        proc = f"pid {state.pid}" if state.pid else "-"
        run = "running" if state.running else "stopped"
        answer = "answering" if state.answering else "NOT answering"
        detail = f"  {state.detail}" if state.detail else ""
        log = f"  log {rel(state.log)}" if state.log else ""
        name = state.name if state.node == 1 else f"{state.name}-{state.node}"
        say(f"{name:<7} {run:<8} {proc:<11} {state.address!s:<21} {answer}{detail}{log}")
    kafka = states.get("kafka")
    if kafka is not None and kafka.members:
        say(f"kafka bootstrap: {kafka.bootstrap}")


def _parser() -> argparse.ArgumentParser:
    def add_common(p: argparse.ArgumentParser, suppress: bool) -> None:
        def default(value: object) -> object:
            return argparse.SUPPRESS if suppress else value

        p.add_argument(
            "--state-dir",
            type=Path,
            default=default(DEFAULT_STATE_DIR),
            help="PID files, logs and data (default: .state)",
        )
        p.add_argument(
            "--cache-dir",
            type=Path,
            default=default(None),
            help="downloaded jars and built binaries (default: <repo>/.cache, env STACK_CACHE_DIR)",
        )
        p.add_argument(
            "--kafka-listen",
            default=default(None),
            metavar="HOST:PORT",
            help=f"Kafka broker address; controller on PORT+1 "
            f"(env STACK_KAFKA_LISTEN, default {DEFAULT_KAFKA_LISTEN})",
        )
        p.add_argument(
            "--mongo-listen",
            default=default(None),
            metavar="HOST:PORT",
            help=f"FerretDB address (env STACK_MONGO_LISTEN, default {DEFAULT_MONGO_LISTEN})",
        )
        p.add_argument(
            "--only",
            choices=SERVERS,
            default=default(None),
            help="act on one server only (default: both)",
        )

    parser = argparse.ArgumentParser(
        prog="stack.py",
        description="Local Kafka (KRaft) + FerretDB as plain processes. See docs/local-stack.md.",
    )
    add_common(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{up,status,down}")
    p_up = sub.add_parser(
        "up", help="install if needed, start, wait until answering, create topics"
    )
    add_common(p_up, suppress=True)
    p_up.add_argument("--no-topics", action="store_true", help="do not create the topics")
    p_up.add_argument(
        "--brokers",
        type=int,
        choices=BROKER_COUNTS,
        default=1,
        help="Kafka KRaft nodes: 3 runs a cluster on ports P..P+5 (brokers P, P+2, P+4; "
        "controllers P+1, P+3, P+5), topics with replication factor 3, min.insync.replicas 2",
    )
    p_up.add_argument(
        "--security",
        choices=("plaintext", "sasl-ssl"),
        default="plaintext",
        help="sasl-ssl: also a SASL_SSL (SCRAM-SHA-512) listener on port P+2, a CA and broker "
        "certificate made with openssl, credentials in <state>/kafka/sasl.json (docs/security.md)",
    )
    p_status = sub.add_parser("status", help="show servers; exit 1 if one is not answering")
    add_common(p_status, suppress=True)
    p_down = sub.add_parser("down", help="stop exactly the processes `up` started")
    add_common(p_down, suppress=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "up":
            states = up(
                args.state_dir,
                only=args.only,
                kafka_listen=args.kafka_listen,
                mongo_listen=args.mongo_listen,
                cache_dir=args.cache_dir,
                create_topics=not getattr(args, "no_topics", False),
                brokers=args.brokers,
                security=args.security,
            )
            _print_states(states)
            return 0
        if args.command == "status":
            states = status(
                args.state_dir,
                only=args.only,
                kafka_listen=args.kafka_listen,
                mongo_listen=args.mongo_listen,
            )
            _print_states(states)
            return 0 if all(s.ok for s in states.values()) else 1
        for server, how in down(args.state_dir, only=args.only, cache_dir=args.cache_dir).items():
            say(f"{server}: {how}")
        return 0
    except MissingToolError as exc:
        print(f"stack.py: missing tool: {exc}", file=sys.stderr)
        return 3
    except StackError as exc:
        print(f"stack.py: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stack.py: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
