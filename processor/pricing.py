"""Kafka record -> stored document: decode, check the key, price, build (pure, no I/O).

    >>> pricer = Pricer(CostModel(PriceBook(0.85)), OutputWeights(4.0), max_message_bytes=65536)
    >>> plan = pricer.plan(records)            # a batch, in partition order
    >>> plan.docs["token_usage"], plan.rejected
    ([{...}], [Rejected(...)])

The one place where an event becomes a document, used alike by the consume loop, the rebuild
of a newly assigned partition and the benchmarks. Nothing here talks to Kafka or MongoDB: a
record is anything with ``key()``, ``value()``, ``partition()`` and ``offset()``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import orjson

from processor.anomalies import AnomalyDetector, Reading
from processor.cost import CostModel, OutputWeights
from processor.documents import GPU_METRICS, TOKEN_USAGE, gpu_metrics_doc, token_usage_doc
from schemas.contracts import (
    GPU_METRICS_V1,
    KNOWN_SCHEMAS,
    ContractViolation,
    decode_event,
    kafka_key,
)

__all__ = [
    "BatchPlan",
    "PartitionHistory",
    "Priced",
    "Pricer",
    "Record",
    "Rejected",
    "RejectionKind",
    "claimed_schema",
    "key_repr",
]

RejectionKind = Literal["invalid", "bad_key", "unprocessable"]


class Record(Protocol):
    """What the pricer needs of a Kafka message (confluent_kafka.Message has it)."""

    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class Priced:
    """A record that became a document of ``collection``."""

    record: Record
    collection: str
    doc: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record that cannot become a document; it goes to the dead-letter topic.

    ``invalid``: breaks its contract; ``bad_key``: its key is not the event's
    ``host/gpu_uuid``; ``unprocessable``: the cost model or the document builder failed on
    it (a bug, or a corner the contract missed) — ``error`` holds the exception.
    """

    record: Record
    kind: RejectionKind
    reason: str
    schema: str  # the contract it claims, or "unknown": a bounded metric label
    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class PartitionHistory:
    """What a partition's new owner needs to rebuild its cost state (see processor/cost.py)."""

    latest_gpu_metrics: list[dict[str, Any]]  # each GPU's latest reading by (ts_us, _id)
    token_events: list[dict[str, Any]]  # retained token documents, in kafka_offset order
    # Each GPU's newest readings by (ts_us, _id), as many as an anomaly window holds.
    recent_gpu_metrics: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class BatchPlan:
    """A batch priced: the documents to write, the records to dead-letter, what to count."""

    docs: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {GPU_METRICS: [], TOKEN_USAGE: []}
    )
    origin: dict[tuple[str, str], Priced] = field(default_factory=dict)  # (collection, _id)
    rejected: list[Rejected] = field(default_factory=list)
    consumed: Counter[str] = field(default_factory=Counter)  # by schema label
    in_batch_duplicates: Counter[str] = field(default_factory=Counter)  # by collection

    def documents(self) -> Iterable[dict[str, Any]]:
        for docs in self.docs.values():
            yield from docs


