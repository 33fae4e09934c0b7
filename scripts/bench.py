"""`make bench`: throughput, latency and memory of the pipeline, as ratios measured in one run.

Runs against the local stack (started if needed) and appends a dated section to
docs/benchmarks.md. Absolute numbers depend on the machine; the ratios compare our code with
baselines measured minutes apart on the same broker and server, which is what we can defend.

    python scripts/bench.py                   # every phase (a few minutes)
    python scripts/bench.py --events 200000 --latency-seconds 60 --only drain,latency
    python scripts/bench.py --only hostile --hostile-variant CONSUME_BATCH_SIZE=250
    python scripts/bench.py --only cpu --baseline-repo ../wt-old   # CPU/event: this vs old code

Phases: validation, producer, drain, latency, hostile, proxy (scripts/bench_proxy.py), and cpu
(only with --baseline-repo).
--processor-repo DIR runs another checkout's processor (its .venv if it has one) in every phase.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import platform
import random
import shlex
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
from confluent_kafka import Consumer, Producer, TopicPartition
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
from processor.cost import CostModel, OutputWeights, PriceBook  # noqa: E402
from processor.pricing import Priced, Pricer  # noqa: E402
from processor.store import MongoStore  # noqa: E402
from schemas.contracts import decode, kafka_key, validate  # noqa: E402
from scripts import bench_proxy  # noqa: E402

PY = sys.executable
RESULTS = REPO / "docs" / "benchmarks.md"
STATE = REPO / ".state" / "bench-stack"
# A processor finishes its batch, commits and leaves the group on SIGTERM: seconds.
PROCESSOR_STOP_S = 30.0
PHASES = ("validation", "producer", "drain", "latency", "hostile", "proxy", "cpu")
# The processor's MAX_MESSAGE_BYTES default: hostile values are sized around it.
MAX_MESSAGE_BYTES = 65536
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# How often a processor's RSS and CPU are sampled while it drains.
SAMPLE_S = 0.05
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
- **CPU per 1,000 events**: the processor process's own CPU time (utime + stime from
  `/proc/<pid>/stat`, sampled every 50 ms) over the drain window above (first stored batch to
  last), per event stored in that window; not wall time. `cpu` phase (`--baseline-repo DIR`):
  the same pre-filled topic drained alternately by this checkout's processor and DIR's (e.g. a
  `git worktree` of the code before a refactor, run by its own `.venv`), `--cpu-rounds` times
  each; medians and their ratio.
- **hostile drain**: one processor draining a topic where one message in ten is hostile
  (oversize values over MAX_MESSAGE_BYTES = 64 KiB, invalid values just under it, malformed JSON
  and garbage, out-of-range timestamps, null / 5,000-byte / wrong keys); peak RSS sampled every
  50 ms, drain rate, and a check that exactly the good events were stored and exactly the
  hostile messages dead-lettered. `--hostile-variant NAME=VALUE,...` adds a run with other
  processor settings (environment variables).
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


@dataclass(frozen=True)
class Hostile:
    """One hostile message: its key, its value, and what kind of hostile it is."""

    kind: str
    key: bytes | None
    value: bytes | None


# Kind -> share of the hostile messages. Four in ten are big (around MAX_MESSAGE_BYTES): those
# weigh on memory; the others are the cheap ways to be wrong.
HOSTILE_KINDS: dict[str, float] = {
    "oversize (64 KiB + 1 to 96 KiB)": 0.2,
    "invalid, 60 to 64 KiB (extra field)": 0.2,
    "malformed JSON (truncated)": 0.1,
    "garbage: binary, empty, null value, non-object, wrong types": 0.1,
    "timestamp out of range (9999-12-31T23:59:59-01:00, ...)": 0.1,
    "null key": 0.1,
    "5,000-byte key": 0.1,
    "another GPU's key": 0.1,
}
_BAD_TS = (
    "9999-12-31T23:59:59-01:00",
    "0001-01-01T00:00:00+01:00",
    "2100-01-01T00:00:00Z",
    "1969-12-31T23:59:59Z",
)


def _padded(event: dict[str, Any], size: int, rng: random.Random) -> bytes:
    """``event`` with an extra ``blob`` field (incompressible base64) making it ``size`` bytes."""
    bare = len(orjson.dumps({**event, "blob": ""}))
    blob = base64.b64encode(rng.randbytes(size)).decode()[: max(0, size - bare)]
    value = orjson.dumps({**event, "blob": blob})
    assert len(value) == size, (len(value), size)
    return value


def hostile_messages(n: int, seed: int = 7) -> list[Hostile]:
    """``n`` hostile messages in the HOSTILE_KINDS shares, built on events of their own (their
    event ids are never a good event's)."""
    rng = random.Random(seed)
    base = mixed_events(n, seed=seed)
    kinds = [kind for kind, share in HOSTILE_KINDS.items() for _ in range(round(n * share))]
    kinds = (kinds + list(HOSTILE_KINDS))[:n]
    out: list[Hostile] = []
    for i, (kind, event) in enumerate(zip(kinds, base, strict=False)):
        key: bytes | None = kafka_key(event).encode()
        value: bytes | None
        if kind.startswith("oversize"):
            size = MAX_MESSAGE_BYTES + 1 if i % 10 == 0 else rng.randint(66_000, 96 * 1024)
            value = _padded(event, size, rng)
        elif kind.startswith("invalid"):
            size = MAX_MESSAGE_BYTES if i % 10 == 0 else rng.randint(60 * 1024, MAX_MESSAGE_BYTES)
            value = _padded(event, size, rng)
        elif kind.startswith("malformed"):
            raw = orjson.dumps(event)
            value = raw[: rng.randint(1, len(raw) - 1)]
        elif kind.startswith("garbage"):
            value = (
                rng.randbytes(rng.randint(1, 512)),
                b"",
                None,
                b'["token.usage.v1"]',
                orjson.dumps({**event, "input_tokens": "12", "output_tokens": -1}),
            )[i % 5]
        elif kind.startswith("timestamp"):
            value = orjson.dumps({**event, "ts": _BAD_TS[i % len(_BAD_TS)]})
        elif kind == "null key":
            key, value = None, orjson.dumps(event)
        elif kind.startswith("5,000"):
            key, value = b"k" * 5000, orjson.dumps(event)
        else:
            other = base[(i + 1) % len(base)]  # a GPU of the next event: another GPU's key
            if kafka_key(other) == kafka_key(event):
                other = {**other, "gpu_uuid": other["gpu_uuid"] + "-x"}
            key, value = kafka_key(other).encode(), orjson.dumps(event)
        out.append(Hostile(kind, key, value))
    return out


def hostile_mix(n: int, every: int, seed: int = 7) -> tuple[list[dict[str, Any]], list[Hostile]]:
    """The good events and the hostile messages of an ``n``-message topic, one in ``every``
    hostile; ``interleave`` puts them in topic order."""
    hostile = hostile_messages(n // every, seed)
    good = mixed_events(n - len(hostile), seed=seed + 1)
    return good, hostile


def interleave(
    good: list[dict[str, Any]], hostile: list[Hostile], seed: int = 7
) -> list[tuple[bytes | None, bytes | None]]:
    """Good events in order, hostile ones at random places among them (deterministic)."""
    rng = random.Random(seed)
    slots = sorted(rng.sample(range(len(good) + len(hostile)), len(hostile)))
    rng.shuffle(hostile := list(hostile))
    out: list[tuple[bytes | None, bytes | None]] = []
    gi = hi = 0
    for position in range(len(good) + len(hostile)):
        if hi < len(slots) and slots[hi] == position:
            out.append((hostile[hi].key, hostile[hi].value))
            hi += 1
        else:
            out.append((kafka_key(good[gi]).encode(), orjson.dumps(good[gi])))
            gi += 1
    return out


def _digest(key: bytes | None, value: bytes | None) -> str:
    h = hashlib.sha1(usedforsecurity=False)
    for part in (key, value):
        h.update(b"N" if part is None else b"B%d:" % len(part) + part)
    return h.hexdigest()


@dataclass
class Samples:
    """A process's RSS and CPU (utime + stime from /proc/<pid>/stat) every SAMPLE_S seconds."""

    pid: int
    times: list[float] = field(default_factory=list)  # time.time()
    cpu_s: list[float] = field(default_factory=list)
    rss_peak: int = 0
    rss_last: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Samples:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _sample(self) -> None:
        process = psutil.Process(self.pid)
        while not self._stop.is_set():
            try:
                rss = process.memory_info().rss
                cpu = _proc_cpu_s(self.pid)
            except (psutil.Error, OSError):
                return  # the process is gone
            self.rss_peak, self.rss_last = max(self.rss_peak, rss), rss
            self.times.append(time.time())
            self.cpu_s.append(cpu)
            self._stop.wait(SAMPLE_S)

    def cpu_at(self, at: float) -> float:
        """CPU seconds used by ``at`` (a time.time()), interpolated between two samples."""
        t, c = self.times, self.cpu_s
        if not t:
            raise SystemExit(f"no CPU sample of pid {self.pid}")
        if at <= t[0]:
            return c[0]
        for i in range(1, len(t)):
            if at <= t[i]:
                share = (at - t[i - 1]) / max(t[i] - t[i - 1], 1e-9)
                return c[i - 1] + share * (c[i] - c[i - 1])
        return c[-1]


@dataclass(frozen=True)
class Drained:
    """One processor's drain of a backlog, measured on the stored documents' stamps."""

    events_per_s: float
    cpu_ms_per_1000: float  # = µs per event
    cpu_s: float  # in the window
    window_s: float
    events_in_window: int
    cores: float  # cpu_s / window_s: how busy the process was
    rss_peak_mib: float
    rss_end_mib: float
    batches: float
    code: str


def _proc_cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` in seconds, from /proc/<pid>/stat (fields 14 and 15)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rindex(b")") + 2 :].split()  # from field 3 (state) on
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _code_label(repo: Path) -> str:
    """``this checkout`` or ``<dir> @ <commit>``, ``+ local changes`` if its tree is dirty."""
    where = "this checkout" if repo.resolve() == REPO else str(repo)
    git = ["git", "-C", str(repo)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
    )
    label = f"{where} @ {head.stdout.strip() or '?'}"
    return label + (" + local changes" if dirty.stdout.strip() else "")


class Bench:
    def __init__(self, bootstrap: str, mongo_url: str, processor_repo: Path = REPO) -> None:
        self.bootstrap = bootstrap
        self.mongo_url = mongo_url
        self.processor_repo = processor_repo
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
        self, topic: str, payloads: Sequence[tuple[str | bytes | None, bytes | None]]
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
        self,
        topic: str,
        db: str,
        log_path: Path,
        *,
        repo: Path | None = None,
        settings: dict[str, str] | None = None,
    ) -> tuple[processes.Spawned, str]:
        """``python -m processor`` of ``repo`` (default: --processor-repo, else this checkout),
        by that checkout's own .venv if it has one, else by the bench's interpreter (a checkout's
        own code comes first on sys.path either way: it is the working directory)."""
        repo = repo or self.processor_repo
        python = repo / ".venv" / "bin" / "python"
        port = free_port()
        env = {
            **os.environ,
            **(settings or {}),
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
        proc = processes.spawn(
            [str(python) if python.exists() else PY, "-m", "processor"],
            log=log_path,
            cwd=repo,
            env=env,
            new_session=False,
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
        drained = self.processor_drain(topic, db, n, STATE / "bench-processor.log")
        tokens = self.mongo[db]["token_usage"]
        gpus = self.mongo[db]["gpu_metrics"]
        processor_eps = drained.events_per_s

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
            "rss_peak_mib": drained.rss_peak_mib,
            "cpu_ms_per_1000": drained.cpu_ms_per_1000,
            "cores": drained.cores,
            "code": drained.code,
        }
        self.bench_naive(topic, min(n, 5000), processor_eps)
        # Drop the backlog's databases and topics before the next phase: hundreds of
        # thousands of documents left in the server would weigh on the latency run.
        self.cleanup()

    def processor_drain(
        self, topic: str, db: str, n: int, log_path: Path, repo: Path | None = None
    ) -> Drained:
        """One processor of ``repo`` drains ``n`` events of ``topic`` into ``db``: its steady
        rate, and its own CPU time over the same window (first stored batch to last)."""
        repo = repo or self.processor_repo
        proc, url = self.start_processor(topic, db, log_path, repo=repo)
        samples = Samples(proc.pid).start()
        # Progress from the processor's own counters: counting documents would load the server
        # the processor is writing to (FerretDB counts by scanning), which the baselines escape.
        wait_for("processor to store the backlog", lambda: _written(url) >= n, 900, every_s=0.5)
        batches = _metric_sum(url, "pipeline_batch_size_count")
        samples.stop()
        processes.stop(proc.id, grace_s=PROCESSOR_STOP_S)
        # Steady drain rate from the documents' own stored_at stamps (first to last batch), the
        # same footing as the consume-only loop (first to last message): start-up and the
        # group join are left out of both. The CPU is read over that same window.
        stamps = [
            d["stored_at"].replace(tzinfo=UTC).timestamp()
            for coll in ("token_usage", "gpu_metrics")
            for d in self.mongo[db][coll].find({}, {"stored_at": 1, "_id": 0})
        ]
        first, last = min(stamps), max(stamps)
        after_first = sum(1 for t in stamps if t > first)
        window = max(last - first, 1e-3)
        cpu = samples.cpu_at(last) - samples.cpu_at(first)
        drained = Drained(
            events_per_s=after_first / window,
            cpu_ms_per_1000=cpu / max(after_first, 1) * 1e6,
            cpu_s=cpu,
            window_s=window,
            events_in_window=after_first,
            cores=cpu / window,
            rss_peak_mib=samples.rss_peak / 2**20,
            rss_end_mib=samples.rss_last / 2**20,
            batches=batches,
            code=_code_label(repo),
        )
        log(
            f"      [{drained.code}] {drained.events_per_s:,.0f} events/s, CPU "
            f"{drained.cpu_ms_per_1000:.1f} ms per 1,000 events ({cpu:.2f} s over "
            f"{window:.1f} s = {drained.cores:.2f} cores), peak RSS {drained.rss_peak_mib:.0f} "
            f"MiB, {batches:.0f} batches (mean {n / max(batches, 1):.0f} messages)"
        )
        return drained

    def bench_cpu(self, n: int, baseline: Path, rounds: int) -> None:
        """CPU per event of this checkout's processor vs ``baseline``'s, draining the same
        pre-filled topic in turns (ABAB...: drift of the machine hits both alike)."""
        this = self.processor_repo
        log(f"cpu: {rounds} x 2 drains of {n:,} events: {this} vs {baseline}, in turns")
        events = mixed_events(n)
        topic = self.topic("bench-cpu")
        self.bare_produce(topic, [(kafka_key(e), orjson.dumps(e)) for e in events])
        runs: dict[str, list[Drained]] = {"this": [], "baseline": []}
        for r in range(rounds):
            order = [("this", this), ("baseline", baseline)]
            for name, repo in order if r % 2 == 0 else order[::-1]:
                db = self.db(f"bench_cpu_{name}")
                runs[name].append(
                    self.processor_drain(
                        topic, db, n, STATE / f"bench-cpu-{name}-processor.log", repo=repo
                    )
                )
                self.mongo.drop_database(db)
        cpu = {name: statistics.median(d.cpu_ms_per_1000 for d in ds) for name, ds in runs.items()}
        med: dict[str, Any] = {
            name: {
                "code": drains[0].code,
                "cpu_ms_per_1000": cpu[name],
                "eps": statistics.median(d.events_per_s for d in drains),
                "cores": statistics.median(d.cores for d in drains),
                "all_cpu": [d.cpu_ms_per_1000 for d in drains],
                "all_eps": [d.events_per_s for d in drains],
            }
            for name, drains in runs.items()
        }
        ratio = cpu["this"] / cpu["baseline"]
        log(
            f"      CPU per 1,000 events, median of {rounds}: this {cpu['this']:.1f} ms, "
            f"baseline {cpu['baseline']:.1f} ms: ratio {ratio:.2f}"
        )
        self.results["cpu"] = {"events": n, "rounds": rounds, "ratio": ratio, **med}
        self.cleanup()

    def bench_hostile(self, n: int, every: int, variants: list[dict[str, str]]) -> None:
        """Peak RSS and drain rate of one processor draining ``n`` messages, one in ``every``
        hostile, once per settings variant; exactly the good events stored, exactly the hostile
        messages dead-lettered."""
        good, hostile = hostile_mix(n, every)
        payloads = interleave(good, hostile)
        big = sum(1 for h in hostile if h.value is not None and len(h.value) > 50_000)
        hostile_bytes = sum(len(h.value or b"") + len(h.key or b"") for h in hostile)
        total_bytes = sum(len(v or b"") + len(k or b"") for k, v in payloads)
        log(
            f"hostile drain: {n:,} messages ({total_bytes / 2**20:.0f} MiB), {len(hostile):,} "
            f"hostile ({big:,} of 60-96 KiB; {hostile_bytes / 2**20:.0f} MiB)"
        )
        runs = [self._hostile_run(payloads, good, hostile, variant) for variant in variants]
        self.results["hostile"] = {
            "messages": n,
            "hostile": len(hostile),
            "big": big,
            "mib": total_bytes / 2**20,
            "kinds": Counter(h.kind for h in hostile),
            "runs": runs,
        }

    def _hostile_run(
        self,
        payloads: list[tuple[bytes | None, bytes | None]],
        good: list[dict[str, Any]],
        hostile: list[Hostile],
        settings: dict[str, str],
    ) -> dict[str, Any]:
        n = len(payloads)
        topic, dlq = self.topic("bench-hostile"), self.topic("bench-hostile-dlq")
        self.bare_produce(topic, payloads)
        db = self.db("bench_hostile")
        label = ", ".join(f"{k}={v}" for k, v in settings.items()) or "defaults"
        proc, url = self.start_processor(
            topic,
            db,
            STATE / "bench-hostile-processor.log",
            settings={**settings, "KAFKA_DLQ_TOPIC": dlq},
        )
        samples = Samples(proc.pid).start()

        def done() -> float:
            return _written(url) + _metric_sum(url, "pipeline_events_dead_lettered_total")

        wait_for("the hostile backlog drained", lambda: done() >= n, 900, every_s=0.5)
        samples.stop()
        lettered_metric = _metric_sum(url, "pipeline_events_dead_lettered_total")
        batches = _metric_sum(url, "pipeline_batch_size_count")
        processes.stop(proc.id, grace_s=PROCESSOR_STOP_S)
        # Rate on the stored documents' stamps (first batch to last), as in the drain; hostile
        # messages are spread evenly, so messages/s = good events/s x n / good.
        stamps = [
            d["stored_at"].replace(tzinfo=UTC).timestamp()
            for coll in ("token_usage", "gpu_metrics")
            for d in self.mongo[db][coll].find({}, {"stored_at": 1, "_id": 0})
        ]
        window = max(max(stamps) - min(stamps), 1e-3)
        msg_s = sum(1 for t in stamps if t > min(stamps)) / window * n / len(good)
        # Exactly the good events stored, exactly the hostile messages dead-lettered.
        stored = {
            str(d["_id"])
            for coll in ("token_usage", "gpu_metrics")
            for d in self.mongo[db][coll].find({}, {"_id": 1})
        }
        missing = {e["event_id"] for e in good} - stored
        extra = stored - {e["event_id"] for e in good}
        letters = self.read_topic(dlq)
        wanted = Counter(_digest(h.key, h.value) for h in hostile)
        got = Counter(_digest(k, v) for k, v in letters)
        run = {
            "settings": label,
            "rss_peak_mib": samples.rss_peak / 2**20,
            "rss_end_mib": samples.rss_last / 2**20,
            "msg_s": msg_s,
            "batches": batches,
            "stored": len(stored),
            "good": len(good),
            "dead_lettered": len(letters),
            "hostile": len(hostile),
            "ok": not missing and not extra and got == wanted,
        }
        log(
            f"      [{label}] peak RSS {run['rss_peak_mib']:.0f} MiB (at the end "
            f"{run['rss_end_mib']:.0f}), {msg_s:,.0f} msg/s, {batches:,.0f} batches (mean "
            f"{n / max(batches, 1):,.0f}); stored {len(stored):,} of "
            f"{len(good):,} good, dead-lettered {len(letters):,} of {len(hostile):,} hostile "
            f"(metric {lettered_metric:,.0f}): {'ok' if run['ok'] else 'WRONG'}"
        )
        if not run["ok"]:
            kinds = Counter(h.kind for h in hostile if wanted[_digest(h.key, h.value)] > got[
                _digest(h.key, h.value)])  # fmt: skip
            raise SystemExit(
                f"hostile drain [{label}]: {len(missing)} good events not stored, {len(extra)} "
                f"unexpected documents, dead letters differ from the hostile messages "
                f"(missing by kind: {dict(kinds)})"
            )
        self.mongo.drop_database(db)
        self.cleanup()
        return run

    def read_topic(self, topic: str) -> list[tuple[bytes | None, bytes | None]]:
        """Every (key, value) of ``topic``, from the start to the high watermarks."""
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"bench-read-{uuid.uuid4().hex[:6]}",
                "enable.auto.commit": False,
            }
        )
        try:
            parts = consumer.list_topics(topic, timeout=30).topics[topic].partitions
            ends = {
                p: consumer.get_watermark_offsets(TopicPartition(topic, p), 30)[1] for p in parts
            }
            consumer.assign([TopicPartition(topic, p, 0) for p, end in ends.items() if end > 0])
            left, out = sum(ends.values()), []
            deadline = time.monotonic() + 120
            while left > 0 and time.monotonic() < deadline:
                for m in consumer.consume(1000, 1.0):
                    if m.error() is None:
                        out.append((m.key(), m.value()))
                        left -= 1
            return out
        finally:
            consumer.close()

    def bench_naive(self, topic: str, n: int, processor_eps: float) -> None:
        log(f"  naive baseline: one message at a time (insert_one, then commit), {n:,} messages")
        db = self.mongo[self.indexed_db("bench_naive")]["token_usage"]
        # The processor's own event -> document step, one message at a time.
        pricer = Pricer(CostModel(PriceBook(0.85)), OutputWeights(4.0), max_message_bytes=65536)
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


def _shown(argv: list[str]) -> str:
    """The command line as a shell would take it; --note's text is under the table already."""
    shown = list(argv)
    for i, arg in enumerate(shown):
        if arg == "--note" and i + 1 < len(shown):
            shown[i + 1] = "..."
        elif arg.startswith("--note="):
            shown[i] = "--note=..."
    return shlex.join(shown)


def record(results: dict[str, Any], args: argparse.Namespace) -> None:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"\n## Run of {now}",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()};"
        " Kafka 3.9.1 (KRaft, one node) and FerretDB 1.24.2 (SQLite) on loopback, "
        f"all on the same machine. Command: `python scripts/bench.py {_shown(args.argv)}`. "
        f"Load average (1 min) {args.load_at_start:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end: anything else running shares the cores.",
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
            f"{d['cpu_ms_per_1000']:.1f} ms ({d['cpu_ms_per_1000']:.1f} µs/event, "
            f"{d['cores']:.2f} cores busy) | - | - | - |"
        )
    if "naive" in results:
        nv = results["naive"]
        lines.append(
            f"| processor vs naive (insert_one + commit per message) | - | "
            f"{nv['naive_eps']:,.0f} ev/s | {nv['ratio']:.1f}x | >= 10x |"
        )
    if "cpu" in results:
        c = results["cpu"]
        this, base = c["this"], c["baseline"]

        def each(values: list[float]) -> str:
            return ", ".join(f"{v:,.1f}" for v in values)

        lines.append(
            f"| processor CPU per 1,000 events, drain of {c['events']:,}, median of "
            f"{c['rounds']} in turns: {this['code']} vs {base['code']} | "
            f"{this['cpu_ms_per_1000']:.1f} ms ({each(this['all_cpu'])}) | "
            f"{base['cpu_ms_per_1000']:.1f} ms ({each(base['all_cpu'])}) | "
            f"{c['ratio']:.2f} | <= 1 |"
        )
        lines.append(
            f"| drain rate in those runs (median) | {this['eps']:,.0f} ev/s | "
            f"{base['eps']:,.0f} ev/s | {this['eps'] / base['eps']:.2f} | - |"
        )
    if "hostile" in results:
        h = results["hostile"]
        for run in h["runs"]:
            lines.append(
                f"| hostile drain: {h['messages']:,} messages ({h['mib']:.0f} MiB), "
                f"{h['hostile']:,} hostile ({h['big']:,} of 60-96 KiB), {run['settings']} | "
                f"peak RSS {run['rss_peak_mib']:.0f} MiB, {run['msg_s']:,.0f} msg/s, mean batch "
                f"{h['messages'] / max(run['batches'], 1):,.0f} | - | - | "
                f"stored {run['stored']:,}/{run['good']:,}, dead-lettered "
                f"{run['dead_lettered']:,}/{run['hostile']:,} |"
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
    if "proxy" in results:
        lines += bench_proxy.lines(results["proxy"])
    if args.note:
        lines += ["", f"Note: {args.note}"]
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
        default=",".join(PHASES),
        help=f"comma-separated subset of {','.join(PHASES)} (default: all; cpu needs "
        "--baseline-repo)",
    )
    parser.add_argument(
        "--processor-repo",
        type=Path,
        default=REPO,
        help="checkout whose processor every phase runs (its .venv if it has one)",
    )
    parser.add_argument(
        "--baseline-repo",
        type=Path,
        help="cpu phase: checkout whose processor is compared with --processor-repo's",
    )
    parser.add_argument("--proxy-seconds", type=float, default=30.0)
    parser.add_argument("--proxy-rate", type=float, default=200.0, help="requests/s, all kinds")
    parser.add_argument("--cpu-events", type=int, default=50_000)
    parser.add_argument("--cpu-rounds", type=int, default=3)
    parser.add_argument("--hostile-events", type=int, default=50_000)
    parser.add_argument("--hostile-every", type=int, default=10, help="one hostile message in N")
    parser.add_argument(
        "--hostile-variant",
        dest="hostile_variants",
        action="append",
        default=[],
        metavar="NAME=VALUE,...",
        help="another hostile run with these processor settings (repeatable)",
    )
    parser.add_argument(
        "--no-hostile-defaults",
        action="store_true",
        help="skip the hostile run with default settings (only the variants)",
    )
    parser.add_argument("--note", default="", help="a line added under the run's table")
    parser.add_argument(
        "--kafka-listen", default="127.0.0.1:19092", help="the private stack's Kafka"
    )
    parser.add_argument(
        "--mongo-listen", default="127.0.0.1:37017", help="the private stack's FerretDB"
    )
    args = parser.parse_args(argv)
    args.argv = argv if argv is not None else sys.argv[1:]
    args.load_at_start = os.getloadavg()[0]
    wanted = set(args.only.split(","))
    if wanted - set(PHASES):
        parser.error(f"unknown phase(s) {sorted(wanted - set(PHASES))}; phases: {PHASES}")
    if "cpu" in wanted and args.baseline_repo is None:
        if args.only != parser.get_default("only"):
            parser.error("the cpu phase needs --baseline-repo DIR")
        wanted.discard("cpu")
    variants: list[dict[str, str]] = [] if args.no_hostile_defaults else [{}]
    for variant in args.hostile_variants:
        pairs = [pair.partition("=") for pair in variant.split(",") if pair]
        if any(not name or not sep for name, sep, _value in pairs):
            parser.error(f"--hostile-variant {variant!r}: expected NAME=VALUE[,NAME=VALUE]")
        variants.append({name: value for name, _sep, value in pairs})
    processor_repo = args.processor_repo.resolve()
    for repo in (processor_repo, args.baseline_repo):
        if repo is not None and not (repo / "processor" / "__main__.py").exists():
            parser.error(f"{repo} has no processor/__main__.py")
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP")
    mongo_url = os.environ.get("MONGO_URL")
    started_stack = False
    if not (bootstrap and mongo_url):
        STATE.mkdir(parents=True, exist_ok=True)
        kafka_listen, mongo_listen = args.kafka_listen, args.mongo_listen
        log(f"starting a private local stack ({kafka_listen}, {mongo_listen})")
        stack.up(STATE, kafka_listen=kafka_listen, mongo_listen=mongo_listen)
        bootstrap, mongo_url = kafka_listen, f"mongodb://{mongo_listen}/"
        started_stack = True
    bench = Bench(bootstrap, mongo_url, processor_repo)
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
            bench.bench_hostile(args.hostile_events, args.hostile_every, variants)
        if "proxy" in wanted:
            log("proxy: added latency vs the fake upstream direct, then Kafka down")
            bench.results["proxy"] = bench_proxy.run(
                bootstrap, "tokens", STATE, args.proxy_seconds, args.proxy_rate
            )
        if "cpu" in wanted and args.baseline_repo is not None:
            bench.bench_cpu(args.cpu_events, args.baseline_repo.resolve(), args.cpu_rounds)
        record(bench.results, args)
    finally:
        bench.cleanup()
        if started_stack:
            for server, how in stack.down(STATE).items():
                log(f"stack: {server} {how}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
