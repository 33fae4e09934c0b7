"""Publishing that never waits: a bounded queue in front of a Kafka producer thread.

    >>> publisher = Publisher(settings.kafka_config(), "tokens", capacity=10_000)
    >>> publisher.start()
    >>> publisher.offer(event)      # returns at once; False = dropped (counted, logged)
    >>> publisher.close(timeout_s=5)

A client request must never fail or slow down because Kafka is slow or down, so nothing here
blocks the caller: ``offer`` puts into a bounded queue or drops. The thread validates, produces
and serves delivery reports. An event is *dropped* (counted by reason, logged at most once a
second) when the queue is full, when librdkafka's own queue is full, when its delivery fails
(after delivery.timeout.ms) or when it is still unsent at shutdown.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Final

import orjson
from confluent_kafka import KafkaError, Message, Producer

from schemas.contracts import ContractViolation, kafka_key, validate

__all__ = ["DROP_REASONS", "Publisher"]

log = logging.getLogger("producers.proxy.publisher")

DROP_REASONS: Final = ("queue_full", "kafka_queue_full", "delivery_failed", "invalid", "shutdown")
# The thread waits this long for a queued event before serving delivery reports again.
_IDLE_POLL_S: Final = 0.05
# A dropped-event log line at most this often (the counter has every one).
_DROP_LOG_EVERY_S: Final = 1.0
# Health says "degraded" for this long after the last drop or broker error.
RECENT_S: Final = 60.0
_BROKER_DOWN: Final = frozenset({KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT})

DropHook = Callable[[str, int], None]


class Publisher:
    """Bounded, non-blocking publisher of contract-valid events (see the module doc)."""

    def __init__(
        self,
        kafka_config: dict[str, Any],
        topic: str,
        *,
        capacity: int,
        on_drop: DropHook | None = None,
        on_delivered: Callable[[], None] | None = None,
    ) -> None:
        config = dict(kafka_config)
        # librdkafka's queue is a second buffer: bound it like ours, so a long outage costs
        # a known amount of memory (its default is 100k messages / 1 GB).
        config.setdefault("queue.buffering.max.messages", max(capacity, 1))
        config["error_cb"] = self._on_error
        self.topic = topic
        self._producer = Producer(config)
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=capacity)
        self._on_drop = on_drop
        self._on_delivered = on_delivered
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="proxy-publisher", daemon=True)
        self._lock = threading.Lock()
        self.dropped: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self.delivered = 0
        self.in_flight = 0
        self.broker_error: str | None = None
        self.last_problem_at: float | None = None  # monotonic time of the last drop/error
        self._last_drop_log = 0.0
        self._unlogged = 0

    def start(self) -> None:
        self._thread.start()

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    @property
    def capacity(self) -> int:
        return self._queue.maxsize

    def offer(self, event: dict[str, Any]) -> bool:
        """Queue ``event`` for Kafka without waiting; False if it was dropped (queue full)."""
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self._drop("queue_full", 1)
            return False
        return True

    def status(self) -> dict[str, Any]:
        """What /_proxy/health reports about publishing."""
        recent = (
            self.last_problem_at is not None and time.monotonic() - self.last_problem_at < RECENT_S
        )
        return {
            "kafka": "unreachable" if self.broker_error else "ok",
            "kafka_error": self.broker_error,
            "queued": self.queued,
            "capacity": self.capacity,
            "in_flight": self.in_flight,
            "delivered": self.delivered,
            "dropped": dict(self.dropped),
            "dropped_total": sum(self.dropped.values()),
            "degraded": bool(self.broker_error) or recent,
        }

    def close(self, timeout_s: float) -> None:
        """Send what is queued within ``timeout_s``; the rest is dropped (reason shutdown)."""
        deadline = time.monotonic() + timeout_s
        while self._queue.qsize() and time.monotonic() < deadline:
            time.sleep(0.02)
        self._stop.set()
        self._thread.join(max(0.1, deadline - time.monotonic()))
        left = max(0.0, deadline - time.monotonic())
        while self.in_flight and left > 0:
            self._producer.flush(min(0.2, left))
            left = deadline - time.monotonic()
        leftover = self._queue.qsize() + self.in_flight
        if leftover:
            self._producer.purge(in_queue=True, in_flight=True, blocking=False)
            self._drop("shutdown", leftover)
            self.in_flight = 0

    # -- the thread -------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                event = self._queue.get(timeout=_IDLE_POLL_S)
            except queue.Empty:
                self._producer.poll(0)
                continue
            self._produce(event)
            self._producer.poll(0)

    def _produce(self, event: dict[str, Any]) -> None:
        try:
            validate(event)
        except ContractViolation as exc:  # a bug in the proxy: never sent, counted, logged
            log.error("invalid event dropped event_id=%s error=%s", event.get("event_id"), exc)
            self._drop("invalid", 1)
            return
        try:
            self._producer.produce(
                self.topic,
                value=orjson.dumps(event),
                key=kafka_key(event).encode(),
                on_delivery=self._on_delivery,
            )
        except BufferError:
            self._drop("kafka_queue_full", 1)
            return
        with self._lock:
            self.in_flight += 1

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        with self._lock:
            self.in_flight = max(0, self.in_flight - 1)
        if err is None:
            self.delivered += 1
            self.broker_error = None  # a delivery proves the broker answers again
            if self._on_delivered is not None:
                self._on_delivered()
            return
        if err.code() in (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT):
            return  # counted by close()
        self._drop("delivery_failed", 1, err.str())

    def _on_error(self, err: KafkaError) -> None:
        if err.code() in _BROKER_DOWN or err.fatal():
            self.broker_error = err.str()
            self.last_problem_at = time.monotonic()
        log.warning("kafka error code=%s reason=%s", err.name(), err.str())

    def _drop(self, reason: str, n: int, detail: str = "") -> None:
        with self._lock:
            self.dropped[reason] += n
        self.last_problem_at = time.monotonic()
        if self._on_drop is not None:
            self._on_drop(reason, n)
        now = time.monotonic()
        if now - self._last_drop_log < _DROP_LOG_EVERY_S:
            self._unlogged += n
            return
        self._last_drop_log = now
        extra = f" (+{self._unlogged} earlier drops not logged)" if self._unlogged else ""
        self._unlogged = 0
        log.error(
            "usage events dropped reason=%s count=%d total=%d%s%s",
            reason,
            n,
            sum(self.dropped.values()),
            f" error={detail}" if detail else "",
            extra,
        )
