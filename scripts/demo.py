"""`make demo`: the pipeline end to end on one real hour of LLM traffic, and what it cost.

Starts the local stack (real Kafka + FerretDB) and the processor, then replays the Azure LLM
inference trace (data/, 19,366 real requests, CC-BY 4.0) as fast as the stack takes it, on a
two-host fleet: 4 H100s serving a 70B model (two tensor-parallel pairs) and 5 L40S serving two
small models (one GPU a spare). Each host is a producer replaying the same trace with
``--fleet-share``: every request is sent by the host that serves its model. Prints the fleet,
the cost by model and by tenant ($ per 1M input, output and blended tokens, idle share, energy)
and the curl lines to get the same as JSON and CSV. The stack and the processor keep running for
you to query; `make down` stops them. `--stop` tears everything down at the end instead (what
the e2e test does). Ctrl-C at any point stops what this run started.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python scripts/demo.py` puts scripts/ first, not the repo
    sys.path.insert(0, str(REPO))

from devtools import processes, stack  # noqa: E402
from devtools.ports import free_port, port_free  # noqa: E402
from devtools.processes import ProcessId  # noqa: E402
from devtools.waiting import WaitTimeout, wait_for  # noqa: E402
from producers.trace import KNOWN_THROUGHPUT  # noqa: E402

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


TRACE = REPO / "data" / "azure-llm-inference-2023-conv.csv"
FLEET_DIR = REPO / "scripts" / "demo_fleet"


@dataclass(frozen=True)
class DemoHost:
    """One inference host of the demo fleet: its GPUs (a seed file) and what runs where."""

    name: str
    seed_file: str
    deployment: str  # PRODUCER_DEPLOYMENT: model=gpu_index[,gpu_index];...

    def replicas(self) -> dict[str, list[int]]:
        """model -> GPU count of each of its replicas on this host."""
        out: dict[str, list[int]] = {}
        for entry in self.deployment.split(";"):
            model, _, gpus = entry.partition("=")
            out.setdefault(model, []).append(len(gpus.split(",")))
        return out


FLEET: Final = (
    # $4.00/h per H100 and $1.10/h per L40S: typical on-demand cloud prices, per GPU.
    DemoHost(
        "h100-node-01",
        "h100-node.json",
        "llama-3.1-70b-instruct=0,1;llama-3.1-70b-instruct=2,3",  # two tensor-parallel pairs
    ),
    DemoHost(
        "l40s-node-01",
        "l40s-node.json",
        "llama-3.1-8b-instruct=0;llama-3.1-8b-instruct=1;"
        "mistral-7b-instruct=2;mistral-7b-instruct=3",  # GPU 4: a warm spare, serving nothing
    ),
)


@dataclass(frozen=True)
class ModelPlan:
    """What the fleet offers a model: its GPUs' price per hour and its serving capacity."""

    model: str
    usd_per_hour: float
    capacity: float  # replicas x per-request decode tokens/s of its throughput profile


def fleet_plan() -> list[ModelPlan]:
    """Each model's hourly GPU price and capacity. The trace's traffic is split in proportion
    to capacity (a load balancer keeping every replica equally busy), so each model's $/token
    should follow its GPUs' price / capacity: the demo checks that it does."""
    plans: dict[str, ModelPlan] = {}
    for host in FLEET:
        gpus = json.loads((FLEET_DIR / host.seed_file).read_text())
        price = {g["gpu_index"]: float(g["price_per_hour_usd"]) for g in gpus}
        for model, groups in host.replicas().items():
            decode = KNOWN_THROUGHPUT[model].decode_tps
            prev = plans.get(model, ModelPlan(model, 0.0, 0.0))
            usd = sum(price[i] for i in range(len(price)) if _serves(host, model, i))
            plans[model] = ModelPlan(
                model, prev.usd_per_hour + usd, prev.capacity + len(groups) * decode
            )
    return list(plans.values())


