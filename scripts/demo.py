"""`make demo`: the whole pipeline on this machine, and what it measured.

Starts the local stack (real Kafka + FerretDB), the processor, and a producer sending a burst
of synthetic traffic; then prints /health, /gpu/info, the documents stored and a cost table by
model. The stack and the processor keep running for you to query; `make down` stops them.
`--stop` tears everything down at the end instead (what the e2e test does). Ctrl-C at any point
stops what this run started.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python scripts/demo.py` puts scripts/ first, not the repo
    sys.path.insert(0, str(REPO))

from devtools import processes, stack  # noqa: E402
from devtools.ports import free_port, port_free  # noqa: E402
from devtools.processes import ProcessId  # noqa: E402
from devtools.waiting import WaitTimeout, wait_for  # noqa: E402

PY = sys.executable
PROCESSOR_CMD = [PY, "-m", "processor"]
# First start of the JVM and FerretDB on a cold machine takes a while; after that, seconds.
HEALTH_TIMEOUT_S = 90.0
STORE_TIMEOUT_S = 90.0
# The processor finishes its batch, commits and leaves the group on SIGTERM: seconds.
PROCESSOR_STOP_S = 30.0


def say(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def stack_up(state_dir: Path, kafka_listen: str, mongo_listen: str) -> None:
    try:
        stack.up(state_dir, kafka_listen=kafka_listen, mongo_listen=mongo_listen)
    except stack.StackError as exc:
        raise SystemExit(f"local stack: {exc}") from None


def stack_down(state_dir: Path) -> None:
    for server, how in stack.down(state_dir).items():
        print(f"{server}: {how}")


def pid_file(state_dir: Path) -> Path:
    return state_dir / "processor.pid"


def start_processor(state_dir: Path, env: dict[str, str]) -> processes.Spawned:
    """The processor in its own session: it keeps running after the demo, for you to query."""
    started = processes.spawn(PROCESSOR_CMD, log=state_dir / "processor.log", cwd=REPO, env=env)
    pid_file(state_dir).write_text(f"{started.pid} {started.id.starttime}\n")
    return started


def stop_processor(state_dir: Path) -> None:
    """Stop the processor this demo started (by its PID file, checked), wait for a clean exit."""
    path = pid_file(state_dir)
    if not path.exists():
        return
    fields = path.read_text().split()
    # An older demo wrote the PID alone: then the exact command line is the only check left.
    recorded = ProcessId(int(fields[0]), int(fields[1])) if len(fields) > 1 else None
    recorded = recorded or ProcessId.of(int(fields[0]))
    if recorded is not None:
        how = processes.stop(recorded, grace_s=PROCESSOR_STOP_S, cmdline=PROCESSOR_CMD)
        print(f"processor pid={recorded.pid} {how}")
    path.unlink(missing_ok=True)


def wait_healthy(url: str, proc: processes.Spawned, log: Path) -> dict[str, Any]:
    last = "no answer yet"

    def healthy() -> dict[str, Any] | None:
        nonlocal last
        if not proc.id.alive():
            raise SystemExit(f"processor exited{processes.exit_note(proc.pid)}; see {log}")
        try:
            response = httpx.get(f"{url}/health", timeout=5)
            body: dict[str, Any] = response.json()
        except httpx.HTTPError as exc:
            last = str(exc)
            return None
        if response.status_code == 200 and body["consumer"]["assigned_partitions"]:
            return body
        last = f"{response.status_code} failing={body.get('failing')}"
        return None

    try:
        return wait_for("the processor to be healthy", healthy, HEALTH_TIMEOUT_S, every_s=0.5)
    except WaitTimeout:
        raise SystemExit(
            f"processor not healthy after {HEALTH_TIMEOUT_S:.0f}s: {last}; see {log}"
        ) from None


def num(value: float | None, spec: str) -> str:
    """A metric the device could not report is null: show '-', never crash on it."""
    return "-" if value is None else format(value, spec)


def show_gpu_info(info: dict[str, Any]) -> None:
    local = info["local"]
    print(f"this host ({info['host']}): source={local['source']}")
    for source, reason in local["skipped"].items():
        print(f"  skipped {source}: {reason}")
    print(f"  {'gpu':<3} {'name':<28} {'util %':>7} {'mem MiB':>15} {'power W':>8} {'$/h':>6}")
    for g in local["gpus"]:
        mem = f"{num(g['memory_used_mib'], '.0f')}/{num(g['memory_total_mib'], '.0f')}"
        print(
            f"  {g['gpu_index']:<3} {g['gpu_name']:<28} {num(g['utilization_gpu_pct'], '>7.1f')} "
            f"{mem:>15} {num(g['power_draw_w'], '>8.1f')} "
            f"{num(g.get('price_per_hour_usd'), '>6.2f')}"
        )
    print(f"seen on the stream: {len(info['stream'])} GPU(s)")
    for r in info["stream"]:
        print(
            f"  {r['gpu_key']:<60} {r['gpu_name']:<28} ${r['price_per_hour_usd']}/h "
            f"({r['price_source']}) at {r['ts']}"
        )


def show_costs(report: dict[str, Any]) -> None:
    header = (
        f"{'model':<28} {'requests':>9} {'tokens':>11} {'cost $':>10} {'$/1k tok':>9} "
        f"{'tps-model $':>11} {'p95 ms':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in report["rows"]:
        per_1k = "-" if r["cost_per_1k_tokens"] is None else f"{r['cost_per_1k_tokens']:.5f}"
        p95 = "-" if r["p95_latency_ms"] is None else f"{r['p95_latency_ms']:.0f}"
        cost = r["cost_usd"] if r["group"] != "(idle)" else r["idle_cost_usd"]
        print(
            f"{r['group']:<28} {r['requests']:>9} {r['tokens']:>11} {cost:>10.5f} "
            f"{per_1k:>9} {r['throughput_cost_usd']:>11.5f} {p95:>8}"
        )
    t = report["totals"]
    per_1k = "-" if t["cost_per_1k_tokens"] is None else f"{t['cost_per_1k_tokens']:.5f}"
    print("-" * len(header))
    print(
        f"{'total':<28} {t['requests']:>9} {t['tokens']:>11} {t['cost_usd']:>10.5f} "
        f"{per_1k:>9} {t['throughput_cost_usd']:>11.5f}"
    )
    print(
        "cost $ = GPU price x reporting time, split by token share (idle minutes apart); "
        "tps-model $ = sum of per-event cost_per_token x tokens."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--state-dir", type=Path, default=REPO / ".state")
    parser.add_argument(
        "--kafka-listen", default=os.environ.get("STACK_KAFKA_LISTEN", "127.0.0.1:9092")
    )
    parser.add_argument(
        "--mongo-listen", default=os.environ.get("STACK_MONGO_LISTEN", "127.0.0.1:27017")
    )
    parser.add_argument(
        "--http-port",
        type=int,
        default=int(os.environ.get("HTTP_PORT") or 8080),
        help="port of the processor's API (default: HTTP_PORT, else 8080)",
    )
    parser.add_argument("--events", type=int, default=3000, help="token events to send")
    parser.add_argument("--rate", type=float, default=200.0, help="events per second")
    parser.add_argument("--stop", action="store_true", help="tear everything down at the end")
    parser.add_argument("--down", action="store_true", help="only stop an earlier demo")
    args = parser.parse_args(argv)
    state_dir: Path = args.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    if args.down:
        stop_processor(state_dir)
        stack_down(state_dir)
        return 0
    url = f"http://127.0.0.1:{args.http_port}"
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP": args.kafka_listen,
        "MONGO_URL": f"mongodb://{args.mongo_listen}/",
        "MONGO_DB": "gpu_cost",
        "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": str(args.http_port),
        "PYTHONUNBUFFERED": "1",
    }
    started_here = False
    try:
        stop_processor(state_dir)  # a processor left by an earlier demo
        if not port_free(args.http_port):  # checked before anything starts
            raise SystemExit(
                f"demo: port {args.http_port} is taken by another program; pick another: "
                f"HTTP_PORT={_other_port(args.http_port)} make demo"
            )
        say("local stack: Apache Kafka (KRaft) + FerretDB, as processes")
        stack_up(state_dir, args.kafka_listen, args.mongo_listen)
        say(f"processor on {url} (log: {state_dir / 'processor.log'})")
        proc = start_processor(state_dir, env)
        started_here = True
        wait_healthy(url, proc, state_dir / "processor.log")
        before = httpx.get(f"{url}/api/v1/stats", timeout=10).json()
        print(f"healthy; already stored: {before}")

        say(f"producer: {args.events} token events at {args.rate:.0f}/s plus GPU readings")
        produced = subprocess.run(
            [
                PY,
                "-m",
                "producers",
                "run",
                "--count",
                str(args.events),
                "--rate",
                str(args.rate),
                "--gpu-interval",
                "2",
            ],
            cwd=REPO,
            env=env,
            check=False,
        )
        if produced.returncode != 0:
            raise SystemExit(f"producer failed with exit code {produced.returncode}")

        say("waiting for the processor to store every event")
        target: int = before["token_usage"] + args.events
        counts: dict[str, int] = before

        def all_stored() -> bool:
            nonlocal counts
            counts = httpx.get(f"{url}/api/v1/stats", timeout=10).json()
            return counts["token_usage"] >= target

        try:
            wait_for(f"{target} token events stored", all_stored, STORE_TIMEOUT_S, every_s=0.5)
        except WaitTimeout:
            raise SystemExit(
                f"only {counts['token_usage']} of {target} token events stored"
            ) from None

        say("GET /health")
        print(json.dumps(httpx.get(f"{url}/health", timeout=10).json(), indent=1))
        say("GET /gpu/info")
        show_gpu_info(httpx.get(f"{url}/gpu/info", timeout=10).json())
        say("documents stored (GET /api/v1/stats)")
        for name, n in counts.items():
            print(f"  {name:<12} {n:>9}")
        start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
        report = httpx.get(
            f"{url}/api/v1/costs",
            timeout=30,
            params={"group_by": "model", "granularity": "day", "start": start},
        )
        # The URL this demo actually asked, so a reader can ask it again.
        say(f"cost by model, last hour: GET {report.url}")
        report.raise_for_status()
        show_costs(report.json())
    except KeyboardInterrupt:
        print("\ninterrupted; stopping what this demo started")
        args.stop = True
    finally:
        if args.stop:
            stop_processor(state_dir)
            stack_down(state_dir)
        elif started_here:
            say(f"still running: try  curl '{url}/api/v1/costs?group_by=gpu'   |  docs: {url}/docs")
            print("stop it all with:  make down")
    return 0


def _other_port(taken: int) -> int:
    """A free port to suggest instead of ``taken``: 9090 if it is free, else any."""
    return 9090 if taken != 9090 and port_free(9090) else free_port()


if __name__ == "__main__":
    sys.exit(main())
