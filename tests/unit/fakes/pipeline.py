"""In-memory doubles of what the consume loop talks to: a Kafka consumer, a producer, a store.

    >>> journal: list[str] = []
    >>> consumer = FakeConsumer(journal, partitions={0: [record, ...]})
    >>> loop = PipelineLoop(settings, cast(MongoStore, FakeStore(journal)),
    ...                     consumer_factory=lambda _cfg: cast(Consumer, consumer), ...)

They keep a shared ``journal`` of the calls that matter for delivery ("history p", "write",
"dead letters", "commit p=n") so a test can check their order. They behave like the real
clients where the loop relies on it: assignment is announced inside ``consume()``, a paused
partition yields nothing, a commit returns the committed offsets, a flush returns how many
records it could not deliver.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from processor.exceptions import StoreUnavailable
from processor.pricing import PartitionHistory
from processor.store import WriteResult

__all__ = ["FakeConsumer", "FakeMessage", "FakeProducer", "FakeStore"]


@dataclass
class FakeMessage:
    _key: bytes | None
    _value: bytes | None
    _partition: int
    _offset: int
    _topic: str = "tokens"

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def topic(self) -> str:
        return self._topic

    def error(self) -> KafkaError | None:
        return None


class FakeConsumer:
    """Hands out each partition's messages from its committed offset, in order."""

    def __init__(self, journal: list[str], partitions: dict[int, list[FakeMessage]],
                 committed: dict[int, int] | None = None) -> None:  # fmt: skip
        self.journal = journal
        self.log = partitions
        self.committed_offsets: dict[int, int] = dict(committed or {})
        self.position = {p: self.committed_offsets.get(p, 0) for p in partitions}
        self.paused: set[int] = set()
        self.assigned: list[int] = []
        self.closed = False
        self.refuse_commits = 0  # how many commits a "rebalance" refuses
        self._lock = threading.Lock()
        self._callbacks: dict[str, Callable[..., None]] = {}

    # -- what the loop calls ---------------------------------------------------------

    def subscribe(self, topics: list[str], **callbacks: Callable[..., None]) -> None:
        self._callbacks = callbacks

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        if not self.assigned:
            self.assigned = sorted(self.log)
            self._callbacks["on_assign"](self, [TopicPartition("tokens", p) for p in self.assigned])
        out: list[FakeMessage] = []
        with self._lock:
            for p in self.assigned:
                if p in self.paused:
                    continue
                pending = self.log[p][self.position[p] :]
                take = pending[: num_messages - len(out)]
                out.extend(take)
                self.position[p] += len(take)
        if not out:
            threading.Event().wait(min(timeout, 0.01))  # an idle poll takes a little time
        return out

    def add(self, messages: list[FakeMessage]) -> None:
        with self._lock:
            for m in messages:
                self.log[m.partition()].append(m)

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> list[TopicPartition]:
        assert asynchronous is False, "the loop commits synchronously"
        if self.refuse_commits:
            self.refuse_commits -= 1
            self.journal.append("commit refused")
            raise KafkaException(KafkaError(KafkaError.REBALANCE_IN_PROGRESS))
        for tp in offsets:
            self.committed_offsets[tp.partition] = tp.offset
            self.journal.append(f"commit {tp.partition}={tp.offset}")
        return [TopicPartition(tp.topic, tp.partition, tp.offset) for tp in offsets]

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        # -1001: librdkafka's OFFSET_INVALID, "nothing committed yet".
        done = self.committed_offsets
        return [TopicPartition(tp.topic, tp.partition, done.get(tp.partition, -1001))
                for tp in partitions]  # fmt: skip

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float = 1.0, cached: bool = False
    ) -> tuple[int, int]:
        return 0, len(self.log[partition.partition])

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused.update(tp.partition for tp in partitions)

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused.difference_update(tp.partition for tp in partitions)

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition("tokens", p) for p in self.assigned]

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        return object()

    def close(self) -> None:
        self.closed = True

    # -- what tests call -------------------------------------------------------------

    def revoke(self, partitions: list[int]) -> None:
        """A rebalance takes partitions away (runs the loop's callback, as consume() would)."""
        self.assigned = [p for p in self.assigned if p not in partitions]
        self._callbacks["on_revoke"](self, [TopicPartition("tokens", p) for p in partitions])