class Pricer:
    """Prices the records of the partitions one replica owns (owns the cost model's state).

    Not thread-safe: the consume loop's thread is its only user.
    """

    def __init__(
        self,
        model: CostModel,
        weights: OutputWeights,
        *,
        max_message_bytes: int,
        anomalies: AnomalyDetector | None = None,
    ) -> None:
        self._model = model
        self._weights = weights
        self._anomalies = anomalies or AnomalyDetector()
        self._max_bytes = max_message_bytes
        self._keys_by_partition: defaultdict[int, set[str]] = defaultdict(set)

    @property
    def anomaly_window(self) -> int:
        """How many of a GPU's newest readings a rebuild must reload (the anomaly window N)."""
        return self._anomalies.rules.window

    @property
    def retain_us(self) -> int:
        """How far behind a GPU's newest token event a rebuild must reload (W + L, in µs)."""
        return self._model.window_us + self._model.lateness_us

    def plan(self, records: Sequence[Record]) -> BatchPlan:
        """Price a batch in order; the first copy of an id wins, as a replay would have it."""
        plan = BatchPlan()
        for record in records:
            outcome = self.price(record)
            if isinstance(outcome, Rejected):
                plan.consumed[outcome.schema] += 1
                plan.rejected.append(outcome)
                continue
            plan.consumed[outcome.doc["schema"]] += 1
            # Ids are unique per contract (= per collection), as MongoDB's _id index is: a
            # reading may share an event_id with a token event whatever the batching.
            ident = (outcome.collection, outcome.doc["_id"])
            if ident in plan.origin:
                plan.in_batch_duplicates[outcome.collection] += 1
                continue
            plan.origin[ident] = outcome
            plan.docs[outcome.collection].append(outcome.doc)
        return plan

    def price(self, record: Record) -> Priced | Rejected:
        """One record: a document, or the reason it cannot be one. Never raises."""
        raw = record.value()
        try:
            event, ts_us = decode_event(raw, max_bytes=self._max_bytes)
        except ContractViolation as exc:
            return Rejected(record, "invalid", str(exc), claimed_schema(raw))
        schema: str = event["schema"]
        key = kafka_key(event)
        if record.key() != key.encode():
            # The key picks the partition, and the partition's owner holds the GPU's cost
            # state: an event of one GPU under another key would be priced by two replicas.
            reason = f"key {key_repr(record.key())} is not the event's host/gpu_uuid {key!r}"
            return Rejected(record, "bad_key", reason, schema)
        partition, offset = _position(record)
        self._keys_by_partition[partition].add(key)  # before the model may keep any state
        try:
            if schema == GPU_METRICS_V1:
                price = self._model.on_gpu_metrics(
                    key, event["gpu_name"], event.get("price_per_hour_usd"),
                    event_id=event["event_id"], ts_us=ts_us,
                    energy_total_mj=event.get("energy_total_mj"),
                )  # fmt: skip
                flags = self._anomalies.observe(
                    key, Reading.from_event(event, ts_us, event["event_id"])
                )
                doc = gpu_metrics_doc(
                    event, gpu_key=key, ts_us=ts_us, price=price, partition=partition,
                    offset=offset, anomalies=flags,
                )  # fmt: skip
                return Priced(record, GPU_METRICS, doc)
            cost = self._model.on_token_usage(
                key, event["event_id"], ts_us, int(event["input_tokens"]),
                int(event["output_tokens"]), output_weight=self._weights.of(event["model"]),
            )  # fmt: skip
            doc = token_usage_doc(
                event, gpu_key=key, ts_us=ts_us, cost=cost, partition=partition, offset=offset
            )
            return Priced(record, TOKEN_USAGE, doc)
        except Exception as exc:  # one value must never stop the loop: dead-letter it
            return Rejected(record, "unprocessable", f"cannot process: {exc!r}", schema, exc)

    def rebuild(self, partition: int, history: PartitionHistory) -> int:
        """Restore a newly owned partition's cost state from its stored documents.

        Returns how many GPUs the partition now has state for.
        """
        keys = self._keys_by_partition[partition]
        for doc in history.token_events:
            keys.add(doc["gpu_key"])
            # The k the document was priced with, not today's setting; a document stored
            # before k existed was priced with every token alike (k = 1).
            self._model.on_token_usage(
                doc["gpu_key"], str(doc["_id"]), doc["ts_us"], int(doc["input_tokens"]),
                int(doc["output_tokens"]), output_weight=doc.get("output_weight", 1.0),
            )  # fmt: skip
        for doc in history.latest_gpu_metrics:
            keys.add(doc["gpu_key"])
            self._model.on_gpu_metrics(
                doc["gpu_key"], doc.get("gpu_name"), doc.get("event_price_per_hour_usd"),
                event_id=str(doc["_id"]), ts_us=doc["ts_us"],
                energy_total_mj=doc.get("energy_total_mj"),
            )  # fmt: skip
        for doc in history.recent_gpu_metrics:
            keys.add(doc["gpu_key"])
            self._anomalies.restore(
                doc["gpu_key"], [Reading.from_event(doc, doc["ts_us"], str(doc["_id"]))]
            )
        return len(keys)

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop the cost state of these partitions' GPUs (revoked, or to be rebuilt)."""
        for partition in partitions:
            keys = self._keys_by_partition.pop(partition, set())
            self._model.forget(keys)
            self._anomalies.forget(keys)


def _position(record: Record) -> tuple[int, int]:
    partition, offset = record.partition(), record.offset()
    # A consumed message without an error always has both.
    assert partition is not None, "record without a partition"
    assert offset is not None, "record without an offset"
    return partition, offset


def key_repr(key: bytes | None) -> str:
    """A message key for a log line or a reason: ``null``, or its first 80 bytes."""
    if key is None:
        return "null"
    return repr(key[:80]) + (f"... ({len(key)} bytes)" if len(key) > 80 else "")


def claimed_schema(raw: bytes | None) -> str:
    """The known contract an undecodable value claims, else ``unknown`` (a metric label)."""
    try:
        value = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        return "unknown"
    schema = value.get("schema") if isinstance(value, dict) else None
    return schema if isinstance(schema, str) and schema in KNOWN_SCHEMAS else "unknown"
