"""`make demo-proxy`: real OpenAI-SDK traffic through the usage-capture proxy, costed by tenant.

Starts the local stack (real Kafka + FerretDB) and the processor as `make demo` does, then a
fake OpenAI-compatible server (devtools.fake_openai) and `python -m producers proxy` in front
of it; sends chat completions with the official `openai` SDK for two tenants (team-a: plain
requests, team-b: streaming), waits until the processor stored them and prints the costs by
tenant. The proxy and the fake server are stopped at the end; the stack and the processor keep
running for you to query (`make down` stops them; `--stop` tears everything down).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from openai import OpenAI

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from devtools import processes  # noqa: E402
from devtools.ports import free_port, port_free  # noqa: E402
from devtools.waiting import WaitTimeout, wait_for  # noqa: E402
from scripts.demo import (  # noqa: E402
    say,
    stack_down,
    stack_up,
    start_processor,
    stop_processor,
    wait_healthy,
)

PY = sys.executable
KEYS = {"team-a": "sk-demo-team-a", "team-b": "sk-demo-team-b"}
STORE_TIMEOUT_S = 90.0


def start(cmd: list[str], env: dict[str, str], log: Path, url: str) -> processes.Spawned:
    started = processes.spawn(cmd, log=log, cwd=REPO, env=env)

    def answers() -> bool:
        if not started.id.alive():
            raise SystemExit(
                f"{' '.join(cmd[1:4])} exited{processes.exit_note(started.pid)}; see {log}"
            )
        try:
            httpx.get(url, timeout=2)
        except httpx.HTTPError:
            return False
        return True

    wait_for(url, answers, 30, 0.2)
    return started


def send(proxy_url: str, requests: int) -> int:
    """team-a: plain completions; team-b: streaming. Returns the requests sent."""
    a = OpenAI(base_url=f"{proxy_url}/v1", api_key=KEYS["team-a"], max_retries=0)
    b = OpenAI(base_url=f"{proxy_url}/v1", api_key=KEYS["team-b"], max_retries=0)
    prompt = "Explain in one paragraph what a GPU hour costs and why it matters."
    for i in range(requests):
        reply = a.chat.completions.create(
            model="fake-model",
            messages=[{"role": "user", "content": prompt}],
            max_tokens=64,
        )
        chunks = list(
            b.chat.completions.create(
                model="fake-model",
                messages=[{"role": "user", "content": prompt * 3}],
                max_tokens=256,
                stream=True,
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        usage_chunks = sum(1 for c in chunks if c.usage is not None)
        if i == 0:
            usage = reply.usage
            print(
                f"  team-a (plain):     id={reply.id} usage={usage.model_dump() if usage else None}"
            )
            print(
                f"  team-b (streaming): {len(text.split())} tokens streamed in {len(chunks)} "
                f"chunks, {usage_chunks} usage chunk(s) seen by the client (none asked)"
            )
    return 2 * requests


def show(report: dict[str, Any]) -> None:
    header = f"{'tenant':<16} {'requests':>8} {'tokens':>9} {'cost $':>10} {'$ / 1M tokens':>14}"
    print(header)
    print("-" * len(header))
    for r in report["rows"]:
        cost = r["idle_cost_usd"] if r["group"] == "(idle)" else r["cost_usd"]
        per_1m = r.get("cost_per_1m_tokens")
        shown = "-" if per_1m is None else f"${per_1m:,.2f} / 1M"
        print(f"{r['group']:<16} {r['requests']:>8} {r['tokens']:>9} {cost:>10.5f} {shown:>14}")
    print(
        "cost $ = the GPU's price x its reporting time, split by (output-weighted) token share; "
        "(idle) = reporting minutes with no tokens."
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
    parser.add_argument("--http-port", type=int, default=int(os.environ.get("HTTP_PORT") or 8080))
    parser.add_argument("--requests", type=int, default=20, help="requests per tenant")
    parser.add_argument("--stop", action="store_true", help="also stop the stack and processor")
    args = parser.parse_args(argv)
    state_dir: Path = args.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
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
    ours: list[processes.Spawned] = []
    try:
        stop_processor(state_dir)
        if not port_free(args.http_port):
            raise SystemExit(f"demo-proxy: port {args.http_port} is taken; set HTTP_PORT=...")
        say("local stack: Apache Kafka (KRaft) + FerretDB, as processes")
        stack_up(state_dir, args.kafka_listen, args.mongo_listen)
        say(f"processor on {url}")
        proc = start_processor(state_dir, env)
        wait_healthy(url, proc, state_dir / "processor.log")
        before = httpx.get(f"{url}/api/v1/stats", timeout=10).json()["token_usage"]

        fake_port, proxy_port = free_port(), free_port()
        fake_url, proxy_url = f"http://127.0.0.1:{fake_port}", f"http://127.0.0.1:{proxy_port}"
        say(f"fake OpenAI-compatible server on {fake_url} (devtools/fake_openai.py)")
        fake_cmd = [PY, "-m", "devtools.fake_openai", "--listen", f"127.0.0.1:{fake_port}"]
        ours.append(start(fake_cmd, env, state_dir / "fake-openai.log", f"{fake_url}/v1/models"))
        say(f"proxy on {proxy_url} -> {fake_url} (log: {state_dir / 'proxy.log'})")
        proxy_env = {
            **env,
            "PROXY_UPSTREAM": fake_url,
            "PROXY_LISTEN": f"127.0.0.1:{proxy_port}",
            "PROXY_API_KEYS": ",".join(f"{t}={k}" for t, k in KEYS.items()),
            "PRODUCER_HOST": "demo-inference-host",
            "PRODUCER_DEPLOYMENT": "fake-model=0",
            "PRODUCER_GPU_INTERVAL_S": "2",
        }
        proxy_cmd = [PY, "-m", "producers", "proxy"]
        ours.append(
            start(proxy_cmd, proxy_env, state_dir / "proxy.log", f"{proxy_url}/_proxy/health")
        )

        say(f"openai SDK: {args.requests} requests per tenant through the proxy")
        sent = send(proxy_url, args.requests)
        target = before + sent
        stored = before

        def all_stored() -> bool:
            nonlocal stored
            stored = httpx.get(f"{url}/api/v1/stats", timeout=10).json()["token_usage"]
            return bool(stored >= target)

        try:
            wait_for(f"{sent} usage events stored", all_stored, STORE_TIMEOUT_S, 0.5)
        except WaitTimeout:
            raise SystemExit(f"only {stored - before} of {sent} usage events stored") from None
        health = httpx.get(f"{proxy_url}/_proxy/health", timeout=5).json()
        publishing = health["publishing"]
        print(
            f"proxy health: {health['status']}, events delivered (usage + GPU readings) "
            f"{publishing['delivered']}, dropped {publishing['dropped_total']}"
        )
        start_ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
        report = httpx.get(
            f"{url}/api/v1/costs",
            params={"group_by": "tenant", "granularity": "day", "start": start_ts},
            timeout=30,
        )
        say(f"cost by tenant, last hour: GET {report.url}")
        report.raise_for_status()
        show(report.json())
    except KeyboardInterrupt:
        print("\ninterrupted; stopping what this demo started")
        args.stop = True
    finally:
        for started in reversed(ours):
            print(
                f"{started.cmdline[2]} pid={started.pid} {processes.stop(started.id, grace_s=20)}"
            )
        if args.stop:
            stop_processor(state_dir)
            stack_down(state_dir)
        else:
            say(f"still running: the stack and the processor ({url}); stop them with:  make down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
