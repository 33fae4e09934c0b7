"""The consume loop: Kafka batch -> validate -> cost -> one bulk write -> commit.

    >>> loop = PipelineLoop(settings, store)
    >>> loop.start()          # its own thread; the HTTP server keeps the event loop
    >>> loop.status()         # what /health reports
    >>> loop.stop()           # finish the batch, commit, leave the group

Guarantees (DESIGN.md): offsets are committed only after the batch is durably written and its
dead letters flushed; MongoDB's `_id = event_id` turns redelivery into "already stored".
If MongoDB (or the dead-letter topic) fails, the batch's partitions forget their cost state,
the assignment is paused (we keep polling so the group does not evict us), and the kept batch
is processed again once the dependency answers, after rebuilding state from what is stored.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from processor import metrics
from processor.cost import CostModel, PriceBook
from processor.documents import (
    GPU_METRICS,
    TOKEN_USAGE,
    gpu_metrics_doc,
    to_ts_us,
    token_usage_doc,
)
from processor.exceptions import ProcessorError, StoreUnavailable
from processor.settings import ProcessorSettings
from processor.store import MongoStore
from schemas.contracts import GPU_METRICS_V1, ContractViolation, decode, kafka_key

__all__ = ["LoopStatus", "PipelineLoop"]

log = logging.getLogger(__name__)

# Bound on flushing dead letters before a commit; beyond it the batch is retried, never
# committed with its dead letters unsent.
_DLQ_FLUSH_S: Final = 15.0
# A loop that has not come back from consume() for this long is reported as stuck.
_STUCK_AFTER_S: Final = 60.0
_FIRST_BACKOFF_S: Final = 0.5
# Commit answers that mean "the group moved on", not "Kafka is down".
_REBALANCE_COMMIT_ERRORS: Final = frozenset(
    {
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError._STATE,
    }
)


class DeadLetterUnavailable(ProcessorError):
    """The dead-letter topic did not take a record in time."""


class _Unusable(Exception):
    """One message that cannot become a stored document; it goes to the dead-letter topic."""

    def __init__(self, reason: str, label: str) -> None:
        super().__init__(reason)
        self.reason, self.label = reason, label


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


@dataclass
class _Batch:
    messages: list[Message]
    first_offsets: dict[int, int] = field(default_factory=dict)


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
        self._model = CostModel(
            PriceBook(settings.price_per_hour_usd, settings.price_map()),
            window_s=settings.cost_window_s,
            lateness_s=settings.cost_lateness_s,
        )
        # The model's own rounding of W and L: a rebuild must reload exactly what it retains.
        self._retain_us = self._model.window_us + self._model.lateness_us
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        # Partition state, touched only by the loop thread (rebalance callbacks run inside
        # consume(), on that same thread).
        self._assigned: set[int] = set()
        self._needs_rebuild: set[int] = set()
        self._keys_by_partition: dict[int, set[str]] = defaultdict(set)
        self._uncommitted: dict[int, int] = {}  # next offsets whose commit a rebalance refused
        # Next offsets we committed ourselves, per owned partition: the owner is the only one
        # committing a partition, so the lag needs no broker round trip once it has committed.
        self._committed: dict[int, int] = {}
        self._kept: _Batch | None = None
        # Shared with the HTTP threads under self._lock.
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

    # --- the loop -----------------------------------------------------------------------

    def _run(self) -> None:
        s = self._settings
        consumer = self._consumer_factory({**s.consumer_config(), "error_cb": self._on_kafka_error})
        dlq = self._producer_factory({**s.dlq_producer_config(), "error_cb": self._on_kafka_error})
        try:
            if not self._ensure_indexes():
                return
            consumer.subscribe(
                [s.kafka_topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_revoke,
            )
            next_lag = 0.0
            backoff = _FIRST_BACKOFF_S
            next_retry = 0.0
            while not self._stop.is_set():
                if self._degraded is not None:
                    if time.monotonic() >= next_retry:
                        if self._try_recover(consumer, dlq):
                            backoff = _FIRST_BACKOFF_S
                            continue  # resumed: back to normal consumption
                        next_retry = time.monotonic() + backoff
                        backoff = min(backoff * 2, s.store_retry_max_s)
                    # Keep polling while paused: it serves rebalances and keeps us in the group.
                    self._absorb(consumer, consumer.consume(s.consume_batch_size, 0.2))
                    continue
                messages = consumer.consume(s.consume_batch_size, s.consume_timeout_s)
                self._touch()
                if messages:
                    self._process(consumer, dlq, _Batch(messages))
                elif self._uncommitted:
                    self._retry_commits(consumer)
                if time.monotonic() >= next_lag:
                    self._refresh_lag(consumer)
                    next_lag = time.monotonic() + s.lag_interval_s
        except Exception as exc:  # the loop must never die silently; /health reports it
            log.exception("consume loop crashed")
            with self._lock:
                self._crashed = f"consume loop crashed: {exc!r}"
        finally:
            try:
                dlq.flush(_DLQ_FLUSH_S)
            finally:
                consumer.close()
            log.info("consume loop stopped")

    def _ensure_indexes(self) -> bool:
        """Create indexes before consuming; while MongoDB is down, report it and retry."""
        backoff = _FIRST_BACKOFF_S
        while not self._stop.is_set():
            self._touch()
            try:
                self._store.ensure_indexes()
            except StoreUnavailable as exc:
                metrics.STORE_UP.set(0)
                with self._lock:
                    self._degraded, self._degraded_reason = "mongodb", str(exc)
                log.error("cannot prepare MongoDB, retrying in %.1fs: %s", backoff, exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self._settings.store_retry_max_s)
                continue
            metrics.STORE_UP.set(1)
            with self._lock:
                self._degraded = self._degraded_reason = None
            return True
        return False

    def _touch(self) -> None:
        with self._lock:
            self._last_poll = time.monotonic()

    def _absorb(self, consumer: Consumer, messages: list[Message]) -> None:
        """Messages that arrive while degraded join the kept batch (same partition order)."""
        self._touch()
        consumer.pause(consumer.assignment())
        if messages:
            if self._kept is None:
                self._kept = _Batch([])
            self._kept.messages.extend(messages)

    def _process(self, consumer: Consumer, dlq: Producer, batch: _Batch) -> None:
        try:
            self._handle(consumer, dlq, batch)
        except StoreUnavailable as exc:
            self._degrade(consumer, batch, "mongodb", str(exc))
        except (DeadLetterUnavailable, KafkaException) as exc:
            self._degrade(consumer, batch, "kafka", str(exc))

    def _handle(self, consumer: Consumer, dlq: Producer, batch: _Batch) -> None:
        valid: list[Message] = []
        for msg in batch.messages:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error code=%s reason=%s", err.code(), err.str())
                continue
            batch.first_offsets.setdefault(_partition(msg), _offset(msg))
            valid.append(msg)
        if not valid:
            return
        for partition, first in sorted(batch.first_offsets.items()):
            if partition in self._needs_rebuild:
                self._rebuild(partition, first)

        docs: dict[str, list[dict[str, Any]]] = {GPU_METRICS: [], TOKEN_USAGE: []}
        origin: dict[tuple[str, str], Message] = {}
        dead: list[tuple[Message, str, str]] = []
        for msg in valid:
            try:
                collection, doc = self._document(msg)
            except _Unusable as exc:
                dead.append((msg, exc.reason, exc.label))
                continue
            # Ids are unique per contract (= per collection), as MongoDB's _id index is: a
            # reading may share an event_id with a token event whatever the batching.
            if (collection, doc["_id"]) in origin:
                # Unordered inserts may apply either copy; keep the first, as a replay would.
                metrics.EVENTS_DUPLICATE.labels(collection).inc()
                continue
            origin[(collection, doc["_id"])] = msg
            docs[collection].append(doc)

        stored_at = time.time()
        stamp = datetime.fromtimestamp(stored_at, UTC)
        for collection_docs in docs.values():
            for doc in collection_docs:
                doc["stored_at"] = stamp  # for end-to-end latency; not part of the cost
        started = time.perf_counter()
        result = self._store.write(docs)
        metrics.WRITE_LATENCY.observe(time.perf_counter() - started)
        metrics.STORE_UP.set(1)
        for (collection, doc_id), reason in result.rejected.items():
            msg = origin[(collection, doc_id)]
            dead.append((msg, f"store rejected: {reason}", _claimed_schema(msg.value())))
        self._send_dead_letters(dlq, dead)
        self._commit(consumer, batch)

        for collection, n in result.inserted.items():
            metrics.EVENTS_WRITTEN.labels(collection).inc(n)
        for collection, n in result.duplicates.items():
            metrics.EVENTS_DUPLICATE.labels(collection).inc(n)
        metrics.BATCH_SIZE.observe(len(batch.messages))
        for collection_docs in docs.values():
            for doc in collection_docs:
                metrics.END_TO_END_LATENCY.observe(max(0.0, stored_at - doc["ts_us"] / 1e6))
        with self._lock:
            self._batches += 1
            self._kafka_error = None

    def _document(self, msg: Message) -> tuple[str, dict[str, Any]]:
        """Decode, check the key, price and build the stored document of one message.

        Raises _Unusable for anything that cannot become a document: a contract violation,
        a key that is not the event's ``host/gpu_uuid``, or any error of the cost model or
        the document builder on this one value. One message never stops the loop.
        """
        raw = msg.value()
        try:
            event = decode(raw, max_bytes=self._settings.max_message_bytes)
        except ContractViolation as exc:
            label = _claimed_schema(raw)
            metrics.EVENTS_CONSUMED.labels(label).inc()
            raise self._reject(msg, "invalid", str(exc), label) from None
        label = event["schema"]
        metrics.EVENTS_CONSUMED.labels(label).inc()
        key = kafka_key(event)
        if msg.key() != key.encode():
            # The key picks the partition, and the partition's owner holds the GPU's cost
            # state: an event of one GPU under another key would be priced by two replicas.
            reason = f"key {_key_repr(msg)} is not the event's host/gpu_uuid {key!r}"
            raise self._reject(msg, "bad_key", reason, label)
        partition, offset = _partition(msg), _offset(msg)
        self._keys_by_partition[partition].add(key)  # before the model may keep any state
        try:
            ts_us = to_ts_us(event["ts"])
            if label == GPU_METRICS_V1:
                price = self._model.on_gpu_metrics(
                    key, event["gpu_name"], event.get("price_per_hour_usd"),
                    event_id=event["event_id"], ts_us=ts_us,
                )  # fmt: skip
                doc = gpu_metrics_doc(
                    event, ts_us=ts_us, price=price, partition=partition, offset=offset
                )
                collection = GPU_METRICS
            else:
                tokens = int(event["input_tokens"]) + int(event["output_tokens"])
                cost = self._model.on_token_usage(key, event["event_id"], ts_us, tokens)
                doc = token_usage_doc(
                    event, ts_us=ts_us, cost=cost, partition=partition, offset=offset
                )
                collection = TOKEN_USAGE
        except Exception as exc:  # a bug or a corner the contract missed: this value only
            log.exception(
                "cannot process event partition=%d offset=%d key=%s event_id=%s",
                partition, offset, _key_repr(msg), event.get("event_id"),
            )  # fmt: skip
            raise self._reject(msg, "unprocessable", f"cannot process: {exc!r}", label) from None
        return collection, doc

    @staticmethod
    def _reject(msg: Message, kind: str, reason: str, label: str) -> _Unusable:
        if kind == "unprocessable":  # logged with its traceback by the caller
            metrics.EVENTS_UNPROCESSABLE.labels(label).inc()
        else:
            metrics.EVENTS_INVALID.labels(label).inc()
            log.warning(
                "%s event partition=%d offset=%d key=%s reason=%r",
                kind.replace("_", " "), _partition(msg), _offset(msg), _key_repr(msg), reason[:300],
            )  # fmt: skip
        return _Unusable(reason, label)

    def _rebuild(self, partition: int, before_offset: int) -> None:
        """Restore a newly owned partition's cost state from what is already stored."""
        history = self._store.partition_history(partition, before_offset, self._retain_us)
        for doc in history.token_events:
            self._keys_by_partition[partition].add(doc["gpu_key"])
            self._model.on_token_usage(doc["gpu_key"], str(doc["_id"]), doc["ts_us"], doc["tokens"])
        for doc in history.latest_gpu_metrics:
            self._keys_by_partition[partition].add(doc["gpu_key"])
            self._model.on_gpu_metrics(
                doc["gpu_key"], doc.get("gpu_name"), doc.get("event_price_per_hour_usd"),
                event_id=str(doc["_id"]), ts_us=doc["ts_us"],
            )  # fmt: skip
        self._needs_rebuild.discard(partition)
        metrics.PARTITION_REBUILDS.inc()
        log.info(
            "rebuilt cost state partition=%d before_offset=%d gpus=%d token_events=%d",
            partition, before_offset, len(self._keys_by_partition[partition]),
            len(history.token_events),
        )  # fmt: skip

    def _send_dead_letters(self, dlq: Producer, dead: list[tuple[Message, str, str]]) -> None:
        if not dead:
            return
        failures: list[str] = []

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failures.append(str(err))

        for msg, reason, label in dead:
            headers: list[tuple[str, str | bytes | None]] = [
                ("dlq.reason", reason[:2000].encode()),
                ("dlq.schema", label.encode()),
                ("dlq.source.topic", (msg.topic() or "").encode()),
                ("dlq.source.partition", str(_partition(msg)).encode()),
                ("dlq.source.offset", str(_offset(msg)).encode()),
            ]
            while True:
                try:
                    dlq.produce(
                        self._settings.kafka_dlq_topic,
                        key=msg.key(),
                        value=msg.value(),
                        headers=headers,
                        on_delivery=delivered,
                    )
                    break
                except BufferError:
                    dlq.poll(0.1)  # local queue full: back-pressure, never a dropped letter
        remaining = dlq.flush(_DLQ_FLUSH_S)
        if remaining or failures:
            raise DeadLetterUnavailable(
                f"dead-letter topic {self._settings.kafka_dlq_topic} did not take "
                f"{remaining or len(failures)} record(s): {failures[:1] or 'flush timed out'}"
            )
        for _msg, _reason, label in dead:
            metrics.DEAD_LETTERED.labels(label).inc()

    def _commit(self, consumer: Consumer, batch: _Batch) -> None:
        last: dict[int, int] = {}
        for msg in batch.messages:
            if msg.error() is None:
                last[_partition(msg)] = max(last.get(_partition(msg), -1), _offset(msg))
        self._commit_offsets(consumer, {p: off + 1 for p, off in last.items()})

    def _commit_offsets(self, consumer: Consumer, next_offsets: dict[int, int]) -> None:
        owned = [p for p in sorted(next_offsets) if p in self._assigned]
        if not owned:
            return
        topic = self._settings.kafka_topic
        offsets = [TopicPartition(topic, p, next_offsets[p]) for p in owned]
        try:
            committed = consumer.commit(offsets=offsets, asynchronous=False) or []
        except KafkaException as exc:
            if exc.args[0].code() not in _REBALANCE_COMMIT_ERRORS:
                raise
            # A rebalance is under way: the batch is stored, the partitions' new owner starts
            # from the previous commit and finds these events already stored.
            # It is retried after the rebalance for the partitions we still own.
            log.warning("commit deferred by a rebalance partitions=%s error=%s", owned, exc)
            for p in owned:
                self._uncommitted[p] = max(next_offsets[p], self._uncommitted.get(p, 0))
            return
        for tp in committed:
            if tp.error is not None:
                # The data is stored; a lost commit only means a harmless redelivery.
                log.warning("commit failed partition=%d error=%s", tp.partition, tp.error)
            else:
                self._committed[tp.partition] = tp.offset
                if self._uncommitted.get(tp.partition, -1) <= tp.offset:
                    self._uncommitted.pop(tp.partition, None)

    def _retry_commits(self, consumer: Consumer) -> None:
        try:
            self._commit_offsets(consumer, dict(self._uncommitted))
        except KafkaException as exc:
            log.warning("deferred commit failed again: %s", exc)

    # --- degraded mode ------------------------------------------------------------------

    def _degrade(self, consumer: Consumer, batch: _Batch, part: str, reason: str) -> None:
        partitions = {_partition(m) for m in batch.messages if m.error() is None}
        for p in partitions:
            self._model.forget(self._keys_by_partition.pop(p, set()))
            if p in self._assigned:
                self._needs_rebuild.add(p)
        self._kept = batch if self._kept is None else _Batch(batch.messages + self._kept.messages)
        consumer.pause(consumer.assignment())
        if part == "mongodb":
            metrics.STORE_UP.set(0)
        with self._lock:
            self._degraded, self._degraded_reason = part, reason
        log.error("pipeline degraded part=%s reason=%r; consumption paused", part, reason)

    def _try_recover(self, consumer: Consumer, dlq: Producer) -> bool:
        try:
            self._store.ping()
            dlq.list_topics(self._settings.kafka_dlq_topic, timeout=2.0)
        except (StoreUnavailable, KafkaException) as exc:
            log.info("still degraded: %s", exc)
            return False
        kept, self._kept = self._kept, None
        with self._lock:
            self._degraded = self._degraded_reason = None
        metrics.STORE_UP.set(1)
        log.info("dependencies answer again; resuming")
        if kept is not None:
            kept.messages = [m for m in kept.messages if _partition(m) in self._assigned]
            self._process(consumer, dlq, _Batch(kept.messages))
        if self._degraded is None:
            consumer.resume(consumer.assignment())
            return True
        return False

    # --- rebalance and Kafka callbacks (run on the loop thread, inside consume()) ---------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._assigned.add(tp.partition)
            self._needs_rebuild.add(tp.partition)
        self._publish_assignment()
        log.info("partitions assigned %s", sorted(tp.partition for tp in partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            p = tp.partition
            self._assigned.discard(p)
            self._needs_rebuild.discard(p)
            self._uncommitted.pop(p, None)
            self._committed.pop(p, None)
            self._model.forget(self._keys_by_partition.pop(p, set()))
            with contextlib.suppress(KeyError):  # no gauge yet for a just-assigned partition
                metrics.CONSUMER_LAG.remove(str(p))
        if self._kept is not None:
            self._kept.messages = [
                m for m in self._kept.messages if _partition(m) in self._assigned
            ]
        with self._lock:
            for tp in partitions:
                self._lag.pop(tp.partition, None)
        self._publish_assignment()
        log.info("partitions revoked %s", sorted(tp.partition for tp in partitions))

    def _publish_assignment(self) -> None:
        with self._lock:
            self._assigned_snapshot = sorted(self._assigned)

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

    def _refresh_lag(self, consumer: Consumer) -> None:
        """Lag = high watermark - the group's committed offset, asked of the broker."""
        topic = self._settings.kafka_topic
        partitions = [TopicPartition(topic, p) for p in sorted(self._assigned)]
        lag: dict[int, int] = {}
        try:
            if not partitions:
                # Nothing assigned (more replicas than partitions, or between rebalances): a
                # metadata round trip still tells whether the broker answers again.
                consumer.list_topics(topic, timeout=2.0)
                with self._lock:
                    self._kafka_error = None
                return
            # Every broker request here runs on the consume thread and queues behind the
            # long-polling fetches on the same connection (12 watermark requests every 5 s took
            # ~40% of a drain): use what librdkafka and our own commits already know, and ask
            # the broker only for what is missing, or to learn whether it is back after an error.
            asked_broker = self._kafka_error is not None
            committed = {p: o for p, o in self._committed.items() if p in self._assigned}
            unknown = [tp for tp in partitions if tp.partition not in committed]
            if unknown or asked_broker:
                asked_broker = True
                for tp in consumer.committed(unknown or partitions, 2.0):
                    committed[tp.partition] = tp.offset
            for tp in partitions:
                # The high watermark rides on every fetch response: librdkafka's copy is fresh.
                low, high = consumer.get_watermark_offsets(tp, cached=True)
                if high < 0 or (committed.get(tp.partition, -1) < 0 and low < 0):
                    # Nothing fetched yet, or we need the low mark: ask once.
                    asked_broker = True
                    low, high = consumer.get_watermark_offsets(tp, timeout=1.0, cached=False)
                # A negative committed offset means "nothing committed yet": all is lag.
                done = committed.get(tp.partition, -1)
                lag[tp.partition] = max(0, high - (done if done >= 0 else low))
                metrics.CONSUMER_LAG.labels(str(tp.partition)).set(lag[tp.partition])
        except KafkaException as exc:
            log.debug("lag unavailable: %s", exc)
            return
        with self._lock:
            self._lag = lag
            if asked_broker:
                # The broker answered: an earlier transport error is over, even if no message
                # has arrived since (an idle topic would otherwise keep /health at 503).
                self._kafka_error = None


def _partition(msg: Message) -> int:
    # A message that carries no error always has a partition and an offset.
    partition = msg.partition()
    assert partition is not None, "consumed message without a partition"
    return partition


def _offset(msg: Message) -> int:
    offset = msg.offset()
    assert offset is not None, "consumed message without an offset"
    return offset


def _key_repr(msg: Message) -> str:
    """The message key for a log line or a reason: ``null``, or its first 80 bytes."""
    key = msg.key()
    if key is None:
        return "null"
    return repr(key[:80]) + (f"... ({len(key)} bytes)" if len(key) > 80 else "")


def _claimed_schema(raw: bytes | None) -> str:
    """The schema an undecodable message claims, for metric labels only."""
    try:
        value = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        return "unknown"
    return metrics.schema_label(value.get("schema") if isinstance(value, dict) else None)
