"""The consume loop with in-memory doubles: its states and the order that makes delivery safe.

Cost -> write -> dead letters -> commit: each test reads the doubles' shared journal, so
swapping any two of those steps in processor/consumer.py turns them red. The same behaviour
against the real Kafka and FerretDB is covered by tests/integration.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import orjson
import pytest
from confluent_kafka import Consumer, Producer

from devtools.events import gpu_event, token_event
from devtools.waiting import WaitTimeout, wait_for
from processor import documents
from processor.consumer import PipelineLoop
from processor.settings import ProcessorSettings
from processor.store import MongoStore
from tests.unit.fakes.pipeline import FakeConsumer, FakeMessage, FakeProducer, FakeStore

GPU = "GPU-11111111-0000-0000-0000-000000000001"
KEY = f"h/{GPU}".encode()


def record(
    event: dict[str, Any], partition: int, offset: int, key: bytes | None = KEY
) -> FakeMessage:
    return FakeMessage(key, orjson.dumps(event), partition, offset)


def tokens(partition: int, first_offset: int, n: int, start_s: float = 0.0) -> list[FakeMessage]:
    return [record(token_event("h", GPU, start_s + i, 30, 30), partition, first_offset + i)
            for i in range(n)]  # fmt: skip


class Pipeline:
    """A loop wired to doubles, and what it did."""

    def __init__(self, partitions: dict[int, list[FakeMessage]],
                 committed: dict[int, int] | None = None) -> None:  # fmt: skip
        self.journal: list[str] = []
        self.consumer = FakeConsumer(self.journal, partitions, committed)
        self.producer = FakeProducer(self.journal)
        self.store = FakeStore(self.journal)
        settings = ProcessorSettings(consume_timeout_s=0.01, lag_interval_s=0.05,
                                     store_retry_max_s=0.1)  # fmt: skip
        self.loop = PipelineLoop(
            settings,
            cast(MongoStore, self.store),
            consumer_factory=lambda _config: cast(Consumer, self.consumer),
            producer_factory=lambda _config: cast(Producer, self.producer),
        )

    def wait(self, what: str, done: Callable[[], bool], timeout_s: float = 5.0) -> None:
        try:
            wait_for(what, done, timeout_s, every_s=0.005)
        except WaitTimeout:
            raise AssertionError(f"timed out waiting for {what}; journal={self.journal}") from None

    def stored(self, collection: str = "token_usage") -> dict[str, dict[str, Any]]:
        return self.store.collections[collection]

    def committed(self) -> dict[int, int]:
        return self.consumer.committed_offsets


@pytest.fixture
def run() -> Iterator[Callable[..., Pipeline]]:
    started: list[Pipeline] = []

    def start(partitions: dict[int, list[FakeMessage]], **kwargs: Any) -> Pipeline:
        pipeline = Pipeline(partitions, **kwargs)
        started.append(pipeline)
        pipeline.loop.start()
        return pipeline

    yield start
    for pipeline in started:
        pipeline.loop.stop(5.0)


def test_a_batch_is_written_then_dead_lettered_then_committed(run: Callable[..., Pipeline]) -> None:
    batch = [*tokens(0, 0, 3), FakeMessage(KEY, b"{not json", 0, 3), *tokens(0, 4, 2, start_s=10)]
    p = run({0: batch})
    p.wait("offset 6 committed", lambda: p.committed().get(0) == 6)
    assert p.journal[p.journal.index("write") :][:3] == ["write", "dead letters", "commit 0=6"]
    assert len(p.stored()) == 5
    (letter,) = p.producer.delivered
    assert letter[1] == b"{not json"
    assert letter[2]["dlq.source.offset"] == b"3"
    assert letter[2]["dlq.reason"].startswith(b"malformed JSON")


def test_store_down_pauses_without_committing_and_resumes_by_itself(
    run: Callable[..., Pipeline],
) -> None:
    p = Pipeline({0: tokens(0, 0, 4)})
    p.store.down = True
    p.loop.start()
    try:
        p.wait("degraded on mongodb", lambda: p.loop.status().degraded == "mongodb")
        time.sleep(0.1)
        assert p.committed() == {}  # nothing stored, nothing committed
        assert p.consumer.paused == {0}
        p.store.down = False
        p.wait("offset 4 committed", lambda: p.committed().get(0) == 4)
        assert len(p.stored()) == 4
        assert p.journal.index("write") < p.journal.index("commit 0=4")
        p.wait("healthy again", lambda: p.loop.status().degraded is None)
        assert p.consumer.paused == set()
        p.consumer.add(tokens(0, 4, 2, start_s=20))
        p.wait("the next batch too", lambda: p.committed().get(0) == 6)
    finally:
        p.loop.stop(5.0)


def test_an_undeliverable_dead_letter_keeps_the_batch_uncommitted(
    run: Callable[..., Pipeline],
) -> None:
    p = Pipeline({0: [*tokens(0, 0, 2), FakeMessage(KEY, b"[]", 0, 2)]})
    p.producer.down = True
    p.loop.start()
    try:
        p.wait("degraded on kafka", lambda: p.loop.status().degraded == "kafka")
        assert "dead letters failed" in p.journal
        assert p.committed() == {}  # stored, but not committed while its letter is unsent
        p.producer.down = False
        p.wait("offset 3 committed", lambda: p.committed().get(0) == 3)
        # The kept batch is delivered again: stored once, its letter sent, then the commit.
        # (Letters are at least once: the one a failed flush left queued goes out too.)
        assert len(p.stored()) == 2
        assert {value for _key, value, _headers in p.producer.delivered} == {b"[]"}
        last_letters = len(p.journal) - 1 - p.journal[::-1].index("dead letters")
        assert last_letters < p.journal.index("commit 0=3")
    finally:
        p.loop.stop(5.0)


def test_a_commit_refused_by_a_rebalance_is_retried(run: Callable[..., Pipeline]) -> None:
    p = Pipeline({0: tokens(0, 0, 3)})
    p.consumer.refuse_commits = 1
    p.loop.start()
    try:
        p.wait("the deferred commit retried", lambda: p.committed().get(0) == 3)
        assert p.journal.index("commit refused") < p.journal.index("commit 0=3")
        assert p.journal.count("write") == 1  # retried without writing again
    finally:
        p.loop.stop(5.0)


def test_a_new_partition_is_rebuilt_from_the_store_before_its_first_cost(
    run: Callable[..., Pipeline],
) -> None:
    # 60 tokens at t=0..2 s were stored by the previous owner (offsets 0-2), committed at 3.
    earlier = Pipeline({0: tokens(0, 0, 3)})
    earlier.loop.start()
    earlier.wait("stored", lambda: earlier.committed().get(0) == 3)
    earlier.loop.stop(5.0)

    later = tokens(0, 3, 1, start_s=3)
    p = Pipeline({0: tokens(0, 0, 3) + later}, committed={0: 3})
    p.store.collections = earlier.store.collections
    p.loop.start()
    try:
        p.wait("offset 4 committed", lambda: p.committed().get(0) == 4)
        assert p.journal.index("history 0") < p.journal.index("write")
        doc = p.stored()[orjson.loads(later[0].value() or b"")["event_id"]]
        # Its window holds the three stored events and itself: 4 x 60 tokens in 60 s.
        assert doc["tps"] == pytest.approx(240 / 60)
    finally:
        p.loop.stop(5.0)


def test_a_stop_during_a_write_finishes_and_commits_the_batch(
    run: Callable[..., Pipeline],
) -> None:
    p = Pipeline({0: tokens(0, 0, 5)})
    p.store.on_write = lambda: p.loop._stop.set()  # stop requested while the batch is written
    p.loop.start()
    p.wait("the loop ended", lambda: p.consumer.closed)
    assert p.committed() == {0: 5}
    assert p.journal[-2:] == ["write", "commit 0=5"]


def test_any_error_on_one_message_dead_letters_it_and_the_loop_goes_on(
    run: Callable[..., Pipeline], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = documents.token_usage_doc

    def fragile(event: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        if event["model"] == "poison":
            raise ZeroDivisionError("a bug that only this value reaches")
        return real(event, **kwargs)

    monkeypatch.setattr("processor.pricing.token_usage_doc", fragile)
    poison = record(token_event("h", GPU, 5, 1, 1, model="poison"), 0, 2)
    reading = record({**gpu_event("h", GPU, 6), "ts": "9999-12-31T23:59:59-01:00"}, 0, 3)
    p = run({0: [*tokens(0, 0, 2), poison, reading, *tokens(0, 4, 1, start_s=7)]})
    p.wait("offset 5 committed", lambda: p.committed().get(0) == 5)
    assert len(p.stored()) == 3
    reasons = sorted(headers["dlq.reason"].decode() for _k, _v, headers in p.producer.delivered)
    assert reasons[0].startswith("cannot process: ZeroDivisionError")
    assert "cannot be converted to UTC" in reasons[1]
    assert p.loop.status().running


def test_a_revoked_partition_is_forgotten_and_its_kept_messages_dropped(
    run: Callable[..., Pipeline],
) -> None:
    p = Pipeline({0: tokens(0, 0, 2), 1: tokens(1, 0, 2)})
    p.store.down = True
    p.loop.start()
    try:
        p.wait("degraded", lambda: p.loop.status().degraded == "mongodb")
        p.consumer.revoke([1])  # its new owner takes over from the last commit
        p.store.down = False
        p.wait("partition 0 committed", lambda: p.committed().get(0) == 2)
        assert 1 not in p.committed()
        assert len(p.stored()) == 2
        assert p.loop.status().assigned_partitions == [0]
    finally:
        p.loop.stop(5.0)