def _serves(host: DemoHost, model: str, gpu_index: int) -> bool:
    return any(
        m == model and str(gpu_index) in gpus.split(",")
        for m, _, gpus in (e.partition("=") for e in host.deployment.split(";"))
    )


# ---------------------------------------------------------------------------- numbers for people


def usd(value: float | None) -> str:
    """Dollars as a person reads them: $12.35, $0.139, $0.0042 — never 1.7e-05."""
    if value is None:
        return "-"
    if value >= 1 or value == 0:
        return f"${value:,.2f}"
    if value >= 0.01:
        return f"${value:.3f}"
    return f"${value:.4f}"


def kwh(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def seconds(ms: float | None) -> str:
    return "-" if ms is None else f"{ms / 1000:.1f} s"


def tokens(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1_000_000 else f"{n:,}"


def show_fleet(info: dict[str, Any]) -> None:
    header = f"  {'host / GPU':<52} {'name':<24} {'$/h':>6} {'W':>6}  source"
    print(header)
    for r in sorted(info["stream"], key=lambda r: (r["host"], r["gpu_index"])):
        key = f"{r['host']} #{r['gpu_index']} {r['gpu_uuid'][:18]}…"
        power = "-" if r.get("power_draw_w") is None else f"{r['power_draw_w']:.0f}"
        print(
            f"  {key:<52} {r['gpu_name']:<24} {r['price_per_hour_usd']:>6.2f} {power:>6}  "
            f"{r['price_source']}"
        )


def show_table(report: dict[str, Any], dim: str) -> None:
    """One row per model (or tenant): the allocation cost and its $/1M tokens."""
    header = (
        f"  {dim:<24} {'requests':>8} {'in tok':>8} {'out tok':>8} {'cost':>9} "
        f"{'$/1M in':>8} {'$/1M out':>8} {'$/1M all':>8} {'kWh/1M':>7} {'p95':>7}"
    )
    print(header)
    print("  " + "-" * (len(header) - 2))
    rows = sorted(report["rows"], key=lambda r: (r[dim] == "(idle)", -r["cost_usd"]))
    for r in rows:
        if r[dim] == "(idle)":
            print(f"  {'(idle: GPUs serving nothing)':<60} {usd(r['cost_usd']):>9}")
            continue
        print(
            f"  {r[dim]:<24} {r['requests']:>8,} {tokens(r['input_tokens']):>8} "
            f"{tokens(r['output_tokens']):>8} {usd(r['cost_usd']):>9} "
            f"{usd(r['cost_per_1m_input_tokens']):>8} {usd(r['cost_per_1m_output_tokens']):>8} "
            f"{usd(r['cost_per_1m_tokens']):>8} {kwh(r['energy_kwh_per_1m_tokens']):>7} "
            f"{seconds(r['p95_latency_ms']):>7}"
        )
    t = report["totals"]
    print("  " + "-" * (len(header) - 2))
    print(
        f"  {'fleet (idle included)':<24} {t['requests']:>8,} {tokens(t['input_tokens']):>8} "
        f"{tokens(t['output_tokens']):>8} {usd(t['cost_usd']):>9} "
        f"{usd(t['cost_per_1m_input_tokens']):>8} {usd(t['cost_per_1m_output_tokens']):>8} "
        f"{usd(t['cost_per_1m_tokens']):>8} {kwh(t['energy_kwh_per_1m_tokens']):>7}"
    )


def show_summary(by_model: dict[str, Any], k: float) -> None:
    t = by_model["totals"]
    share = t["idle_share"] or 0.0
    print(
        f"  the hour's GPU bill: {usd(t['cost_usd'])} for {tokens(t['tokens'])} tokens; "
        f"{share:.1%} of it ({usd(t['idle_cost_usd'])}) paid for GPU time serving nothing."
    )
    print(
        f"  $/1M in and out: an output token costs k = {k:g} input tokens of GPU time "
        "(decode is sequential, prefill parallel; docs/cost-model.md)."
    )
    print(
        f"  energy: {t['energy_kwh']:.1f} kWh, "
        f"{kwh(t['energy_kwh_per_1m_tokens'])} kWh per 1M tokens."
    )
    estimate = t["throughput_estimate_usd"]
    if t["cost_usd"]:
        print(
            f"  live per-event estimate: {usd(estimate)} ({estimate / t['cost_usd']:.0%} of the "
            "bill). Each event was priced as it arrived at its GPU's recent throughput; it"
        )
        print(
            "  misses idle time and the window's edges, so quote the allocation above "
            "(docs/cost-model.md: which number to quote)."
        )


def show_check(by_model: dict[str, Any], plans: list[ModelPlan]) -> None:
    """Measured $/1M per model against what GPU price / capacity predicts, relative to the
    cheapest model: if they agree, the per-model numbers mean what they say."""
    measured = {
        r["model"]: r["cost_per_1m_tokens"]
        for r in by_model["rows"]
        if r["model"] != "(idle)" and r["cost_per_1m_tokens"]
    }
    predicted = {p.model: p.usd_per_hour / p.capacity for p in plans if p.model in measured}
    if len(predicted) < 2:
        return
    base = min(predicted, key=lambda m: predicted[m])
    print(f"  $/1M relative to {base} — predicted by GPU $/h ÷ capacity, and measured:")
    for model in sorted(predicted, key=lambda m: predicted[m]):
        print(
            f"    {model:<24} predicted {predicted[model] / predicted[base]:>6.2f}x   "
            f"measured {measured[model] / measured[base]:>6.2f}x"
        )


# FerretDB answers an aggregation by scanning: on a busy 2-core machine an hour of documents
# can take tens of seconds; MongoDB answers from its indexes.
COSTS_TIMEOUT_S: Final = 300.0


def ask_costs(url: str, params: dict[str, str], state_dir: Path) -> httpx.Response:
    """GET /api/v1/costs, or one line saying why not (never a traceback)."""
    try:
        response = httpx.get(f"{url}/api/v1/costs", params=params, timeout=COSTS_TIMEOUT_S)
        response.raise_for_status()
    except httpx.HTTPStatusError as exc:
        raise SystemExit(
            f"demo: {exc.request.url} answered {exc.response.status_code}: "
            f"{exc.response.text[:300]}; see {state_dir / 'processor.log'}"
        ) from None
    except httpx.HTTPError as exc:
        raise SystemExit(
            f"demo: no answer from {url}/api/v1/costs within {COSTS_TIMEOUT_S:.0f} s "
            f"({type(exc).__name__}); see {state_dir / 'processor.log'}"
        ) from None
    return response


def replay_fleet(env: dict[str, str], state_dir: Path, plans: list[ModelPlan]) -> int:
    """Both hosts replay the trace at once, each sending its share; the token events sent."""
    mix = ",".join(f"{p.model}:{p.capacity:g}" for p in plans)
    running: list[tuple[DemoHost, subprocess.Popen[bytes], Path]] = []
    for host in FLEET:
        summary = state_dir / f"replay-{host.name}.json"
        summary.unlink(missing_ok=True)
        cmd = [
            PY, "-m", "producers", "replay", "--format", "azure-trace", str(TRACE),
            "--speed", "max", "--end-now", "--fleet-share", "--seed", "0",
            "--host", host.name, "--gpu-seed-file", str(FLEET_DIR / host.seed_file),
            "--deployment", host.deployment, "--models", mix, "--summary-json", str(summary),
        ]  # fmt: skip
        print(f"  {host.name}: {' '.join(cmd[2:])}")
        log = (state_dir / f"replay-{host.name}.log").open("wb")
        # The fleet is the seed files', even on a host with GPUs of its own.
        env = {**env, "PRODUCER_GPU_SOURCES": "seed"}
        running.append(
            (host, subprocess.Popen(cmd, cwd=REPO, env=env, stderr=log, stdout=log), summary)
        )
    sent = 0
    for host, proc, summary in running:
        if proc.wait() != 0:
            raise SystemExit(
                f"producer {host.name} failed (exit {proc.returncode}); see "
                f"{state_dir / f'replay-{host.name}.log'}"
            )
        result = json.loads(summary.read_text())
        sent += int(result["token_events"])
        print(
            f"  {host.name}: sent {result['token_events']:,} token events, "
            f"{result['gpu_events']:,} GPU readings"
        )
    return sent


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
        # The processor's default, set here so the demo can say which k priced the tokens.
        "OUTPUT_TOKEN_WEIGHT": os.environ.get("OUTPUT_TOKEN_WEIGHT", "4"),
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
        health = wait_healthy(url, proc, state_dir / "processor.log")
        before = httpx.get(f"{url}/api/v1/stats", timeout=10).json()
        consumer = health["consumer"]
        print(
            f"healthy: {len(consumer['assigned_partitions'])} partitions assigned; "
            f"already stored: {before['token_usage']:,} token and "
            f"{before['gpu_metrics']:,} GPU documents"
        )

        plans = fleet_plan()
        say(f"replaying one real hour of LLM requests ({TRACE.name}, CC-BY 4.0) on two hosts")
        began = time.monotonic()
        sent = replay_fleet(env, state_dir, plans)

        say("waiting for the processor to store every event")
        target: int = before["token_usage"] + sent
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
        print(
            f"stored {counts['token_usage']:,} token and {counts['gpu_metrics']:,} GPU documents; "
            f"the hour took {time.monotonic() - began:.0f} s to replay and store"
        )

        say("the fleet, as the stream reports it (GET /gpu/info)")
        show_fleet(httpx.get(f"{url}/gpu/info", timeout=10).json())

        # The replayed hour ends now: ask for the last 62 minutes as one bucket.
        now = time.time()
        window = {
            "start": time.strftime("%Y-%m-%dT%H:%M:00Z", time.gmtime(now - 62 * 60)),
            "end": time.strftime("%Y-%m-%dT%H:%M:00Z", time.gmtime(now + 60)),
            "granularity": "all",
        }
        by_model = ask_costs(url, {**window, "group_by": "model"}, state_dir)
        say(f"what the hour cost, by model: GET {by_model.url}")
        show_table(by_model.json(), "model")
        print()
        show_summary(by_model.json(), float(env["OUTPUT_TOKEN_WEIGHT"]))
        print()
        show_check(by_model.json(), plans)

        by_tenant = ask_costs(url, {**window, "group_by": "tenant"}, state_dir)
        say(f"by tenant (who spent it): GET {by_tenant.url}")
        show_table(by_tenant.json(), "tenant")

        say("the same as JSON and CSV")
        query = "&".join(f"{k}={v}" for k, v in window.items())
        print(f"  curl -s '{url}/api/v1/costs?{query}&group_by=tenant,model'")
        print(f"  curl -s '{url}/api/v1/costs?{query}&group_by=model&format=csv'")
        print(f"  curl -s -H 'Accept: text/csv' '{url}/api/v1/costs?{query}&group_by=gpu'")
        say("one request's stored cost breakdown (the trace's first request)")
        print(f"  curl -s '{url}/api/v1/requests/{TRACE.stem}-0'")
        page = f"{url}/?start={window['start']}&end={window['end']}"
        say(f"the page: open {page}")
    except KeyboardInterrupt:
        print("\ninterrupted; stopping what this demo started")
        args.stop = True
    finally:
        if args.stop:
            stop_processor(state_dir)
            stack_down(state_dir)
        elif started_here:
            say(f"still running: the page {url}/  ·  API docs {url}/docs")
            print("stop it all with:  make down")
    return 0


def _other_port(taken: int) -> int:
    """A free port to suggest instead of ``taken``: 9090 if it is free, else any."""
    return 9090 if taken != 9090 and port_free(9090) else free_port()


if __name__ == "__main__":
    sys.exit(main())
