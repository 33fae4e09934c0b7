"""The `proxy` phase of scripts/bench.py: latency the usage-capture proxy adds, and Kafka down.

The fake OpenAI upstream (devtools.fake_openai) and the proxy run as their own processes; one
client calls the upstream directly and through the proxy in turns, at a fixed total rate, so
both see the same machine at the same moment. Added latency = percentile through the proxy
minus the same percentile direct, for non-streaming (whole response) and streaming (whole
stream, 8 chunks) chat completions. Then a proxy whose Kafka does not exist serves the same
load: requests served, their latency, and the events dropped and counted by the proxy.
"""

from __future__ import annotations

import itertools
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from devtools import processes
from devtools.ports import free_port
from devtools.waiting import wait_for

PY = sys.executable
REPO = Path(__file__).resolve().parents[1]
BODY = {
    "model": "fake-model",
    "messages": [{"role": "user", "content": "a b c d"}],
    "max_tokens": 8,
}
STREAM_BODY = {**BODY, "stream": True}
# Calls per kind before measuring: connections open, code paths warm.
WARMUP = 20


def _start(cmd: list[str], env: dict[str, str], log: Path, url: str) -> processes.Spawned:
    started = processes.spawn(cmd, log=log, cwd=REPO, env=env, new_session=False)

    def up() -> bool:
        if not started.id.alive():
            raise RuntimeError(f"{cmd} exited; see {log}")
        try:
            httpx.get(url, timeout=1)
        except httpx.HTTPError:
            return False
        return True

    wait_for(f"{url} to answer", up, 30, 0.1)
    return started


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _call(client: httpx.Client, base: str, stream: bool) -> float:
    started = time.perf_counter()
    if stream:
        with client.stream("POST", f"{base}/v1/chat/completions", json=STREAM_BODY) as r:
            for _ in r.iter_bytes():
                pass
            r.raise_for_status()
    else:
        client.post(f"{base}/v1/chat/completions", json=BODY).raise_for_status()
    return (time.perf_counter() - started) * 1000.0


def _load(
    targets: dict[str, str], seconds: float, rate: float
) -> tuple[dict[tuple[str, bool], list[float]], int]:
    """Calls in turns over (target, streaming) at ``rate`` per second; latencies in ms."""
    samples: dict[tuple[str, bool], list[float]] = {
        (name, s): [] for name in targets for s in (False, True)
    }
    kinds = itertools.cycle(list(samples))
    errors = 0
    interval = 1.0 / rate
    with httpx.Client(timeout=10, headers={"Authorization": "Bearer bench"}) as client:
        for name in targets:  # warm up connections and code paths
            for s in (False, True):
                for _ in range(WARMUP):
                    _call(client, targets[name], s)
        start = time.perf_counter()
        n = 0
        while time.perf_counter() - start < seconds:
            due = start + n * interval
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            name, stream = next(kinds)
            try:
                samples[(name, stream)].append(_call(client, targets[name], stream))
            except httpx.HTTPError:
                errors += 1
            n += 1
    return samples, errors


