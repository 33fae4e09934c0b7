"""The producer against the real broker: counts, keys, GPU cadence, SIGTERM, replay, errors.

The producer runs as a real process (``python -m producers``) where exit codes, signals and
the summary line matter, and in-process (KafkaSink) for the adapter's own guarantees.
Fixtures (tests/conftest.py): ``kafka_bootstrap``, a fresh 12-partition ``topic``.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from devtools.waiting import WaitTimeout, wait_for
from producers.kafka_sink import KafkaSink
from producers.settings import load_settings
from schemas.contracts import ContractViolation, decode, kafka_key, parse_ts
from schemas.contracts import format_ts as rfc3339

if TYPE_CHECKING:
    from tests.conftest import PrivateStack

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
HOST = "itest-producer"
T0 = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
# Generous: a cold JVM broker on a small CI machine; a healthy run takes a few seconds.
RUN_TIMEOUT_S = 120.0


# ---------------------------------------------------------------- helpers


def producer_env(bootstrap: str, topic: str, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PRODUCER_", "KAFKA_", "GPU_SEED")) and k != "LOG_LEVEL"
    }
    env.update(
        {
            "KAFKA_BOOTSTRAP": bootstrap,
            "KAFKA_TOPIC": topic,
            "PRODUCER_HOST": HOST,
            "PRODUCER_PROGRESS_S": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def run_producer(
    args: list[str], env: Mapping[str, str], timeout_s: float = RUN_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "producers", *args],
        env=dict(env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def summary_of(stdout: str) -> dict[str, str]:
    lines = [line for line in stdout.splitlines() if line.startswith("summary ")]
    assert len(lines) == 1, stdout
    return dict(part.split("=", 1) for part in lines[0].split()[1:])


def topic_size(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"size-{uuid.uuid4()}"})
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        total = 0
        for p in metadata.topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def read_topic(bootstrap: str, topic: str, timeout_s: float = 60.0) -> list[Any]:
    """Every message now in ``topic`` (all partitions, from the beginning), by watermarks."""
    expected = topic_size(bootstrap, topic)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        messages: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while len(messages) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=0.5):
                assert msg.error() is None, msg.error()
                messages.append(msg)
        assert len(messages) == expected, f"read {len(messages)} of {expected}"
        return messages
    finally:
        consumer.close()


def events_of(messages: list[Any]) -> list[dict[str, Any]]:
    return [decode(m.value()) for m in messages]


def create_topic(bootstrap: str, name: str, partitions: int, config: dict[str, str]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, partitions, 1, config=config)])
    futures[name].result(timeout=30)

    def leaders_ready() -> bool:
        found = admin.list_topics(timeout=10).topics.get(name)
        return found is not None and all(p.leader >= 0 for p in found.partitions.values())

    wait_for(f"leaders of every partition of {name}", leaders_ready, 30, every_s=0.1)


def delete_topic(bootstrap: str, name: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.delete_topics([name])[name].result(timeout=30)


class ProducerProcess:
    """``python -m producers ...`` in the background; stderr collected by a thread."""

    def __init__(self, args: list[str], env: Mapping[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "producers", *args],
            env=dict(env),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._stdout: list[str] = []
        # One reader thread per pipe, and never communicate(): it would read stderr too and
        # steal lines from self.lines.
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stderr, self.lines), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stdout, self._stdout), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(pipe: IO[str] | None, into: list[str]) -> None:
        assert pipe is not None
        for line in pipe:
            into.append(line)

    def wait_for_line(self, fragment: str, timeout_s: float = 60.0, after: int = 0) -> int:
        """Index of the first stderr line (from ``after``) containing ``fragment``."""

        def found() -> tuple[int] | None:
            for i in range(after, len(self.lines)):
                if fragment in self.lines[i]:
                    return (i,)  # a tuple: line 0 must count as found
            assert self.proc.poll() is None, "".join(self.lines)
            return None

        try:
            (index,) = wait_for(f"{fragment!r} on stderr", found, timeout_s, every_s=0.05)
        except WaitTimeout:
            raise AssertionError(
                f"no {fragment!r} in {timeout_s}s:\n" + "".join(self.lines)
            ) from None
        return index

    def stop(self, timeout_s: float = 60.0) -> tuple[int, str, float]:
        """SIGTERM; (exit code, stdout, seconds it took to exit)."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=timeout_s)
        took = time.monotonic() - started
        self._drain()
        return self.proc.returncode, "".join(self._stdout), took

    def _drain(self) -> None:
        """After exit: let the readers reach EOF, then close the pipes."""
        for reader in self._readers:
            reader.join(10)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._drain()

    @property
    def stderr(self) -> str:
        return "".join(self.lines)


