#!/usr/bin/env python3
"""The fault suite (`make chaos`): one line per fault, exit 1 if anything was lost, duplicated
or priced differently from a clean run.

    .venv/bin/python scripts/chaos.py [--faults leader_broker,one_replica,...] [--rate 150]
        [--count 4000] [--state-dir .state/chaos] [--keep]

Starts its own 3-broker KRaft cluster + FerretDB (STACK_KAFKA_LISTEN / STACK_MONGO_LISTEN, or
the stack's defaults) in --state-dir and stops it at the end unless --keep. The faults and
figures are described in devtools/chaos.py and docs/operations.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from devtools import stack  # noqa: E402
from devtools.chaos import FAULTS, Target, run_fault  # noqa: E402


def say(line: str) -> None:
    sys.stderr.write(f"chaos: {line}\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faults", default=",".join(FAULTS), help="comma-separated subset")
    parser.add_argument("--rate", type=float, default=150.0, help="events per second sent")
    parser.add_argument("--count", type=int, default=4000, help="token events per fault")
    parser.add_argument("--state-dir", type=Path, default=REPO / ".state" / "chaos")
    parser.add_argument("--keep", action="store_true", help="leave the stack running")
    args = parser.parse_args(argv)
    faults = [f for f in args.faults.split(",") if f]
    unknown = set(faults) - set(FAULTS)
    if unknown:
        parser.error(f"unknown faults {sorted(unknown)}; known: {', '.join(FAULTS)}")
    kafka_listen = os.environ.get("STACK_KAFKA_LISTEN", "127.0.0.1:29092")
    mongo_listen = os.environ.get("STACK_MONGO_LISTEN", "127.0.0.1:29017")
    began = time.monotonic()
    say(f"starting a 3-broker cluster on {kafka_listen} (+5 ports) and FerretDB on {mongo_listen}")
    stack.up(args.state_dir, kafka_listen=kafka_listen, mongo_listen=mongo_listen, brokers=3)
    target = Target(
        bootstrap=stack.kafka_bootstrap(kafka_listen, 3),
        mongo_url=stack.mongo_url(mongo_listen),
        log_dir=args.state_dir / "chaos-logs",
        brokers=3,
        state_dir=args.state_dir,
        kafka_listen=kafka_listen,
        mongo_listen=mongo_listen,
    )
    failed = 0
    try:
        for fault in faults:
            try:
                result = run_fault(target, fault, rate=args.rate, count=args.count, say=say)
            except Exception as exc:  # one broken fault run must not hide the others' figures
                print(f"fault={fault} error={exc!r}", flush=True)
                failed += 1
                target.restart_servers("kafka")  # whatever it left stopped comes back
                target.restart_servers("mongo")
                continue
            print(result.line(), flush=True)
            failed += not result.ok
    finally:
        if not args.keep:
            stack.down(args.state_dir)
    say(f"{len(faults)} faults in {time.monotonic() - began:.0f} s; {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
