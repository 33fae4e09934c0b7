"""The thin Kafka adapter: validate, key, serialise, produce, count deliveries.

    >>> sink = KafkaSink(settings.kafka_config(), settings.topic)
    >>> sink.check_ready(timeout_s=10)      # BrokerUnavailable / TopicMissing
    >>> sink.send(event)                    # raises ContractViolation if the event is invalid
    >>> undelivered = sink.flush(timeout_s=30)
    >>> sink.close()

Guarantees: every event is validated against its contract before it is produced (an invalid
event is a producer bug and is raised, never sent); key = ``host/gpu_uuid`` so one GPU's
events stay on one partition in order; a full local queue (``BufferError``) is back-pressure —
serve delivery reports and retry, never drop; each delivery report is counted as delivered or
failed, and a failure is logged with ``topic[partition]@offset`` and the key.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from producers.exceptions import BrokerUnavailable, TopicMissing
from schemas.contracts import kafka_key, validate

__all__ = ["DeliveryStats", "EventSink", "KafkaSink"]

log = logging.getLogger(__name__)

# While the local queue is full, wait this long for delivery reports before retrying: long
# enough not to spin, short enough that a stop signal is noticed promptly.
BACKPRESSURE_POLL_S: Final = 0.1
# flush() is called in slices of this length so a second signal can cut it short.
FLUSH_SLICE_S: Final = 0.5
# When a broker outage outlasts the delivery timeout, thousands of reports fail at once: log
# at most this many per second (the rest are counted, and the summary has the total).
FAILURE_LOG_PER_S: Final = 10
# After purge(), the purged messages' reports arrive within milliseconds; wait at most this.
PURGE_REPORTS_S: Final = 1.0
_PURGED: Final = frozenset({KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT})
# librdkafka reports an unreachable broker on every reconnect attempt (many per second while
# a request waits); the same line is logged at most once per this many seconds.
REPEAT_WINDOW_S: Final = 10.0


class _RepeatFilter(logging.Filter):
    """Drops a record whose text was already logged within the last REPEAT_WINDOW_S."""

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        now = time.monotonic()
        last = self._last.get(text)
        if last is not None and now - last < REPEAT_WINDOW_S:
            return False
        if len(self._last) > 1000:  # bounded: forget everything rather than grow without end
            self._last.clear()
        self._last[text] = now
        return True


_rdkafka_log = logging.getLogger("producers.librdkafka")
_rdkafka_log.addFilter(_RepeatFilter())
_error_log = logging.getLogger("producers.kafka")
_error_log.addFilter(_RepeatFilter())


@dataclass(slots=True)
class DeliveryStats:
    """What was handed to Kafka and what Kafka confirmed."""

    sent: int = 0
    delivered: int = 0
    failed: int = 0
    purged: int = 0  # given up on at exit (abandon()); not confirmed, not counted as failed
    backpressure_waits: int = 0

    @property
    def in_flight(self) -> int:
        """Sent and still with librdkafka: no delivery report yet."""
        return self.sent - self.delivered - self.failed - self.purged

    @property
    def unconfirmed(self) -> int:
        """Sent but neither reported delivered nor failed (purged ones included)."""
        return self.sent - self.delivered - self.failed


class EventSink(Protocol):
    """Where the producer loops put events (KafkaSink, or an in-memory double in tests)."""

    stats: DeliveryStats
    fatal: str | None

    def send(self, event: dict[str, Any]) -> None: ...

    def poll(self, timeout_s: float) -> None: ...

    def flush(self, timeout_s: float, *, abort: Any = None) -> int: ...

    def abandon(self) -> None: ...


class KafkaSink:
    """An idempotent confluent-kafka Producer writing contract-checked events to one topic."""

    def __init__(self, config: Mapping[str, Any], topic: str) -> None:
        self.topic = topic
        self._bootstrap = str(config.get("bootstrap.servers", "?"))
        self.stats = DeliveryStats()
        # Set when librdkafka reports a fatal error (e.g. the idempotent producer lost its
        # sequence state); the loops stop sending when they see it.
        self.fatal: str | None = None
        self._failure_window_start = 0.0
        self._failures_logged = 0
        self._failures_unlogged = 0
        self._producer = Producer(
            {
                **config,
                "error_cb": self._on_error,
                # librdkafka's own log lines go through Python logging (served by poll()).
                "logger": _rdkafka_log,
            }
        )

    def check_ready(self, timeout_s: float) -> int:
        """Ask the cluster for metadata; return the topic's partition count.

        Raises BrokerUnavailable if no broker answers within ``timeout_s``, TopicMissing if
        the topic does not exist (topics are created by the deployment, never by the producer).
        """
        try:
            # All topics, not list_topics(topic): asking for one topic's metadata can
            # auto-create it on brokers that allow that.
            metadata = self._producer.list_topics(timeout=timeout_s)
        except KafkaException as exc:
            raise BrokerUnavailable(
                f"cannot reach Kafka at {self._bootstrap} within {timeout_s:g}s ({_reason(exc)})"
            ) from None
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None:
            reason = "does not exist" if topic is None else str(topic.error)
            raise TopicMissing(
                f"topic {self.topic!r} {reason} on Kafka at {self._bootstrap} "
                "(create it first, e.g. `make stack-up` or the compose topic-init service)"
            )
        return len(topic.partitions)

    def send(self, event: dict[str, Any]) -> None:
        """Validate ``event`` and produce it; block on back-pressure instead of dropping."""
        validate(event)  # ContractViolation = a bug in the producer: fail loudly
        key = kafka_key(event).encode()
        value = orjson.dumps(event)
        while True:
            try:
                self._producer.produce(
                    self.topic, value=value, key=key, on_delivery=self._on_delivery
                )
                break
            except BufferError:
                # Local queue full: let librdkafka deliver and report, then try again.
                self.stats.backpressure_waits += 1
                self._producer.poll(BACKPRESSURE_POLL_S)
        self.stats.sent += 1
        self._producer.poll(0)

    def poll(self, timeout_s: float) -> None:
        """Serve delivery reports for up to ``timeout_s`` (use it as the loops' sleep)."""
        self._producer.poll(timeout_s)

    def flush(self, timeout_s: float, *, abort: Any = None) -> int:
        """Wait up to ``timeout_s`` for outstanding deliveries; return how many are left.

        ``abort`` (a ``threading.Event`` or anything with ``is_set()``) cuts the wait short.
        """
        deadline = time.monotonic() + timeout_s
        # Count our own messages: len(producer) also counts queued log and error events.
        while self.stats.in_flight:
            left = deadline - time.monotonic()
            if left <= 0 or (abort is not None and abort.is_set()):
                break
            self._producer.flush(min(FLUSH_SLICE_S, left))
        return self.stats.in_flight

    def abandon(self) -> None:
        """Give up on every message not yet confirmed (after a flush timed out).

        Without this, close() would wait until each one's delivery timeout expired. Purged
        messages are counted in ``stats.purged`` and stay unconfirmed (in-flight ones may
        still have reached the broker).
        """
        self._producer.purge(in_queue=True, in_flight=True, blocking=True)
        deadline = time.monotonic() + PURGE_REPORTS_S
        while self.stats.in_flight and time.monotonic() < deadline:
            self._producer.poll(0.05)
        self._producer.poll(0)

    def close(self) -> None:
        """Release the client (call flush() first; unsent messages are discarded)."""
        self._producer.close()

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.stats.delivered += 1
            return
        if err.code() in _PURGED:
            self.stats.purged += 1  # we gave up on it in abandon(); counted, not logged each
            return
        self.stats.failed += 1
        now = time.monotonic()
        if now - self._failure_window_start >= 1.0:
            self._failure_window_start, self._failures_logged = now, 0
        if self._failures_logged >= FAILURE_LOG_PER_S:
            self._failures_unlogged += 1
            return
        self._failures_logged += 1
        key = msg.key()
        offset = msg.offset()
        log.error(
            "delivery failed %s[%s]@%s key=%s error=%s%s",
            msg.topic(),
            msg.partition(),
            offset if offset is not None and offset >= 0 else "-",  # no offset: never written
            key.decode(errors="replace") if isinstance(key, bytes) else key,
            err.str(),
            f" (+{self._failures_unlogged} failures not logged)" if self._failures_unlogged else "",
        )
        self._failures_unlogged = 0

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self.fatal = err.str()
            _error_log.error("kafka fatal error code=%s reason=%s", err.name(), err.str())
        else:
            # Transient (broker down, connection refused): librdkafka retries on its own.
            _error_log.warning("kafka error code=%s reason=%s", err.name(), err.str())


def _reason(exc: KafkaException) -> str:
    err = exc.args[0] if exc.args else None
    return err.str() if isinstance(err, KafkaError) else str(exc)