# ---------------------------------------------------------------- run


def test_run_count_delivers_exactly_n_token_events(kafka_bootstrap: str, topic: str) -> None:
    env = producer_env(kafka_bootstrap, topic)
    done = run_producer(
        ["run", "--count", "5000", "--rate", "max", "--gpu-interval", "60", "--seed", "7"], env
    )
    assert done.returncode == 0, done.stderr
    summary = summary_of(done.stdout)
    assert summary["token_events"] == "5000"
    assert summary["sent"] == summary["delivered"]
    assert (summary["failed"], summary["undelivered"], summary["stopped_by"]) == ("0", "0", "count")

    messages = read_topic(kafka_bootstrap, topic)
    assert len(messages) == int(summary["sent"])
    events = events_of(messages)  # decode() validates every one against its contract
    kinds = Counter(e["schema"] for e in events)
    assert kinds["token.usage.v1"] == 5000
    assert kinds["gpu.metrics.v1"] == int(summary["gpu_events"]) >= 1
    assert len({e["event_id"] for e in events}) == len(events)
    assert {e["host"] for e in events} == {HOST}

    # key = host/gpu_uuid; every GPU on exactly one partition; its reading before its tokens.
    partitions_of: dict[str, set[int]] = defaultdict(set)
    first_offset: dict[tuple[str, str], int] = {}
    for msg, event in zip(messages, events, strict=True):
        key = msg.key().decode()
        assert key == kafka_key(event)
        partitions_of[key].add(msg.partition())
        first_offset.setdefault((key, event["schema"]), msg.offset())
    assert all(len(parts) == 1 for parts in partitions_of.values()), partitions_of
    gpu_keys = {k for k, kind in first_offset if kind == "gpu.metrics.v1"}
    token_keys = {k for k, kind in first_offset if kind == "token.usage.v1"}
    assert token_keys <= gpu_keys
    for key in token_keys:
        assert first_offset[(key, "gpu.metrics.v1")] < first_offset[(key, "token.usage.v1")]


def test_gpu_readings_follow_the_interval(kafka_bootstrap: str, topic: str) -> None:
    env = producer_env(kafka_bootstrap, topic)
    done = run_producer(["run", "--duration", "3.5", "--rate", "20", "--gpu-interval", "1"], env)
    assert done.returncode == 0, done.stderr
    summary = summary_of(done.stdout)
    assert summary["stopped_by"] == "duration"
    # 20/s for 3.5 s; the loop is deadline-paced, so within a couple of events.
    assert 68 <= int(summary["token_events"]) <= 71

    readings: dict[str, list[Any]] = defaultdict(list)
    for event in events_of(read_topic(kafka_bootstrap, topic)):
        if event["schema"] == "gpu.metrics.v1":
            readings[event["gpu_uuid"]].append(parse_ts(event["ts"]))
    assert readings, "no GPU readings"
    for gpu, stamps in readings.items():
        stamps.sort()
        assert len(stamps) >= 3, (gpu, stamps)
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(stamps)]
        assert all(abs(gap - 1.0) < 0.3 for gap in gaps), (gpu, gaps)