@dataclass
class FakeProducer:
    """The dead-letter producer: keeps what it delivered; ``down`` makes flush fail."""

    journal: list[str]
    down: bool = False
    delivered: list[tuple[bytes | None, bytes | None, dict[str, bytes]]] = field(
        default_factory=list
    )
    _pending: list[tuple[Any, ...]] = field(default_factory=list)

    def produce(self, topic: str, **kwargs: Any) -> None:
        self._pending.append((kwargs["key"], kwargs["value"], kwargs["headers"],
                              kwargs["on_delivery"]))  # fmt: skip

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float = -1) -> int:
        if not self._pending:
            return 0
        if self.down:
            self.journal.append("dead letters failed")
            return len(self._pending)
        for key, value, headers, on_delivery in self._pending:
            self.delivered.append((key, value, {k: v for k, v in headers}))
            on_delivery(None, None)
        self._pending.clear()
        self.journal.append("dead letters")
        return 0

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        if self.down:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT))
        return object()


class FakeStore:
    """Two collections in dicts keyed by _id; ``down`` makes writes, queries and pings fail."""

    def __init__(self, journal: list[str]) -> None:
        self.journal = journal
        self.down = False
        self.collections: dict[str, dict[str, dict[str, Any]]] = {
            "gpu_metrics": {}, "token_usage": {},
        }  # fmt: skip
        self.on_write: Callable[[], None] | None = None

    def _check(self, what: str) -> None:
        if self.down:
            raise StoreUnavailable(f"MongoDB {what} failed: connection refused")

    def ensure_indexes(self) -> None:
        self.journal.append("indexes")  # before the outages the tests make: not checked

    def ping(self) -> None:
        self._check("ping")

    def write(self, docs_by_collection: dict[str, list[dict[str, Any]]]) -> WriteResult:
        self._check("insert")
        if self.on_write is not None:
            self.on_write()
        result = WriteResult(stored_at=0.0)
        for name, docs in docs_by_collection.items():
            stored = self.collections[name]
            for doc in docs:
                if doc["_id"] in stored:
                    result.duplicates[name] += 1
                else:
                    stored[doc["_id"]] = dict(doc)
                    result.inserted[name] += 1
        self.journal.append("write")
        return result

    def partition_history(
        self, partition: int, before_offset: int, retain_us: int, readings: int = 0
    ) -> PartitionHistory:
        """What MongoStore.partition_history answers, computed over the dicts."""
        self._check("rebuild query")
        self.journal.append(f"history {partition}")
        mine = [
            d for c in self.collections.values() for d in c.values()
            if d["kafka_partition"] == partition and d["kafka_offset"] < before_offset
        ]  # fmt: skip
        latest: dict[str, dict[str, Any]] = {}
        newest: dict[str, int] = {}
        for d in mine:
            key = d["gpu_key"]
            if d["schema"] == "gpu.metrics.v1":
                if key not in latest or (d["ts_us"], d["_id"]) > (
                    latest[key]["ts_us"],
                    latest[key]["_id"],
                ):
                    latest[key] = d
            else:
                newest[key] = max(newest.get(key, d["ts_us"]), d["ts_us"])
        tokens = [d for d in mine if d["schema"] == "token.usage.v1"
                  and d["ts_us"] > newest[d["gpu_key"]] - retain_us]  # fmt: skip
        tokens.sort(key=lambda d: d["kafka_offset"])
        recent: list[dict[str, Any]] = []
        for key in {d["gpu_key"] for d in mine}:
            of_gpu = [d for d in mine if d["schema"] == "gpu.metrics.v1" and d["gpu_key"] == key]
            of_gpu.sort(key=lambda d: (d["ts_us"], d["_id"]), reverse=True)
            recent.extend(of_gpu[:readings])
        return PartitionHistory(
            latest_gpu_metrics=list(latest.values()), token_events=tokens,
            recent_gpu_metrics=recent,
        )  # fmt: skip