def run(bootstrap: str, topic: str, state: Path, seconds: float, rate: float) -> dict[str, Any]:
    fake_port, proxy_port, down_port = free_port(), free_port(), free_port()
    fake_url = f"http://127.0.0.1:{fake_port}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "LOG_LEVEL": "WARNING"}
    proxy_env = {
        **env,
        "PROXY_UPSTREAM": fake_url,
        "KAFKA_BOOTSTRAP": bootstrap,
        "KAFKA_TOPIC": topic,
        "PRODUCER_DEPLOYMENT": "fake-model=0",
        "PROXY_GPU_READINGS": "false",
    }
    started: list[processes.Spawned] = []
    try:
        fake_cmd = [PY, "-m", "devtools.fake_openai", "--listen", f"127.0.0.1:{fake_port}"]
        log = state / "bench-fake-openai.log"
        started.append(_start(fake_cmd, env, log, f"{fake_url}/v1/models"))
        proxy_url = f"http://127.0.0.1:{proxy_port}"
        proxy_cmd = [PY, "-m", "producers", "proxy", "--listen", f"127.0.0.1:{proxy_port}"]
        log = state / "bench-proxy.log"
        started.append(_start(proxy_cmd, proxy_env, log, f"{proxy_url}/_proxy/health"))
        samples, errors = _load({"direct": fake_url, "proxy": proxy_url}, seconds, rate)
        health = httpx.get(f"{proxy_url}/_proxy/health", timeout=5).json()

        def drained() -> bool:
            body = httpx.get(f"{proxy_url}/_proxy/health", timeout=5).json()
            return bool(body["publishing"]["queued"] == 0)

        wait_for("the proxy's events sent", drained, 30)
        result: dict[str, Any] = {"seconds": seconds, "rate": rate, "errors": errors}
        for stream in (False, True):
            kind = "stream" if stream else "json"
            direct, proxied = samples[("direct", stream)], samples[("proxy", stream)]
            result[kind] = {
                "n": len(proxied),
                "direct_p50": statistics.median(direct),
                "direct_p99": _percentile(direct, 0.99),
                "proxy_p50": statistics.median(proxied),
                "proxy_p99": _percentile(proxied, 0.99),
            }
            r = result[kind]
            r["added_p50"] = r["proxy_p50"] - r["direct_p50"]
            r["added_p99"] = r["proxy_p99"] - r["direct_p99"]
        result["published"] = health["publishing"]
        processes.stop(started.pop().id, grace_s=20)

        # Kafka down: nothing listens on the bootstrap address.
        down_env = {**proxy_env, "KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
                    "PRODUCER_DELIVERY_TIMEOUT_MS": "2000"}  # fmt: skip
        down_url = f"http://127.0.0.1:{down_port}"
        down_cmd = [PY, "-m", "producers", "proxy", "--listen", f"127.0.0.1:{down_port}"]
        log = state / "bench-proxy-down.log"
        started.append(_start(down_cmd, down_env, log, f"{down_url}/_proxy/health"))
        down_seconds = max(5.0, seconds / 3)
        down_samples, down_errors = _load({"proxy": down_url}, down_seconds, rate / 2)
        # + the warm-up calls (WARMUP per kind), which were metered too.
        served = sum(len(v) for v in down_samples.values()) + 2 * WARMUP

        def settled() -> dict[str, Any] | None:
            body: dict[str, Any] = httpx.get(f"{down_url}/_proxy/health", timeout=5).json()
            p = body["publishing"]
            return body if p["queued"] == 0 and p["in_flight"] == 0 else None

        down_health = wait_for("the dropped events counted", settled, 30)
        metrics = httpx.get(f"{down_url}/_proxy/metrics", timeout=5).text
        counter = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("proxy_usage_events_dropped_total{")
        )
        all_down = [v for vs in down_samples.values() for v in vs]
        result["kafka_down"] = {
            "seconds": down_seconds,
            "served": served,
            "errors": down_errors,
            "p50": statistics.median(all_down),
            "p99": _percentile(all_down, 0.99),
            "status": down_health["status"],
            "dropped": down_health["publishing"]["dropped"],
            "dropped_total": down_health["publishing"]["dropped_total"],
            "dropped_metric": counter,
            "delivered": down_health["publishing"]["delivered"],
        }
        return result
    finally:
        for s in reversed(started):
            processes.stop(s.id, grace_s=20)


def lines(r: dict[str, Any]) -> list[str]:
    """Rows of the results table."""
    out = []
    for kind, what in (("json", "non-streaming"), ("stream", "streaming, 8 chunks")):
        k = r[kind]
        out.append(
            f"| proxy added latency, {what} chat completion, {r['rate']:.0f} req/s in turns "
            f"with direct calls for {r['seconds']:.0f} s ({k['n']:,} through the proxy) | "
            f"+{k['added_p50']:.2f} ms p50, +{k['added_p99']:.2f} ms p99 (proxy "
            f"{k['proxy_p50']:.2f} / {k['proxy_p99']:.2f} ms) | direct {k['direct_p50']:.2f} / "
            f"{k['direct_p99']:.2f} ms | - | p50 <= +1 ms, p99 <= +5 ms |"
        )
    d = r["kafka_down"]
    dropped = ", ".join(f"{k} {v}" for k, v in d["dropped"].items() if v)
    out.append(
        f"| proxy with Kafka down, {r['rate'] / 2:.0f} req/s for {d['seconds']:.0f} s | "
        f"{d['served']:,} served, {d['errors']} failed, "
        f"p50 {d['p50']:.2f} / p99 {d['p99']:.2f} ms; "
        f"{d['dropped_total']:,} events dropped ({dropped}), metric {d['dropped_metric']:.0f}, "
        f"health {d['status']} | - | - | every request served, every event counted |"
    )
    return out