def test_sigterm_mid_run_loses_nothing_it_reported(kafka_bootstrap: str, topic: str) -> None:
    env = producer_env(kafka_bootstrap, topic)
    proc = subprocess.Popen(
        [sys.executable, "-m", "producers", "run", "--rate", "2000", "--gpu-interval", "1"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Wait until it is really producing (a progress line), then stop it mid-stream.
        assert proc.stderr is not None
        deadline = time.monotonic() + 60
        seen: list[str] = []
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            seen.append(line)
            if " progress sent=" in line or not line:
                break
        assert any(" progress sent=" in line for line in seen), "".join(seen)
        time.sleep(0.5)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
        stop_s = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, "".join(seen) + stderr
    assert stop_s < 10, f"took {stop_s:.1f}s to stop"
    assert "SIGTERM received" in stderr
    summary = summary_of(stdout)
    assert summary["stopped_by"] == "signal"
    assert int(summary["token_events"]) > 1000
    assert summary["delivered"] == summary["sent"]
    assert (summary["failed"], summary["undelivered"]) == ("0", "0")
    # Every event it reported delivered is in the topic, and nothing else.
    assert topic_size(kafka_bootstrap, topic) == int(summary["delivered"])
    events = events_of(read_topic(kafka_bootstrap, topic))
    assert sum(e["schema"] == "token.usage.v1" for e in events) == int(summary["token_events"])


def test_two_instances_side_by_side(kafka_bootstrap: str, topic: str) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "producers", "run", "--count", "2000", "--rate", "1000"],
            env=producer_env(kafka_bootstrap, topic, PRODUCER_HOST=host),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for host in ("itest-a", "itest-b")
    ]
    outputs = [p.communicate(timeout=RUN_TIMEOUT_S) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    client_ids = {
        part.split("=", 1)[1]
        for _, err in outputs
        for line in err.splitlines()
        if " connected " in line
        for part in line.split()
        if part.startswith("client_id=")
    }
    assert len(client_ids) == 2
    sent = sum(int(summary_of(out)["sent"]) for out, _ in outputs)
    events = events_of(read_topic(kafka_bootstrap, topic))
    assert len(events) == sent
    tokens = Counter(e["host"] for e in events if e["schema"] == "token.usage.v1")
    assert tokens == {"itest-a": 2000, "itest-b": 2000}


# ---------------------------------------------------------------- replay


def _token(i: int, model: str = "llama-3.1-8b-instruct") -> dict[str, Any]:
    return {
        "schema": "token.usage.v1",
        "event_id": str(uuid.UUID(int=i + 1, version=4)),
        "ts": rfc3339(T0 + timedelta(milliseconds=100 * i)),
        "host": "replay-host",
        "gpu_uuid": f"GPU-replay-{i % 3}",
        "gpu_index": i % 3,
        "model": model,
        "input_tokens": 100 + i,
        "output_tokens": 10 + i,
        "latency_ms": 250.0,
    }


def test_replay_jsonl_sends_exactly_the_files_events(
    kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    events = [_token(i, "通义千问-7b" if i % 2 else "llama-3.1-8b-instruct") for i in range(30)]
    aliased = dict(events[0])
    aliased["prompt_tokens"] = aliased.pop("input_tokens")
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in [aliased, *events[1:]]))

    done = run_producer(
        ["replay", str(path), "--speed", "max"], producer_env(kafka_bootstrap, topic)
    )
    assert done.returncode == 0, done.stderr
    assert summary_of(done.stdout)["sent"] == "30"
    got = {e["event_id"]: e for e in events_of(read_topic(kafka_bootstrap, topic))}
    assert got == {e["event_id"]: e for e in events}


def test_replay_azure_trace_on_a_tensor_parallel_group(
    kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    # Three requests of the real trace's shape on one model spread over both seed GPUs.
    path = tmp_path / "conv.csv"
    path.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,1001,500\n"
        "2023-11-16 18:15:47.0000000,10,3\n"
        "2023-11-16 18:15:47.5000000,7,0\n",
        encoding="utf-8",
    )
    args = ["replay", "--format", "azure-trace", str(path), "--speed", "max", "--end-now"]
    env = producer_env(kafka_bootstrap, topic, PRODUCER_DEPLOYMENT="llama-3.1-70b-instruct=0,1")
    started = datetime.now(UTC)
    done = run_producer(args, env)
    assert done.returncode == 0, done.stderr
    summary = summary_of(done.stdout)
    # 3 requests x 2 GPUs + one reading per seed GPU.
    assert (summary["token_events"], summary["gpu_events"]) == ("6", "2")
    events = events_of(read_topic(kafka_bootstrap, topic))
    tokens = [e for e in events if e["schema"] == "token.usage.v1"]
    assert sorted(
        (e["request_id"], e["gpu_index"], e["input_tokens"], e["output_tokens"]) for e in tokens
    ) == [
        ("conv-0", 0, 501, 250),
        ("conv-0", 1, 500, 250),
        ("conv-1", 0, 5, 2),
        ("conv-1", 1, 5, 1),
        ("conv-2", 0, 4, 0),
        ("conv-2", 1, 3, 0),
    ]
    # --end-now: the last request arrived when the replay started; spacing kept (0.5 s).
    last = max(parse_ts(e["ts"]) for e in tokens)
    first = min(parse_ts(e["ts"]) for e in tokens)
    assert started - timedelta(seconds=5) <= last <= datetime.now(UTC)
    assert last - first == timedelta(microseconds=819410)  # 47.500000 - 46.680590

    # The same trace again: the same event ids (the processor drops them as duplicates).
    again = run_producer(args, env)
    assert again.returncode == 0, again.stderr
    ids = Counter(e["event_id"] for e in events_of(read_topic(kafka_bootstrap, topic)))
    assert {ids[e["event_id"]] for e in tokens} == {2}


