"""The local stack's Kafka is a real broker, and scripts/stack.py manages its lifecycle.

No mocks: a real Apache Kafka (KRaft) and a real FerretDB, started by tests/conftest.py or given
through KAFKA_BOOTSTRAP / MONGO_URL.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from pymongo import MongoClient

from devtools import stack
from devtools.processes import ProcessId
from devtools.waiting import wait_for
from tests.conftest import FIRST_INSTALL_TIMEOUT_S, REPO, KafkaConfigFactory, PrivateStack

pytestmark = pytest.mark.integration

MESSAGES = 10_000


def test_project_topics_exist_with_their_partition_counts(
    kafka_bootstrap: str, kafka_admin: AdminClient
) -> None:
    wanted = stack.topic_names()  # tokens: 12, tokens.dlq: 3 (names from KAFKA_TOPIC / ..._DLQ_)
    assert sorted(wanted.values()) == [3, 12]
    first = stack.ensure_topics(kafka_bootstrap)  # what `up` runs; idempotent
    assert set(first.values()) <= {"created", "exists"}
    assert set(stack.ensure_topics(kafka_bootstrap).values()) == {"exists"}

    metadata = kafka_admin.list_topics(timeout=10)
    for name, partitions in wanted.items():
        assert name in metadata.topics
        assert len(metadata.topics[name].partitions) == partitions


class GroupMember(threading.Thread):
    """One consumer of the group in its own thread; commits after every batch."""

    def __init__(self, config: dict[str, Any], topic: str) -> None:
        super().__init__(daemon=True)
        self.consumer = Consumer(config)
        self.topic = topic
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.assigned: set[int] = set()
        self.values: list[int] = []
        self.partition_of_key: dict[str, set[int]] = defaultdict(set)
        self.seq_by_key: dict[str, list[int]] = defaultdict(list)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.consumer.subscribe([self.topic])
            while not self.stop.is_set():
                batch = self.consumer.consume(500, timeout=0.2)
                self._take(batch)
                with self.lock:
                    self.assigned = {tp.partition for tp in self.consumer.assignment()}
                if batch:
                    self.consumer.commit(asynchronous=False)
        except BaseException as exc:
            self.error = exc
        finally:
            self.consumer.close()

    def _take(self, batch: list[Message]) -> None:
        with self.lock:
            for msg in batch:
                error = msg.error()
                if error is not None:
                    raise KafkaException(error)
                key = (msg.key() or b"").decode()
                value = int((msg.value() or b"-1").decode())
                self.values.append(value)
                self.partition_of_key[key].add(msg.partition() or 0)
                self.seq_by_key[key].append(value)

    def snapshot(self) -> tuple[set[int], int]:
        with self.lock:
            return set(self.assigned), len(self.values)


def test_group_of_two_consumers_gets_10000_keyed_messages_exactly_once(
    kafka_config: KafkaConfigFactory, topic: str, group_id: str
) -> None:
    consumer_config = kafka_config(
        {
            "group.id": group_id,
            "group.protocol": "classic",
            "partition.assignment.strategy": "cooperative-sticky",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 500,
        }
    )
    members = [GroupMember(consumer_config, topic) for _ in range(2)]
    for member in members:
        member.start()
    try:
        # Both members joined and the 12 partitions are split between them (cooperative-sticky
        # moves partitions to the second member in a second round).
        def split() -> bool:
            a, b = (m.snapshot()[0] for m in members)
            return bool(a) and bool(b) and not a & b and len(a | b) == 12

        wait_for("the group to split 12 partitions between 2 members", split, timeout_s=60)

        delivered: list[int] = []
        failures: list[str] = []

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                failures.append(str(err))
            else:
                delivered.append(msg.partition() or 0)

        producer = Producer(kafka_config({"enable.idempotence": True, "acks": "all"}))
        for i in range(MESSAGES):
            key = f"host-{i % 40}/GPU-{i % 7}"
            while True:
                try:
                    producer.produce(topic, key=key, value=str(i), on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.1)  # local queue full: back-pressure, not a drop
            producer.poll(0)
        assert producer.flush(60) == 0
        assert not failures
        assert len(delivered) == MESSAGES
        assert len(set(delivered)) > 1

        wait_for(
            f"{MESSAGES} messages in the group",
            lambda: sum(m.snapshot()[1] for m in members) >= MESSAGES,
            timeout_s=120,
        )
    finally:
        for member in members:
            member.stop.set()
        for member in members:
            member.join(timeout=30)
    for member in members:
        assert member.error is None, repr(member.error)
        assert not member.is_alive()

    values = [v for m in members for v in m.values]
    counts = Counter(values)
    assert len(values) == MESSAGES, f"duplicates: {[v for v, n in counts.items() if n > 1][:10]}"
    assert set(values) == set(range(MESSAGES))
    assert all(m.assigned and m.values for m in members), "each member owns partitions and reads"
    # Keyed: one key lives on one partition, read by one member, in produce order.
    keys_per_member = [set(m.partition_of_key) for m in members]
    assert not keys_per_member[0] & keys_per_member[1]
    for member in members:
        assert all(len(parts) == 1 for parts in member.partition_of_key.values())
        assert all(seq == sorted(seq) for seq in member.seq_by_key.values())

    # Everything read was committed: the group's offsets reach the end of every partition.
    probe = Consumer(kafka_config({"group.id": group_id, "enable.auto.commit": False}))
    try:
        parts = [TopicPartition(topic, p) for p in range(12)]
        committed = probe.committed(parts, timeout=10)
        ends = [probe.get_watermark_offsets(tp, timeout=10)[1] for tp in parts]
        assert [tp.offset for tp in committed] == ends
        assert sum(ends) == MESSAGES
    finally:
        probe.close()


# --------------------------------------------------------------------------- lifecycle (CLI)


def run_cli(
    handle: PrivateStack, *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*handle.cli_args(), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def pid_of(state_dir: Path, server: str) -> int:
    return int((state_dir / f"{server}.pid").read_text())


@pytest.mark.timeout(FIRST_INSTALL_TIMEOUT_S)
def test_lifecycle_up_is_idempotent_only_mongo_restarts_down_frees_everything(
    private_stack: PrivateStack,
) -> None:
    state = private_stack.state_dir
    kafka_addr = stack.Address.parse(private_stack.kafka_listen)
    mongo_addr = stack.Address.parse(private_stack.mongo_listen)
    ports = [kafka_addr, kafka_addr.next_port(), mongo_addr]
    assert not any(stack.tcp_open(a) for a in ports)

    first = run_cli(private_stack, "up")
    assert first.returncode == 0, first.stdout + first.stderr
    kafka_pid, mongo_pid = pid_of(state, "kafka"), pid_of(state, "mongo")
    assert stack.kafka_answers(private_stack.kafka_bootstrap)
    assert stack.mongo_answers(private_stack.mongo_url)
    metadata = AdminClient({"bootstrap.servers": private_stack.kafka_bootstrap}).list_topics(
        timeout=10
    )
    for name, partitions in stack.topic_names().items():
        assert len(metadata.topics[name].partitions) == partitions

    second = run_cli(private_stack, "up")
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout.count("already running") == 2
    assert (pid_of(state, "kafka"), pid_of(state, "mongo")) == (kafka_pid, mongo_pid)

    ok = run_cli(private_stack, "status")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert str(kafka_pid) in ok.stdout
    assert str(mongo_pid) in ok.stdout

    # FerretDB alone goes down and comes back (same data); Kafka keeps running meanwhile.
    client: MongoClient[dict[str, Any]] = MongoClient(
        private_stack.mongo_url, serverSelectionTimeoutMS=5000
    )
    try:
        client["lifecycle"]["kept"].insert_one({"_id": "before-restart"})
    finally:
        client.close()
    mongo_down = run_cli(private_stack, "down", "--only", "mongo")
    assert mongo_down.returncode == 0, mongo_down.stdout + mongo_down.stderr
    assert stack.pid_is_gone(mongo_pid)
    assert not stack.tcp_open(mongo_addr)
    assert not (state / "mongo.pid").exists()
    assert not stack.pid_is_gone(kafka_pid)
    assert stack.kafka_answers(private_stack.kafka_bootstrap)
    degraded = run_cli(private_stack, "status")
    assert degraded.returncode != 0

    mongo_up = run_cli(private_stack, "up", "--only", "mongo")
    assert mongo_up.returncode == 0, mongo_up.stdout + mongo_up.stderr
    new_mongo_pid = pid_of(state, "mongo")
    assert new_mongo_pid != mongo_pid
    assert pid_of(state, "kafka") == kafka_pid
    client = MongoClient(private_stack.mongo_url, serverSelectionTimeoutMS=5000)
    try:
        assert client["lifecycle"]["kept"].find_one({"_id": "before-restart"}) is not None
    finally:
        client.close()

    stopped = run_cli(private_stack, "down")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    for pid in (kafka_pid, new_mongo_pid):
        assert stack.pid_is_gone(pid), f"pid {pid} still runs"
    assert not any(stack.tcp_open(a) for a in ports), "a port still accepts connections"
    assert not list(state.glob("*.pid"))
    assert run_cli(private_stack, "status").returncode != 0
    again = run_cli(private_stack, "down")
    assert again.returncode == 0
    assert again.stdout.count("not running") == 2


def test_up_refuses_an_address_someone_else_listens_on(tmp_path: Path) -> None:
    """Never start a second server on a busy port, never touch a process we did not start."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        address = f"127.0.0.1:{busy.getsockname()[1]}"
        with pytest.raises(stack.StackError, match="already accepts connections"):
            stack.up(tmp_path / "state", only="mongo", mongo_listen=address)
    assert not (tmp_path / "state" / "mongo.pid").exists()
    assert stack.down(tmp_path / "state") == {"kafka": "not running", "mongo": "not running"}


