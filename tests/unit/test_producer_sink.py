"""KafkaSink without a broker: refuses invalid events, bounded start-up check, bounded exit."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from producers.exceptions import BrokerUnavailable
from producers.kafka_sink import KafkaSink
from producers.settings import load_settings
from schemas.contracts import ContractViolation

# Port 1 on loopback: nothing listens, connections are refused at once.
NOWHERE = "127.0.0.1:1"


def event(i: int) -> dict[str, Any]:
    return {
        "schema": "token.usage.v1",
        "event_id": str(uuid.uuid4()),
        "ts": "2026-11-23T10:00:00Z",
        "host": "h",
        "gpu_uuid": f"GPU-{i % 2}",
        "gpu_index": i % 2,
        "model": "m",
        "input_tokens": 1,
        "output_tokens": 1,
        "latency_ms": 1.0,
    }


@pytest.fixture
def sink() -> Any:
    settings = load_settings({"KAFKA_BOOTSTRAP": NOWHERE, "PRODUCER_CLIENT_ID": "unit"})
    s = KafkaSink(settings.kafka_config(), "tokens")
    yield s
    s.close()


def test_unreachable_broker_is_reported_within_the_timeout(sink: KafkaSink) -> None:
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match=r"cannot reach Kafka at 127\.0\.0\.1:1 within 1s"):
        sink.check_ready(timeout_s=1.0)
    assert time.monotonic() - started < 5


def test_invalid_event_raises_and_is_not_sent(sink: KafkaSink) -> None:
    bad = event(0)
    bad["output_tokens"] = -1
    with pytest.raises(ContractViolation, match="output_tokens"):
        sink.send(bad)
    assert sink.stats.sent == 0


@pytest.mark.parametrize("ts", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"])
def test_an_unconvertible_timestamp_is_a_contract_violation_not_an_overflow(
    sink: KafkaSink, ts: str
) -> None:
    with pytest.raises(ContractViolation, match=r"ts: timestamp .* cannot be converted to UTC"):
        sink.send({**event(0), "ts": ts})
    assert sink.stats.sent == 0


def test_abandon_purges_what_could_not_be_delivered(sink: KafkaSink) -> None:
    for i in range(100):
        sink.send(event(i))
    assert sink.stats.sent == 100
    assert sink.flush(0.5) == 100  # bounded: nothing can be delivered
    started = time.monotonic()
    sink.abandon()
    assert sink.stats.purged == 100
    assert (sink.stats.delivered, sink.stats.failed, sink.stats.in_flight) == (0, 0, 0)
    assert sink.stats.unconfirmed == 100
    assert time.monotonic() - started < 2  # not the 30 s delivery timeout


def test_flush_can_be_cut_short() -> None:
    class Set:
        def is_set(self) -> bool:
            return True

    settings = load_settings({"KAFKA_BOOTSTRAP": NOWHERE})
    sink = KafkaSink(settings.kafka_config(), "tokens")
    try:
        sink.send(event(0))
        started = time.monotonic()
        assert sink.flush(30, abort=Set()) == 1
        assert time.monotonic() - started < 1
    finally:
        sink.abandon()
        sink.close()