def test_replay_speed_and_loops(kafka_bootstrap: str, topic: str, tmp_path: Path) -> None:
    events = [_token(i) for i in range(11)]  # ts spans 1.0 s
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    done = run_producer(
        ["replay", str(path), "--speed", "2x", "--loops", "2", "--summary-json", "-"],
        producer_env(kafka_bootstrap, topic),
    )
    assert done.returncode == 0, done.stderr
    summary = orjson.loads(done.stdout)
    assert summary["sent"] == summary["delivered"] == 22
    assert 0.9 <= summary["elapsed_s"] < 2.0  # two passes of 1.0 s at 2x
    got = events_of(read_topic(kafka_bootstrap, topic))
    ids = Counter(e["event_id"] for e in got)
    assert len(ids) == 22  # the second pass got fresh ids
    assert {e["event_id"] for e in events} <= set(ids)


SMI_LOG = """\
timestamp, index, uuid, name, utilization.gpu [%], memory.used [MiB], memory.total [MiB], \
power.draw [W], temperature.gpu, clocks.current.sm [MHz]
2026/11/23 10:32:22.123, 0, GPU-5f1c2d3e-aaaa, NVIDIA A100-SXM4-40GB, 45 %, 1234 MiB, \
40960 MiB, 250.10 W, 54, 1410 MHz
2026/11/23 10:32:22.125, 1, GPU-0d9e8f7a-1111, NVIDIA GeForce RTX 3090, 0 %, 2 MiB, \
24576 MiB, [N/A], 38, 210 MHz
2026/11/23 10:32:22.400, 0, GPU-5f1c2d3e-aaaa, NVIDIA A100-SXM4-40GB, 47 %, 1236 MiB, \
40960 MiB, 251.93 W, 54, 1410 MHz
"""


def test_replay_nvidia_smi_log(kafka_bootstrap: str, topic: str, tmp_path: Path) -> None:
    path = tmp_path / "gpu.csv"
    path.write_text(SMI_LOG, encoding="utf-8")
    done = run_producer(
        ["replay", str(path), "--speed", "10x"], producer_env(kafka_bootstrap, topic)
    )
    assert done.returncode == 0, done.stderr
    messages = read_topic(kafka_bootstrap, topic)
    events = events_of(messages)
    assert len(events) == 3
    assert {e["source"] for e in events} == {"nvidia-smi"}
    assert {e["host"] for e in events} == {HOST}
    by_gpu = Counter(m.key().decode() for m in messages)
    assert by_gpu == {f"{HOST}/GPU-5f1c2d3e-aaaa": 2, f"{HOST}/GPU-0d9e8f7a-1111": 1}
    rtx = next(e for e in events if e["gpu_index"] == 1)
    assert rtx["power_draw_w"] is None
    assert rtx["memory_total_mib"] == 24576


def test_invalid_replay_file_sends_nothing(
    kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    path = tmp_path / "bad.jsonl"
    bad = dict(_token(1), output_tokens=-1)
    path.write_bytes(orjson.dumps(_token(0)) + b"\n" + orjson.dumps(bad) + b"\n")
    done = run_producer(["replay", str(path)], producer_env(kafka_bootstrap, topic))
    assert done.returncode == 2
    assert "line 2: output_tokens" in done.stderr
    assert topic_size(kafka_bootstrap, topic) == 0


# ---------------------------------------------------------------- failures


def test_unreachable_broker_fails_fast_and_clearly() -> None:
    env = producer_env("127.0.0.1:1", "tokens")
    started = time.monotonic()
    done = run_producer(["run", "--count", "1"], env, timeout_s=60)
    elapsed = time.monotonic() - started
    assert done.returncode == 1
    assert "cannot reach Kafka at 127.0.0.1:1" in done.stderr
    assert done.stderr.rstrip().splitlines()[-1].startswith("producers: error: cannot reach Kafka")
    assert elapsed < 20, f"took {elapsed:.1f}s"
    assert done.stdout == ""


def test_missing_topic_is_named(kafka_bootstrap: str) -> None:
    missing = f"no-such-topic-{uuid.uuid4().hex[:8]}"
    done = run_producer(
        ["run", "--count", "1"], producer_env(kafka_bootstrap, missing), timeout_s=60
    )
    assert done.returncode == 1
    assert f"topic '{missing}' does not exist" in done.stderr
    # and it was not auto-created by asking
    assert (
        missing
        not in AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10).topics
    )