@pytest.mark.parametrize("forgery", ["other-cmdline", "other-starttime"])
def test_down_never_signals_a_process_it_did_not_start(tmp_path: Path, forgery: str) -> None:
    """A PID file naming someone else's process (or a reused PID) is stale: removed, no signal."""
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        victim_id = ProcessId.of(victim.pid)
        assert victim_id is not None
        start = victim_id.starttime
        proc_cmdline = Path(f"/proc/{victim.pid}/cmdline")
        wait_for("the victim to exec", lambda: b"time.sleep" in proc_cmdline.read_bytes(), 10)
        cmdline = proc_cmdline.read_bytes().split(b"\0")[:-1]
        meta = {
            "pid": victim.pid,
            "starttime": start + 1 if forgery == "other-starttime" else start,
            "cmdline": (
                ["/usr/bin/java", "kafka.Kafka"]
                if forgery == "other-cmdline"
                else [c.decode() for c in cmdline]
            ),
            "address": "127.0.0.1:1",
        }
        state = tmp_path / "state"
        state.mkdir()
        (state / "kafka.pid").write_text(f"{victim.pid}\n")
        (state / "kafka.meta.json").write_text(json.dumps(meta))

        assert stack.running_pid(state, "kafka") is None
        result = stack.down(state, only="kafka")
        assert "stale" in result["kafka"]
        assert victim.poll() is None, "down() signalled a process it did not start"
        assert not (state / "kafka.pid").exists()
    finally:
        victim.kill()
        victim.wait()
