"""`make bench`: throughput, latency and memory of the pipeline, as ratios measured in one run.

Runs against the local stack (started if needed) and appends a dated section to
docs/benchmarks.md. Absolute numbers depend on the machine; the ratios compare our code with
baselines measured minutes apart on the same broker and server, which is what we can defend.

    python scripts/bench.py                   # everything (a few minutes)
    python scripts/bench.py --events 200000 --latency-seconds 60 --only drain,latency
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from pymongo import MongoClient

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from devtools import processes, stack  # noqa: E402
from devtools.events import gpu_event, token_event  # noqa: E402
from devtools.ports import free_port  # noqa: E402
from devtools.waiting import wait_for  # noqa: E402
from processor.cost import CostModel, PriceBook  # noqa: E402
from processor.pricing import Priced, Pricer  # noqa: E402
from processor.store import MongoStore  # noqa: E402
from schemas.contracts import decode, kafka_key, validate  # noqa: E402

PY = sys.executable
RESULTS = REPO / "docs" / "benchmarks.md"
STATE = REPO / ".state" / "bench-stack"
# A processor finishes its batch, commits and leaves the group on SIGTERM: seconds.
PROCESSOR_STOP_S = 30.0
RESULTS_HEADER = """# Benchmarks

Appended by `make bench` (`scripts/bench.py`), newest run last. Every ratio compares our code
with a baseline measured in the same run, on the same broker and server, on the same machine:
absolute figures vary between machines, the ratios are what we defend.

- **contract decode + validate**: `schemas.contracts.decode` (parse, normalise, validate) per
  event vs parsing the JSON alone.
- **producer**: `python -m producers run --rate 0` (process start included) vs a bare
  confluent-kafka loop producing pre-built payloads with the same settings.
- **processor drain**: one processor replica draining a pre-filled 12-partition topic, from its
  first stored batch to its last (`stored_at`), vs (a) a consume-only loop over the same topic and
  (b) raw `insert_many` of the same documents; goal >= 0.7 x min(a, b).
- **naive**: one message at a time (decode, cost, `insert_one`, synchronous commit).
- **latency**: `stored_at - ts` of every token event at a steady produce rate; `stored_at` is
  stamped once per batch, just before the write.
- **CPU per event**: the processor process's own CPU time (user + system, from `/proc` through
  psutil) from its first stored batch to its last, per event of the drain; with
  `BENCH_PROCESSOR_DIR=<another checkout>` the same driver runs that checkout's processor (how
  the code before a refactor is compared).
- **hostile drain**: one processor draining 50,000 messages of which one in ten is hostile
  (oversize, big and invalid near the 64 KiB limit, malformed JSON, an overflowing timestamp, a
  null key, a 5,000-byte key); peak RSS sampled every 50 ms, and a check that every good event
  was stored and every hostile one dead-lettered. `--hostile-variant NAME=VALUE` adds a run with
  other processor settings (e.g. `CONSUME_QUEUE_MAX_KB=16384`).
