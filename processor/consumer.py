"""The consume loop: Kafka batch -> price -> one bulk write -> dead letters -> commit.

    >>> loop = PipelineLoop(settings, store)
    >>> loop.start()          # its own thread; the HTTP server keeps the event loop
    >>> loop.status()         # what /health reports
    >>> loop.stop()           # finish the batch, commit, leave the group

States (one method each): **consuming** (`_consume`), **degraded** (`_wait_degraded`: the
assignment is paused, we keep polling so the group does not evict us), **recovering**
(`_recover`: the dependency answers again, the kept batch is delivered), **stopping** (the
`finally` of `_run`). Delivery (`_deliver`) is the guarantee of DESIGN.md, in this order:
cost every message, write the batch, send its dead letters, commit its offsets. Nothing is
committed before it is stored or dead-lettered; MongoDB's `_id = event_id` turns the
redelivery of an uncommitted batch into "already stored".
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_when_event_set,
    wait_exponential,
)

from processor import metrics
from processor.anomalies import AnomalyDetector
from processor.cost import CostModel, PriceBook
from processor.dead_letters import DeadLetters, Letter
from processor.documents import GPU_METRICS
from processor.exceptions import DeadLetterUnavailable, StoreUnavailable
from processor.offsets import Offsets
from processor.pricing import BatchPlan, Pricer, Rejected, key_repr
from processor.product_metrics import ProductMetrics, newly_stored
from processor.settings import ProcessorSettings
from processor.store import MongoStore, WriteResult
from service_settings.logs import KAFKA_LOGGER

__all__ = ["LoopStatus", "PipelineLoop"]

log = logging.getLogger(__name__)

# A loop that has not come back from consume() for this long is reported as stuck.
_STUCK_AFTER_S: Final = 60.0
_FIRST_BACKOFF_S: Final = 0.5
# While paused, consume() only serves rebalances and group heartbeats: no hurry.
_PAUSED_POLL_S: Final = 0.2


class _Stopped(RetryError):
    """Asked to stop before MongoDB answered."""


@dataclass(frozen=True)
class LoopStatus:
    """A consistent snapshot of the loop for /health."""

    running: bool
    seconds_since_poll: float | None
    assigned_partitions: list[int]
    lag: dict[int, int]
    degraded: str | None  # "mongodb" | "kafka" | None
    degraded_reason: str | None
    kafka_error: str | None
    batches: int


class PipelineLoop:
    """Consumes the topic as one member of the processor group."""

    def __init__(
        self,
        settings: ProcessorSettings,
        store: MongoStore,
        *,
        consumer_factory: Callable[[dict[str, Any]], Consumer] = Consumer,
        producer_factory: Callable[[dict[str, Any]], Producer] = Producer,
    ) -> None:
        self._settings = settings
        self._store = store
        self._consumer_factory = consumer_factory
        self._producer_factory = producer_factory
        model = CostModel(
            PriceBook(settings.price_per_hour_usd, settings.price_map()),
            window_s=settings.cost_window_s,
            lateness_s=settings.cost_lateness_s,
        )
        self._pricer = Pricer(
            model,
            settings.output_weights(),
            max_message_bytes=settings.max_message_bytes,
            anomalies=AnomalyDetector(settings.anomaly_rules()),
        )
        self._offsets = Offsets(settings.kafka_topic)
        self._product = ProductMetrics(
            max_models=settings.metrics_max_models,
            max_tenants=settings.metrics_max_tenants,
            budgets=settings.tenant_budgets_usd_per_day,
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Touched only by the loop thread (rebalance callbacks run inside consume(), there).
        self._needs_rebuild: set[int] = set()
        self._kept: list[Message] = []  # a batch not yet delivered, while degraded
        self._backoff = _FIRST_BACKOFF_S
        self._next_retry = 0.0
        self._next_lag = 0.0
        # Shared with the HTTP threads under self._lock.
        self._lock = threading.Lock()
        self._lag: dict[int, int] = {}
        self._assigned_snapshot: list[int] = []
        self._degraded: str | None = None
        self._degraded_reason: str | None = None
        self._kafka_error: str | None = None
        self._last_poll: float | None = None
        self._batches = 0
        self._crashed: str | None = None

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="consume-loop", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Finish the current batch, commit it, leave the group."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.error("consume loop did not stop within %.0fs", timeout_s)

    def status(self) -> LoopStatus:
        with self._lock:
            alive = self._thread is not None and self._thread.is_alive()
            since = None if self._last_poll is None else time.monotonic() - self._last_poll
            return LoopStatus(
                running=alive and since is not None and since < _STUCK_AFTER_S,
                seconds_since_poll=since,
                assigned_partitions=list(self._assigned_snapshot),
                lag=dict(self._lag),
                degraded=self._degraded,
                degraded_reason=self._degraded_reason or self._crashed,
                kafka_error=self._kafka_error,
                batches=self._batches,
            )

    # --- the states ---------------------------------------------------------------------

    def _run(self) -> None:
        s = self._settings
        # logger: librdkafka's own lines through Python logging (LOG_FORMAT), not raw stderr.
        consumer = self._consumer_factory(
            {**s.consumer_config(), "error_cb": self._on_kafka_error, "logger": KAFKA_LOGGER}
        )
        producer = self._producer_factory(
            {**s.dlq_producer_config(), "error_cb": self._on_kafka_error, "logger": KAFKA_LOGGER}
        )
        letters = DeadLetters(producer, s.kafka_dlq_topic)
        try:
            if not self._prepare_store():
                return
            consumer.subscribe(
                [s.kafka_topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_revoke,
            )
            while not self._stop.is_set():
                if self._degraded is None:
                    self._consume(consumer, letters)
                else:
                    self._wait_degraded(consumer, producer, letters)
        except Exception as exc:  # the loop must never die silently; /health reports it
            log.exception("consume loop crashed")
            with self._lock:
                self._crashed = f"consume loop crashed: {exc!r}"
        finally:  # stopping: what was delivered is committed; flush, leave the group
            try:
                producer.flush(5.0)
            finally:
                consumer.close()
            log.info("consume loop stopped")

    def _consume(self, consumer: Consumer, letters: DeadLetters) -> None:
        s = self._settings
        messages = consumer.consume(s.consume_batch_size, s.consume_timeout_s)
        self._touch()
        if messages:
            self._process(consumer, letters, messages)
        elif self._offsets.deferred:
            self._offsets.retry_deferred(consumer)
        if time.monotonic() >= self._next_lag:
            self._refresh_lag(consumer)
            self._next_lag = time.monotonic() + s.lag_interval_s

    def _wait_degraded(self, consumer: Consumer, producer: Producer, letters: DeadLetters) -> None:
        if time.monotonic() >= self._next_retry:
            if self._recover(consumer, producer, letters):
                self._backoff = _FIRST_BACKOFF_S
                return
            # Exponential backoff: a store that is down is asked less and less often.
            self._next_retry = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, self._settings.store_retry_max_s)
        # Keep polling while paused: it serves rebalances and keeps us in the group. What
        # arrives joins the kept batch, in partition order.
        messages = consumer.consume(self._settings.consume_batch_size, _PAUSED_POLL_S)
        self._touch()
        consumer.pause(consumer.assignment())
        self._kept.extend(messages)
        if time.monotonic() >= self._next_lag:
            self._refresh_lag(consumer, fresh_marks=True)
            self._next_lag = time.monotonic() + self._settings.lag_interval_s

    def _recover(self, consumer: Consumer, producer: Producer, letters: DeadLetters) -> bool:
        try:
            self._store.ping()
            producer.list_topics(self._settings.kafka_dlq_topic, timeout=2.0)
        except (StoreUnavailable, KafkaException) as exc:
            log.info("still degraded: %s", exc)
            return False
        kept, self._kept = self._kept, []
        self._set_degraded(None, None)
        metrics.STORE_UP.set(1)
        log.info("dependencies answer again; resuming")
        owned = [m for m in kept if _partition(m) in self._offsets.assigned]
        if owned:
            self._process(consumer, letters, owned)
        if self._degraded is not None:
            return False
        consumer.resume(consumer.assignment())
        return True

    def _process(self, consumer: Consumer, letters: DeadLetters, batch: list[Message]) -> None:
        try:
            self._deliver(consumer, letters, batch)
        except StoreUnavailable as exc:
            self._degrade(consumer, batch, "mongodb", str(exc))
        except (DeadLetterUnavailable, KafkaException) as exc:
            self._degrade(consumer, batch, "kafka", str(exc))

    # --- delivery: cost -> write -> dead letters -> commit ------------------------------

    def _deliver(self, consumer: Consumer, letters: DeadLetters, batch: list[Message]) -> None:
        records = [m for m in batch if _usable(m)]
        if not records:
            return
        self._rebuild_new_partitions(records)
        plan = self._pricer.plan(records)
        result = self._store.write(plan.docs)
        dead = self._letters(plan, result)
        letters.send(dead)
        self._offsets.commit(consumer, _next_offsets(records))
        self._count(plan, result, dead, len(batch))

    def _rebuild_new_partitions(self, records: list[Message]) -> None:
        """A newly owned partition's cost state comes from the store before its first cost."""
        first: dict[int, int] = {}
        for m in records:
            first.setdefault(_partition(m), _offset(m))
        for partition in sorted(first.keys() & self._needs_rebuild):
            history = self._store.partition_history(
                partition, first[partition], self._pricer.retain_us,
                readings=self._pricer.anomaly_window,
            )  # fmt: skip
            gpus = self._pricer.rebuild(partition, history)
            self._needs_rebuild.discard(partition)
            metrics.PARTITION_REBUILDS.inc()
            log.info(
                "rebuilt cost state partition=%d before_offset=%d gpus=%d token_events=%d",
                partition, first[partition], gpus, len(history.token_events),
            )  # fmt: skip

    def _letters(self, plan: BatchPlan, result: WriteResult) -> list[Letter]:
        topic = self._settings.kafka_topic
        out = []
        for rejected in plan.rejected:
            _log_rejected(rejected)
            out.append(Letter(rejected.record, rejected.reason, rejected.schema, topic))
        for ident, reason in result.rejected.items():
            priced = plan.origin[ident]
            reason = f"store rejected: {reason}"
            out.append(Letter(priced.record, reason, priced.doc["schema"], topic))
        return out

    def _count(
        self, plan: BatchPlan, result: WriteResult, letters: list[Letter], batch_size: int
    ) -> None:
        """Metrics of a delivered batch (after the commit: a redelivery is not double counted
        in the end-to-end latency, and the counters say what is durable)."""
        for schema, n in plan.consumed.items():
            metrics.EVENTS_CONSUMED.labels(schema).inc(n)
        for rejected in plan.rejected:
            counter = (
                metrics.EVENTS_UNPROCESSABLE if rejected.kind == "unprocessable"
                else metrics.EVENTS_INVALID
            )  # fmt: skip
            counter.labels(rejected.schema).inc()
        for letter in letters:
            metrics.DEAD_LETTERED.labels(letter.schema).inc()
        for collection, n in result.inserted.items():
            metrics.EVENTS_WRITTEN.labels(collection).inc(n)
        for collection, n in (result.duplicates + plan.in_batch_duplicates).items():
            metrics.EVENTS_DUPLICATE.labels(collection).inc(n)
        for doc in plan.docs[GPU_METRICS]:
            ident = (GPU_METRICS, doc["_id"])
            # Flags of readings stored by this batch only: a redelivery is not counted again.
            if ident not in result.duplicate_ids and ident not in result.rejected:
                for flag in doc["anomalies"]:
                    metrics.GPU_ANOMALIES.labels(flag["rule"]).inc()
        metrics.BATCH_SIZE.observe(batch_size)
        metrics.WRITE_LATENCY.observe(result.seconds)
        for doc in plan.documents():
            metrics.END_TO_END_LATENCY.observe(max(0.0, result.stored_at - doc["ts_us"] / 1e6))
        self._product.record(newly_stored(plan.docs, result))
        metrics.STORE_UP.set(1)
        with self._lock:
            self._batches += 1
            self._kafka_error = None

    # --- degraded mode ------------------------------------------------------------------

    def _degrade(self, consumer: Consumer, batch: list[Message], part: str, reason: str) -> None:
        # The batch's partitions may hold state from messages that were never stored: forget
        # it and rebuild from the store when the kept batch is delivered again.
        partitions = {_partition(m) for m in batch if m.error() is None}
        self._pricer.forget(partitions)
        self._needs_rebuild.update(partitions & self._offsets.assigned)
        self._kept = batch + self._kept
        consumer.pause(consumer.assignment())
        if part == "mongodb":
            metrics.STORE_UP.set(0)
        self._set_degraded(part, reason)
        log.error("pipeline degraded part=%s reason=%r; consumption paused", part, reason)

    def _prepare_store(self) -> bool:
        """Create indexes before consuming; while MongoDB is down, report it and retry."""
        retrying = Retrying(
            retry=retry_if_exception_type(StoreUnavailable),
            wait=wait_exponential(min=_FIRST_BACKOFF_S, max=self._settings.store_retry_max_s),
            stop=stop_when_event_set(self._stop),
            sleep=self._pause,  # a stop request cuts the wait short
            before_sleep=self._store_not_ready,
            retry_error_cls=_Stopped,
        )
        try:
            for attempt in retrying:
                with attempt:
                    self._touch()
                    self._store.ensure_indexes()
        except _Stopped:
            return False
        metrics.STORE_UP.set(1)
        self._set_degraded(None, None)
        return True

    def _pause(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def _store_not_ready(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        metrics.STORE_UP.set(0)
        self._set_degraded("mongodb", str(error))
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        log.error("cannot prepare MongoDB, retrying in %.1fs: %s", wait, error)

    # --- rebalance and Kafka callbacks (run on the loop thread, inside consume()) ---------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = [tp.partition for tp in partitions]
        self._offsets.assign(numbers)
        self._needs_rebuild.update(numbers)
        self._publish_assignment()
        log.info("partitions assigned %s", sorted(numbers))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = {tp.partition for tp in partitions}
        self._offsets.revoke(numbers)
        self._needs_rebuild -= numbers
        self._pricer.forget(numbers)
        self._kept = [m for m in self._kept if _partition(m) not in numbers]
        for p in numbers:
            metrics.forget_partition(p)
        with self._lock:
            for p in numbers:
                self._lag.pop(p, None)
        self._publish_assignment()
        log.info("partitions revoked %s", sorted(numbers))

    def _on_kafka_error(self, err: KafkaError) -> None:
        log.warning("kafka error code=%s reason=%s", err.code(), err.str())
        if err.fatal():
            # E.g. FENCED_INSTANCE_ID: another replica runs with this KAFKA_GROUP_INSTANCE_ID.
            # The consumer cannot recover; /health must say so instead of looking idle.
            with self._lock:
                self._crashed = f"fatal Kafka error, restart needed: {err.str()}"
            self._stop.set()
            return
        if err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            with self._lock:
                self._kafka_error = err.str()

    def _refresh_lag(self, consumer: Consumer, *, fresh_marks: bool = False) -> None:
        try:
            if not self._offsets.assigned:
                # Nothing assigned (more replicas than partitions, or between rebalances): a
                # metadata round trip still tells whether the broker answers again.
                consumer.list_topics(self._settings.kafka_topic, timeout=2.0)
                lag: dict[int, int] = {}
                asked = True
            else:
                lag, asked = self._offsets.lag(
                    consumer, ask_broker=self._kafka_error is not None, fresh_marks=fresh_marks
                )
        except KafkaException as exc:
            log.debug("lag unavailable: %s", exc)
            return
        for p, n in lag.items():
            metrics.CONSUMER_LAG.labels(str(p)).set(n)
        with self._lock:
            self._lag = lag
            if asked:
                # The broker answered: an earlier transport error is over, even if no message
                # has arrived since (an idle topic would otherwise keep /health at 503).
                self._kafka_error = None

    # --- shared state -------------------------------------------------------------------

    def _touch(self) -> None:
        metrics.LAST_POLL.set(time.time())
        with self._lock:
            self._last_poll = time.monotonic()

    def _publish_assignment(self) -> None:
        with self._lock:
            self._assigned_snapshot = sorted(self._offsets.assigned)

    def _set_degraded(self, part: str | None, reason: str | None) -> None:
        with self._lock:
            self._degraded, self._degraded_reason = part, reason


def _usable(msg: Message) -> bool:
    err = msg.error()
    if err is None:
        return True
    if err.code() != KafkaError._PARTITION_EOF:
        log.warning("consume error code=%s reason=%s", err.code(), err.str())
    return False


def _partition(msg: Message) -> int:
    partition = msg.partition()
    assert partition is not None, "consumed message without a partition"
    return partition


def _offset(msg: Message) -> int:
    offset = msg.offset()
    assert offset is not None, "consumed message without an offset"
    return offset


def _next_offsets(records: list[Message]) -> dict[int, int]:
    """Per partition, the offset after the batch's last message: what a commit stores."""
    last: dict[int, int] = {}
    for m in records:
        last[_partition(m)] = max(last.get(_partition(m), -1), _offset(m))
    return {p: off + 1 for p, off in last.items()}


def _log_rejected(rejected: Rejected) -> None:
    record = rejected.record
    where = f"partition={record.partition()} offset={record.offset()} key={key_repr(record.key())}"
    if rejected.kind == "unprocessable":
        log.error("cannot process event %s reason=%r", where, rejected.reason,
                  exc_info=rejected.error)  # fmt: skip
    else:
        log.warning("%s event %s reason=%r", rejected.kind.replace("_", " "), where,
                    rejected.reason[:300])  # fmt: skip
