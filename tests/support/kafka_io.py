"""Produce to and read back from the real broker in tests."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import orjson
from confluent_kafka import Consumer, Message, Producer

from schemas.contracts import kafka_key


def produce_events(bootstrap: str, topic: str, events: Iterable[dict[str, Any]]) -> int:
    """Send events keyed host/gpu_uuid, in order; returns how many were delivered."""
    return produce_raw(bootstrap, topic, ((kafka_key(e), orjson.dumps(e)) for e in events))


def produce_raw(
    bootstrap: str, topic: str, records: Iterable[tuple[str | None, bytes | None]]
) -> int:
    """Send raw (key, value) pairs; fails the test if any delivery fails."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5}
    )
    errors: list[str] = []
    delivered = 0

    def on_delivery(err: Any, _msg: Message) -> None:
        nonlocal delivered
        if err is not None:
            errors.append(str(err))
        else:
            delivered += 1

    for key, value in records:
        while True:
            try:
                producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(30) == 0, "messages still queued after 30 s"
    assert not errors, errors[:3]
    return delivered


def read_topic(bootstrap: str, topic: str, expected: int, timeout_s: float = 60.0) -> list[Message]:
    """Read ``expected`` messages from the beginning of ``topic`` with a throwaway group."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    found: list[Message] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(found) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                if msg.error() is None:
                    found.append(msg)
    finally:
        consumer.close()
    return found


def headers_of(msg: Message) -> dict[str, str]:
    raw = msg.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return {k: v.decode() if isinstance(v, bytes) else (v or "") for k, v in pairs}