"""


def log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", flush=True)


def mixed_events(n: int, seed: int = 1) -> list[dict[str, Any]]:
    """~96% token events, ~4% GPU readings, over 16 GPUs on 4 hosts, timestamps ~now."""
    rng = random.Random(seed)
    gpus = [
        (f"bench-{h}", f"GPU-{uuid.UUID(int=rng.getrandbits(128))}")
        for h in range(4)
        for _ in range(4)
    ]
    base = datetime.now(UTC) - timedelta(seconds=n / 1000)
    events: list[dict[str, Any]] = []
    for i in range(n):
        host, gpu = gpus[i % len(gpus)]
        at = i / 1000
        if i % 25 == 0:
            events.append(gpu_event(host, gpu, at, price_per_hour_usd=3.2, base=base))
        else:
            events.append(
                token_event(
                    host,
                    gpu,
                    at,
                    rng.randint(50, 2000),
                    rng.randint(10, 600),
                    latency_ms=rng.uniform(100, 3000),
                    base=base,
                )
            )
    return events


def hostile_mix(n: int, every: int, seed: int = 2) -> list[tuple[bytes | None, bytes, bool]]:
    """(key, value, hostile?): valid events, and one in ``every`` of six hostile kinds.

    Half of the hostile ones are big (58-70 KiB, around MAX_MESSAGE_BYTES = 64 KiB): they are
    what weighs on memory, in librdkafka's prefetch queue, in the batch and in the letters.
    """
    rng = random.Random(seed)
    good = mixed_events(n, seed)
    out: list[tuple[bytes | None, bytes, bool]] = []
    for i, event in enumerate(good):
        key = kafka_key(event).encode()
        if i % every != every - 1:
            out.append((key, orjson.dumps(event), False))
            continue
        kind = (i // every) % 6
        if kind == 0:  # oversize: beyond the 64 KiB limit
            value = b'{"schema": "token.usage.v1", "x": "' + b"x" * rng.randint(66_000, 71_000)
            out.append((key, value + b'"}', True))
        elif kind == 1:  # big and invalid: under the limit, fails the contract
            out.append((key, orjson.dumps({**event, "model": "m" * rng.randint(59_000, 64_000)}),
                        True))  # fmt: skip
        elif kind == 2:  # malformed JSON
            out.append((key, b'{"schema": "token.usage.v1", "event_id": ', True))
        elif kind == 3:  # a timestamp that overflows when converted to UTC
            out.append((key, orjson.dumps({**event, "ts": "9999-12-31T23:59:59-01:00"}), True))
        elif kind == 4:  # a null key
            out.append((None, orjson.dumps(event), True))
        else:  # a 5,000-byte key
            out.append((b"k" * 5000, orjson.dumps(event), True))
    return out


class Bench:
    def __init__(self, bootstrap: str, mongo_url: str) -> None:
        self.bootstrap = bootstrap
        self.mongo_url = mongo_url
        self.admin = AdminClient({"bootstrap.servers": bootstrap})
        self.mongo: MongoClient[dict[str, Any]] = MongoClient(mongo_url)
        self.topics: list[str] = []
        self.dbs: list[str] = []
        self.children: list[processes.Spawned] = []
        self.results: dict[str, Any] = {}

    def topic(self, prefix: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.admin.create_topics([NewTopic(name, 12, 1)])[name].result(30)
        self.topics.append(name)
        return name

    def db(self, prefix: str) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        self.dbs.append(name)
        return name

    def indexed_db(self, prefix: str) -> str:
        """A fresh database with the processor's indexes: a baseline writes into the same
        shape of collection as the processor (every secondary index costs each insert)."""
        name = self.db(prefix)
        store = MongoStore(self.mongo_url, name)
        try:
            store.ensure_indexes()
        finally:
            store.close()
        return name

    def cleanup(self) -> None:
        """Stop the processors, drop the databases and topics made so far (idempotent)."""
        for child in self.children:  # a bench that failed half-way must not leave processors
            processes.stop(child.id, grace_s=PROCESSOR_STOP_S)
        self.children.clear()
        for name in self.dbs:
            self.mongo.drop_database(name)
        self.dbs.clear()
        if self.topics:
            for future in self.admin.delete_topics(self.topics).values():
                future.result(30)
            self.topics.clear()

    # --- producers ----------------------------------------------------------------------

    def bare_produce(
        self, topic: str, payloads: Sequence[tuple[str | bytes | None, bytes]]
    ) -> float:
        """A bare confluent-kafka loop with the producer's own settings; returns events/s."""
        producer = Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "compression.type": "lz4",
            }
        )
        producer.list_topics(timeout=30)  # connected before the clock starts, as ours is
        started = time.perf_counter()
        for key, value in payloads:
            while True:
                try:
                    producer.produce(topic, key=key, value=value)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
        assert producer.flush(60) == 0
        return len(payloads) / (time.perf_counter() - started)

    def run_producer(self, args: list[str], topic: str) -> float:
        """``python -m producers ARGS``; its own events/s (first send to last, start-up and
        connection excluded, as for the bare loop), from its JSON summary."""
        env = {**os.environ, "KAFKA_BOOTSTRAP": self.bootstrap, "KAFKA_TOPIC": topic}
        done = subprocess.run(
            [PY, "-m", "producers", *args, "--progress", "0", "--summary-json", "-"],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"producer failed:\n{done.stderr[-2000:]}")
        summary = orjson.loads(done.stdout)
        return float(summary["sent"]) / float(summary["elapsed_s"] + summary["flush_s"])

    def bench_producer(self, n: int) -> None:
        log(f"producer: bare confluent-kafka loop vs `python -m producers`, {n:,} events each")
        events = mixed_events(n, seed=2)
        payloads = [(kafka_key(e), orjson.dumps(e)) for e in events]
        bare = self.bare_produce(self.topic("bench-bare"), payloads)
        log(f"      bare loop {bare:,.0f}/s")
        synthetic = self.run_producer(
            ["run", "--count", str(n), "--rate", "0", "--gpu-interval", "10"],
            self.topic("bench-prod"),
        )
        log(f"      run (synthetic traffic) {synthetic:,.0f}/s: ratio {synthetic / bare:.2f}")
        replay_file = STATE / "bench-replay.jsonl"
        replay_file.write_bytes(b"".join(value + b"\n" for _key, value in payloads))
        replay = self.run_producer(
            ["replay", str(replay_file), "--speed", "max"], self.topic("bench-replay")
        )
        replay_file.unlink()
        log(f"      replay (the same events) {replay:,.0f}/s: ratio {replay / bare:.2f}")
        self.results["producer"] = {
            "bare_eps": bare,
            "producer_eps": synthetic,
            "ratio": synthetic / bare,
            "replay_eps": replay,
            "replay_ratio": replay / bare,
        }

    # --- the processor ------------------------------------------------------------------

    def start_processor(
        self, topic: str, db: str, log_path: Path, **settings: str
    ) -> tuple[processes.Spawned, str]:
        port = free_port()
        env = {
            **os.environ,
            **settings,
            "KAFKA_BOOTSTRAP": self.bootstrap,
            "KAFKA_TOPIC": topic,
            "KAFKA_GROUP_ID": f"bench-{uuid.uuid4().hex[:6]}",
            "MONGO_URL": self.mongo_url,
            "MONGO_DB": db,
            "HTTP_PORT": str(port),
            "LOG_LEVEL": "WARNING",
        }
        log_path.unlink(missing_ok=True)  # one log per run of the phase
        # Same session as the bench: a Ctrl-C reaches the processor too.
        # BENCH_PROCESSOR_DIR: run another checkout's processor (same venv, its own code first
        # on sys.path) against the same driver, e.g. the code before a refactor.
        code = Path(os.environ.get("BENCH_PROCESSOR_DIR") or REPO)
        proc = processes.spawn(
            [PY, "-m", "processor"], log=log_path, cwd=code, env=env, new_session=False
        )
        self.children.append(proc)
        url = f"http://127.0.0.1:{port}"
        wait_for(f"processor healthy (see {log_path})", lambda: _healthy(url), 90)
        return proc, url

    def bench_drain(self, n: int) -> None:
        log(f"drain: pre-filling a 12-partition topic with {n:,} mixed events")
        events = mixed_events(n)
        payloads = [(kafka_key(e), orjson.dumps(e)) for e in events]
        topic = self.topic("bench-drain")
        self.bare_produce(topic, payloads)

        log("  (a) consume-only loop over the same topic")
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "auto.offset.reset": "earliest",
                "group.id": f"bench-consume-{uuid.uuid4().hex[:6]}",
                "enable.auto.commit": False,
            }
        )
        consumer.subscribe([topic])
        seen, started, first_batch = 0, 0.0, 0
        deadline = time.monotonic() + 300
        while seen < n and time.monotonic() < deadline:
            batch = consumer.consume(1000, 1.0)
            if batch and not started:
                started = time.perf_counter()
                first_batch = len(batch)
            seen += sum(1 for m in batch if m.error() is None)
        consume_eps = (seen - first_batch) / (time.perf_counter() - started)
        consumer.close()
        log(f"      {consume_eps:,.0f} events/s")

        log("  processor (one replica) draining the backlog")
        db = self.db("bench_drain")
        tokens = self.mongo[db]["token_usage"]
        gpus = self.mongo[db]["gpu_metrics"]
        proc, url = self.start_processor(topic, db, STATE / "bench-processor.log")
        rss_peak = 0
        stop = threading.Event()

        def sample_rss() -> None:
            nonlocal rss_peak
            process = psutil.Process(proc.pid)
            while not stop.is_set():
                rss_peak = max(rss_peak, process.memory_info().rss)
                stop.wait(0.2)

        sampler = threading.Thread(target=sample_rss, daemon=True)
        sampler.start()
        # CPU of the processor process itself (user + system, from /proc through psutil) from
        # its first stored batch to the last: start-up and the group join are left out.
        wait_for("the first stored batch", lambda: _written(url) > 0, 120, every_s=0.05)
        cpu_start, written_start = _cpu_s(proc.pid), _written(url)
        # Progress from the processor's own counters: counting documents would load the server
        # the processor is writing to (FerretDB counts by scanning), which the baselines escape.
        wait_for("processor to store the backlog", lambda: _written(url) >= n, 900, every_s=0.5)
        cpu_used, cpu_events = _cpu_s(proc.pid) - cpu_start, _written(url) - written_start
        batches = _metric_sum(url, "pipeline_batch_size_count")
        stop.set()
        sampler.join()
        processes.stop(proc.id, grace_s=PROCESSOR_STOP_S)
        # Steady drain rate from the documents' own stored_at stamps (first to last batch), the
        # same footing as the consume-only loop (first to last message): start-up and the
        # group join are left out of both.
        stamps = [
            d["stored_at"]
            for coll in (tokens, gpus)
            for d in coll.find({}, {"stored_at": 1, "_id": 0})
        ]
        first, last = min(stamps), max(stamps)
        after_first = sum(1 for t in stamps if t > first)
        processor_eps = after_first / max((last - first).total_seconds(), 1e-3)
        cpu_us = cpu_used / max(cpu_events, 1) * 1e6
        log(
            f"      {processor_eps:,.0f} events/s, peak RSS {rss_peak / 2**20:.0f} MiB, "
            f"{batches:.0f} batches (mean {n / max(batches, 1):.0f} messages), "
            f"CPU {cpu_us:.0f} µs/event ({cpu_used:.1f} s for {cpu_events:,.0f} events)"
        )

        log("  (b) raw insert_many of the same documents into the same server")
        raw_db = self.mongo[self.indexed_db("bench_raw")]
        docs_t = list(tokens.find())
        docs_g = list(gpus.find())
        started = time.perf_counter()
        for coll, docs in (("token_usage", docs_t), ("gpu_metrics", docs_g)):
            for i in range(0, len(docs), 1000):
                raw_db[coll].insert_many(docs[i : i + 1000], ordered=False)
        insert_eps = (len(docs_t) + len(docs_g)) / (time.perf_counter() - started)
        log(f"      {insert_eps:,.0f} documents/s")

        floor = min(consume_eps, insert_eps)
        self.results["drain"] = {
            "events": n,
            "consume_only_eps": consume_eps,
            "insert_many_eps": insert_eps,
            "processor_eps": processor_eps,
            "ratio_vs_min": processor_eps / floor,
            "rss_peak_mib": rss_peak / 2**20,
            "cpu_us_per_event": cpu_us,
            "code": os.environ.get("BENCH_PROCESSOR_DIR") or "this checkout",
        }
        self.bench_naive(topic, min(n, 5000), processor_eps)
        # Drop the backlog's databases and topics before the next phase: hundreds of
        # thousands of documents left in the server would weigh on the latency run.
        self.cleanup()

    def bench_hostile(self, n: int, every: int, settings: list[dict[str, str]]) -> None:
        """Peak RSS of one processor draining ``n`` messages, one in ``every`` hostile."""
        payloads = hostile_mix(n, every)
        hostile = sum(1 for _key, _value, bad in payloads if bad)
        big = sum(1 for _key, value, bad in payloads if bad and len(value) > 10_000)
        log(f"hostile drain: {n:,} messages, {hostile:,} hostile ({big:,} of 58-70 KiB)")
        runs = [self._hostile_run(payloads, hostile, overrides) for overrides in settings]
        self.results["hostile"] = {"messages": n, "hostile": hostile, "big": big, "runs": runs}

    def _hostile_run(
        self,
        payloads: list[tuple[bytes | None, bytes, bool]],
        hostile: int,
        overrides: dict[str, str],
    ) -> dict[str, Any]:
        n = len(payloads)
        topic, dlq = self.topic("bench-hostile"), self.topic("bench-hostile-dlq")
        self.bare_produce(topic, [(key, value) for key, value, _bad in payloads])
        db = self.db("bench_hostile")
        proc, url = self.start_processor(
            topic, db, STATE / "bench-hostile-processor.log", KAFKA_DLQ_TOPIC=dlq, **overrides
        )
        peak, stop = 0, threading.Event()

        def sample() -> None:
            nonlocal peak
            process = psutil.Process(proc.pid)
            while not stop.is_set():
                peak = max(peak, process.memory_info().rss)
                stop.wait(0.05)

        def drained() -> bool:
            done = _written(url) + _metric_sum(url, "pipeline_events_dead_lettered_total")
            return done >= n

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.perf_counter()
        wait_for("the hostile backlog drained", drained, 900, every_s=0.2)
        seconds = time.perf_counter() - started
        stored = _written(url)
        lettered = _metric_sum(url, "pipeline_events_dead_lettered_total")
        stop.set()
        sampler.join()
        processes.stop(proc.id, grace_s=PROCESSOR_STOP_S)
        label = ", ".join(f"{k}={v}" for k, v in overrides.items()) or "defaults"
        log(
            f"      [{label}] peak RSS {peak / 2**20:.0f} MiB, {n / seconds:,.0f} msg/s, "
            f"stored {stored:,.0f} (expected {n - hostile:,}), dead-lettered "
            f"{lettered:,.0f} (expected {hostile:,})"
        )
        if stored != n - hostile or lettered != hostile:
            raise SystemExit("hostile drain: stored or dead-lettered counts are wrong")
        self.cleanup()
        return {"settings": label, "rss_peak_mib": peak / 2**20, "msg_s": n / seconds}

    def bench_naive(self, topic: str, n: int, processor_eps: float) -> None:
        log(f"  naive baseline: one message at a time (insert_one, then commit), {n:,} messages")
        db = self.mongo[self.indexed_db("bench_naive")]["token_usage"]
        # The processor's own event -> document step, one message at a time.
        pricer = Pricer(CostModel(PriceBook(0.85)), max_message_bytes=65536)
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "auto.offset.reset": "earliest",
                "group.id": f"bench-naive-{uuid.uuid4().hex[:6]}",
                "enable.auto.commit": False,
            }
        )
        consumer.subscribe([topic])
        done, started = 0, 0.0
        while done < n:
            msg = consumer.poll(1.0)
            if msg is None or msg.error() is not None:
                continue
            started = started or time.perf_counter()
            outcome = pricer.price(msg)
            if isinstance(outcome, Priced):
                db.database[outcome.collection].insert_one(outcome.doc)
            consumer.commit(message=msg, asynchronous=False)
            done += 1
        naive_eps = done / (time.perf_counter() - started)
        consumer.close()
        self.results["naive"] = {"naive_eps": naive_eps, "ratio": processor_eps / naive_eps}
        log(f"      {naive_eps:,.0f} events/s -> processor is {processor_eps / naive_eps:.1f}x")

    def bench_latency(self, seconds: int, rate: int) -> None:
        log(f"latency: steady {rate} events/s for {seconds} s through producer and processor")
        topic = self.topic("bench-latency")
        db = self.db("bench_latency")
        proc, url = self.start_processor(topic, db, STATE / "bench-latency-processor.log")
        # /health is ok before the group has assigned anything (a replica without partitions is
        # healthy); events produced before the assignment would measure the group join instead.
        wait_for("the processor to own all 12 partitions", lambda: _assigned(url) == 12, 60)
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP": self.bootstrap,
            "KAFKA_TOPIC": topic,
            "PRODUCER_PROGRESS_S": "15",
        }
        done = subprocess.run(
            [
                PY,
                "-m",
                "producers",
                "run",
                "--duration",
                str(seconds),
                "--rate",
                str(rate),
                "--gpu-interval",
                "5",
            ],
            env=env,
            cwd=REPO,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit("producer failed during the latency run")
        time.sleep(3)  # let the last batch land before reading
        processes.stop(proc.id, grace_s=PROCESSOR_STOP_S)
        docs = list(self.mongo[db]["token_usage"].find({}, {"ts_us": 1, "stored_at": 1}))
        if not docs:
            raise SystemExit("no documents stored in the latency run")
        pairs = sorted(
            (d["ts_us"], (d["stored_at"].timestamp() * 1e6 - d["ts_us"]) / 1000) for d in docs
        )
        lat = sorted(ms for _ts, ms in pairs)
        q = statistics.quantiles(lat, n=100)
        # p99 per 10 s of event time: tells a slow start from spikes spread over the run.
        first_ts = pairs[0][0]
        slices: dict[int, list[float]] = {}
        for ts, ms in pairs:
            slices.setdefault(int((ts - first_ts) // 10_000_000), []).append(ms)
        per_slice = [
            statistics.quantiles(v, n=100)[98] for _k, v in sorted(slices.items()) if len(v) > 100
        ]
        log("      p99 per 10 s: " + ", ".join(f"{p:.0f}" for p in per_slice) + " ms")
        self.results["latency_slices"] = per_slice
        self.results["latency"] = {
            "events": len(lat),
            "p50_ms": q[49],
            "p99_ms": q[98],
            "rate": rate,
            "seconds": seconds,
        }
        log(f"      {len(lat):,} events: p50 {q[49]:.0f} ms, p99 {q[98]:.0f} ms (goal p99 <= 250)")

    def bench_validation(self, n: int = 100_000) -> None:
        log("validation: contract checks per second (decode + validate, hot path)")
        raws = [orjson.dumps(e) for e in mixed_events(n, seed=3)]
        started = time.perf_counter()
        for raw in raws:
            decode(raw)
        decode_eps = n / (time.perf_counter() - started)
        events = [orjson.loads(r) for r in raws]
        started = time.perf_counter()
        for event in events:
            validate(event)
        validate_eps = n / (time.perf_counter() - started)
        started = time.perf_counter()
        for raw in raws:
            orjson.loads(raw)
        parse_eps = n / (time.perf_counter() - started)
        self.results["validation"] = {
            "decode_eps": decode_eps,
            "validate_eps": validate_eps,
            "parse_only_eps": parse_eps,
        }
        log(
            f"      decode+validate {decode_eps:,.0f}/s, validate {validate_eps:,.0f}/s, "
            f"JSON parse alone {parse_eps:,.0f}/s"
        )


def _setting(pair: str) -> tuple[str, str]:
    name, _, value = pair.partition("=")
    return name, value


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (psutil reads /proc/<pid>/stat)."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def _metric_sum(url: str, name: str) -> float:
    """Sum of every sample of ``name`` (all label sets) on the processor's /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and line[len(name)] in " {"
    )


def _written(url: str) -> float:
    return _metric_sum(url, "pipeline_events_written_total") + _metric_sum(
        url, "pipeline_events_duplicate_total"
    )


def _assigned(url: str) -> int:
    try:
        body = httpx.get(f"{url}/health", timeout=5).json()
        return len(body["consumer"]["assigned_partitions"])
    except (httpx.HTTPError, ValueError, KeyError):
        return 0


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def record(results: dict[str, Any], args: argparse.Namespace) -> None:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"\n## Run of {now}",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()};"
        " Kafka 3.9.1 (KRaft, one node) and FerretDB 1.24.2 (SQLite) on loopback, "
        f"all on the same machine. Command: `python scripts/bench.py {' '.join(args.argv)}`.",
        "",
        "| measure | ours | baseline | ratio | goal |",
        "| --- | --- | --- | --- | --- |",
    ]
    if "validation" in results:
        v = results["validation"]
        lines.append(
            f"| contract decode + validate | {v['decode_eps']:,.0f} ev/s | JSON parse "
            f"alone {v['parse_only_eps']:,.0f} ev/s | "
            f"{v['decode_eps'] / v['parse_only_eps']:.2f} | hot-path fast |"
        )
    if "producer" in results:
        p = results["producer"]
        lines.append(
            f"| producer `run --rate 0` (synthetic traffic) | {p['producer_eps']:,.0f} ev/s | "
            f"bare confluent-kafka loop {p['bare_eps']:,.0f} ev/s | {p['ratio']:.2f} | >= 0.8 |"
        )
        lines.append(
            f"| producer `replay --speed max` (the bare loop's events) | "
            f"{p['replay_eps']:,.0f} ev/s | the same bare loop | {p['replay_ratio']:.2f} | - |"
        )
    if "drain" in results:
        d = results["drain"]
        lines.append(
            f"| processor drain of {d['events']:,} events | {d['processor_eps']:,.0f} "
            f"ev/s | min(consume-only {d['consume_only_eps']:,.0f}, insert_many "
            f"{d['insert_many_eps']:,.0f}) | {d['ratio_vs_min']:.2f} | >= 0.7 |"
        )
        lines.append(
            f"| processor peak RSS while draining | {d['rss_peak_mib']:.0f} MiB | - | - | bounded |"
        )
        lines.append(
            f"| processor CPU per 1,000 events while draining ({d['code']}) | "
            f"{d['cpu_us_per_event']:.0f} ms | - | - | no worse than before |"
        )
    if "naive" in results:
        nv = results["naive"]
        lines.append(
            f"| processor vs naive (insert_one + commit per message) | - | "
            f"{nv['naive_eps']:,.0f} ev/s | {nv['ratio']:.1f}x | >= 10x |"
        )
    if "hostile" in results:
        h = results["hostile"]
        for run in h["runs"]:
            lines.append(
                f"| hostile drain: {h['messages']:,} messages, {h['hostile']:,} hostile "
                f"({h['big']:,} of 58-70 KiB), {run['settings']} | peak RSS "
                f"{run['rss_peak_mib']:.0f} MiB, {run['msg_s']:,.0f} msg/s | - | - | bounded |"
            )
    if "latency" in results:
        la = results["latency"]
        lines.append(
            f"| end-to-end latency at {la['rate']} ev/s for {la['seconds']} s "
            f"({la['events']:,} events) | p50 {la['p50_ms']:.0f} ms, p99 "
            f"{la['p99_ms']:.0f} ms | - | - | p99 <= 250 ms |"
        )
        slices = ", ".join(f"{p:.0f}" for p in results.get("latency_slices", []))
        lines.append(f"| latency p99 per 10 s of that run | {slices} ms | - | - | - |")
    print("\n".join(lines), flush=True)
    if not RESULTS.exists():
        RESULTS.write_text(RESULTS_HEADER, encoding="utf-8")
    with RESULTS.open("a", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    log(f"results appended to {RESULTS}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmarks of the pipeline (make bench).")
    parser.add_argument("--events", type=int, default=200_000, help="backlog size for the drain")
    parser.add_argument("--producer-events", type=int, default=100_000)
    parser.add_argument("--latency-seconds", type=int, default=60)
    parser.add_argument("--latency-rate", type=int, default=1000)
    parser.add_argument(
        "--only",
        default="validation,producer,drain,latency,hostile",
        help="comma-separated subset",
    )
    parser.add_argument("--hostile-events", type=int, default=50_000)
    parser.add_argument(
        "--hostile-variant",
        dest="hostile_variants",
        action="append",
        default=[],
        help="extra processor settings for another hostile run, e.g. CONSUME_QUEUE_MAX_KB=16384",
    )
    args = parser.parse_args(argv)
    args.argv = argv if argv is not None else sys.argv[1:]
    wanted = set(args.only.split(","))
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP")
    mongo_url = os.environ.get("MONGO_URL")
    started_stack = False
    if not (bootstrap and mongo_url):
        STATE.mkdir(parents=True, exist_ok=True)
        kafka_listen, mongo_listen = "127.0.0.1:19092", "127.0.0.1:37017"
        log(f"starting a private local stack ({kafka_listen}, {mongo_listen})")
        stack.up(STATE, kafka_listen=kafka_listen, mongo_listen=mongo_listen)
        bootstrap, mongo_url = kafka_listen, f"mongodb://{mongo_listen}/"
        started_stack = True
    bench = Bench(bootstrap, mongo_url)
    try:
        if "validation" in wanted:
            bench.bench_validation()
        if "producer" in wanted:
            bench.bench_producer(args.producer_events)
        if "drain" in wanted:
            bench.bench_drain(args.events)
        if "latency" in wanted:
            bench.bench_latency(args.latency_seconds, args.latency_rate)
        if "hostile" in wanted:
            variants: list[dict[str, str]] = [{}]
            for variant in args.hostile_variants:
                variants.append(dict(_setting(pair) for pair in variant.split(",") if pair))
            bench.bench_hostile(args.hostile_events, 10, variants)
        record(bench.results, args)
    finally:
        bench.cleanup()
        if started_stack:
            for server, how in stack.down(STATE).items():
                log(f"stack: {server} {how}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
