"""`stack.py up --brokers 3`: a real 3-node KRaft cluster survives the loss of a partition leader.

The topics get replication factor 3 and min.insync.replicas 2, so acks=all writes keep
succeeding with one broker SIGKILLed (no clean shutdown, no leader hand-over by the dead node).
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource  # not re-exported for mypy

from devtools import stack
from devtools.waiting import wait_for
from tests.conftest import PrivateStack

pytestmark = pytest.mark.integration

PARTITION = 0
BEFORE, AFTER = 200, 200


def _produce(bootstrap: str, topic: str, values: range) -> None:
    """acks=all, idempotent: each flush returns only when every record is on the full ISR (>= 2)."""
    errors: list[str] = []
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            # Covers the KRaft controller fencing the dead broker (broker.session.timeout 9 s).
            "message.timeout.ms": 45_000,
        }
    )
    for value in values:
        producer.produce(
            topic,
            str(value).encode(),
            partition=PARTITION,
            on_delivery=lambda err, _msg: errors.append(str(err)) if err else None,
        )
    assert producer.flush(50) == 0, "records still unsent after 50 s"
    assert errors == []


def _consume_all(bootstrap: str, topic: str, expected: int) -> list[int]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"cluster-{os.getpid()}",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, PARTITION, OFFSET_BEGINNING)])
    values: list[int] = []
    deadline = time.monotonic() + 30
    try:
        while len(values) < expected and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                continue
            values.append(int(msg.value() or b"-1"))
    finally:
        consumer.close()
    return values


@pytest.mark.parametrize("private_stack", [3], indirect=True)
@pytest.mark.timeout(150)
def test_three_brokers_survive_losing_a_partition_leader(private_stack: PrivateStack) -> None:
    start = time.monotonic()
    states = private_stack.up(only="kafka")
    kafka = states["kafka"]
    pids = {1: kafka.pid, **{m.node: m.pid for m in kafka.members}}
    assert sorted(pids) == [1, 2, 3]
    assert all(pids.values())
    bootstrap = private_stack.kafka_bootstrap
    assert kafka.bootstrap == bootstrap
    assert bootstrap.count(",") == 2

    topic = next(iter(stack.topic_names()))
    admin = AdminClient({"bootstrap.servers": bootstrap})
    metadata = admin.list_topics(timeout=10)
    assert len(metadata.brokers) == 3
    for partition in metadata.topics[topic].partitions.values():
        assert len(partition.replicas) == 3
        assert len(partition.isrs) == 3
        assert partition.leader > 0
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result(timeout=10)
    assert configs["min.insync.replicas"].value == "2"

    _produce(bootstrap, topic, range(BEFORE))

    # The leader of our partition dies hard: its PID comes from the stack's own PID file.
    leader = admin.list_topics(timeout=10).topics[topic].partitions[PARTITION].leader
    unit = "kafka" if leader == 1 else f"kafka-{leader}"
    victim = int((private_stack.state_dir / f"{unit}.pid").read_text().split()[0])
    assert victim == pids[leader]
    os.kill(victim, signal.SIGKILL)
    wait_for(f"pid {victim} to be gone", lambda: stack.pid_is_gone(victim), 10)

    _produce(bootstrap, topic, range(BEFORE, BEFORE + AFTER))  # needs a new leader, ISR 2

    def new_leader() -> int | None:
        try:
            current = admin.list_topics(timeout=5).topics[topic].partitions[PARTITION].leader
        except KafkaException:
            return None
        return current if current not in (-1, leader) else None

    assert wait_for("a new leader of partition 0", new_leader, 30) != leader
    assert sorted(_consume_all(bootstrap, topic, BEFORE + AFTER)) == list(range(BEFORE + AFTER))

    result = private_stack.down(only="kafka")
    assert result[unit] == "not running (removed a stale PID file)"
    assert set(result) == {"kafka", "kafka-2", "kafka-3"}
    assert all(stack.pid_is_gone(pid) for pid in pids.values() if pid)
    assert not list(private_stack.state_dir.glob("kafka*.pid"))
    assert time.monotonic() - start < 90