def test_rejected_deliveries_are_counted_logged_and_exit_1(kafka_bootstrap: str) -> None:
    # A topic whose messages may be at most 64 bytes: the broker rejects every event.
    name = f"tiny-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, name, 3, {"max.message.bytes": "64"})
    try:
        done = run_producer(
            ["run", "--count", "20", "--rate", "max", "--compression", "none"],
            producer_env(kafka_bootstrap, name),
        )
    finally:
        delete_topic(kafka_bootstrap, name)
    assert done.returncode == 1, done.stdout + done.stderr
    summary = summary_of(done.stdout)
    assert summary["delivered"] == "0"
    assert int(summary["failed"]) == int(summary["sent"]) >= 20
    assert f"delivery failed {name}[" in done.stderr
    assert f"key={HOST}/" in done.stderr


def test_broker_restart_and_outage(private_stack: PrivateStack) -> None:
    """Kafka restarts mid-run: nothing lost, nothing duplicated (idempotent producer). Kafka
    gone at SIGTERM: the flush is bounded, the rest is reported undelivered, exit code 1."""
    private_stack.up(only="kafka")  # creates `tokens` with 12 partitions
    bootstrap = private_stack.kafka_bootstrap
    env = producer_env(bootstrap, "tokens", PRODUCER_FLUSH_TIMEOUT_S="4")

    first = ProducerProcess(["run", "--rate", "200", "--connect-timeout", "60"], env)
    try:
        seen = first.wait_for_line(" progress sent=")
        private_stack.down(only="kafka")
        time.sleep(2)  # events pile up in the producer's queue meanwhile
        private_stack.up(only="kafka")
        # Caught up: a progress line after the restart with nothing in flight beyond a batch.
        deadline = time.monotonic() + 60
        while True:
            seen = first.wait_for_line(" progress sent=", after=seen + 1)
            in_flight = int(first.lines[seen].split("in_flight=")[1].split()[0])
            if in_flight < 50 or time.monotonic() > deadline:
                break
        code, stdout, _ = first.stop()
    finally:
        first.kill()
    assert code == 0, first.stderr
    summary = summary_of(stdout)
    assert summary["delivered"] == summary["sent"]
    events = events_of(read_topic(bootstrap, "tokens"))
    assert len(events) == int(summary["delivered"])  # none lost, none written twice
    assert len({e["event_id"] for e in events}) == len(events)

    second = ProducerProcess(["run", "--rate", "200"], env)
    try:
        second.wait_for_line(" progress sent=")
        private_stack.down(only="kafka")
        time.sleep(1)
        code, stdout, took = second.stop()
    finally:
        second.kill()
    assert code == 1, second.stderr
    summary = summary_of(stdout)
    assert int(summary["undelivered"]) > 0
    assert int(summary["sent"]) == int(summary["delivered"]) + int(summary["undelivered"])
    assert "flush gave up" in second.stderr
    # 4 s of flush + start-up and close; not the 30 s delivery timeout.
    assert took < 12, f"took {took:.1f}s to exit"


# ---------------------------------------------------------------- the adapter in-process


def test_sink_refuses_invalid_events_and_never_drops_under_backpressure(
    kafka_bootstrap: str, topic: str
) -> None:
    settings = load_settings({"KAFKA_BOOTSTRAP": kafka_bootstrap, "KAFKA_TOPIC": topic})
    # A 50-message local queue: the 3,000 sends below must hit BufferError and wait it out.
    sink = KafkaSink({**settings.kafka_config(), "queue.buffering.max.messages": 50}, topic)
    try:
        assert sink.check_ready(10) == 12
        with pytest.raises(ContractViolation, match="input_tokens"):
            sink.send(dict(_token(0), input_tokens="many"))
        assert sink.stats.sent == 0
        for i in range(3000):
            sink.send(_token(i))
        assert sink.flush(30) == 0
    finally:
        sink.close()
    assert sink.stats.backpressure_waits > 0
    assert (sink.stats.sent, sink.stats.delivered, sink.stats.failed) == (3000, 3000, 0)
    assert topic_size(kafka_bootstrap, topic) == 3000
