"""What this replica owns of the topic: its partitions, its commits, and its lag.

    >>> offsets = Offsets("tokens")
    >>> offsets.assign([0, 1]); offsets.commit(consumer, {0: 42, 1: 7})
    >>> offsets.lag(consumer)                  # {0: 12, 1: 0}

Commits are synchronous and only for partitions still owned; a commit a rebalance refuses is
kept and retried (the data is stored: at worst the next owner reads it again as duplicates).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Final

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

__all__ = ["Offsets"]

log = logging.getLogger(__name__)

# Commit answers that mean "the group moved on", not "Kafka is down".
_REBALANCE_COMMIT_ERRORS: Final = frozenset(
    {
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError._STATE,
    }
)
# Broker round trips of the lag refresh run on the consume thread: keep them short.
_COMMITTED_TIMEOUT_S: Final = 2.0
_WATERMARK_TIMEOUT_S: Final = 1.0


class Offsets:
    """Owned partitions, commits (and the ones a rebalance deferred), and lag."""

    def __init__(self, topic: str) -> None:
        self._topic = topic
        self.assigned: set[int] = set()
        self._deferred: dict[int, int] = {}  # next offsets whose commit a rebalance refused
        # Next offsets we committed ourselves: the owner is the only one committing a
        # partition, so its lag needs no broker round trip once it has committed.
        self._committed: dict[int, int] = {}

    def assign(self, partitions: Iterable[int]) -> None:
        self.assigned.update(partitions)

    def revoke(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self.assigned.discard(p)
            self._deferred.pop(p, None)
            self._committed.pop(p, None)

    @property
    def deferred(self) -> bool:
        """Whether a commit refused by a rebalance waits to be retried."""
        return bool(self._deferred)

    def commit(self, consumer: Consumer, next_offsets: dict[int, int]) -> None:
        """Commit ``partition -> next offset`` for the partitions still owned.

        Raises KafkaException when Kafka fails for any reason but a rebalance.
        """
        owned = [p for p in sorted(next_offsets) if p in self.assigned]
        if not owned:
            return
        offsets = [TopicPartition(self._topic, p, next_offsets[p]) for p in owned]
        try:
            committed = consumer.commit(offsets=offsets, asynchronous=False) or []
        except KafkaException as exc:
            if exc.args[0].code() not in _REBALANCE_COMMIT_ERRORS:
                raise
            # The batch is stored; the partitions' new owner starts from the previous commit
            # and finds these events already stored. Retried for what we still own.
            log.warning("commit deferred by a rebalance partitions=%s error=%s", owned, exc)
            for p in owned:
                self._deferred[p] = max(next_offsets[p], self._deferred.get(p, 0))
            return
        for tp in committed:
            if tp.error is not None:
                # The data is stored; a lost commit only means a harmless redelivery.
                log.warning("commit failed partition=%d error=%s", tp.partition, tp.error)
                continue
            self._committed[tp.partition] = tp.offset
            if self._deferred.get(tp.partition, -1) <= tp.offset:
                self._deferred.pop(tp.partition, None)

    def retry_deferred(self, consumer: Consumer) -> None:
        try:
            self.commit(consumer, dict(self._deferred))
        except KafkaException as exc:
            log.warning("deferred commit failed again: %s", exc)

    def lag(
        self, consumer: Consumer, *, ask_broker: bool, fresh_marks: bool = False
    ) -> tuple[dict[int, int], bool]:
        """``(partition -> lag, whether the broker was asked)``; raises KafkaException.

        Lag = high watermark - the group's committed offset. librdkafka's cached high mark
        (it rides on every fetch) and our own commits answer most of it: 12 broker requests
        every few seconds, queued behind the long-polling fetches on the consume thread, took
        ~40% of a drain. The broker is asked only for what is missing, or when ``ask_broker``
        (after a transport error: its answer tells whether Kafka is back).
        """
        partitions = [TopicPartition(self._topic, p) for p in sorted(self.assigned)]
        committed = {p: o for p, o in self._committed.items() if p in self.assigned}
        unknown = [tp for tp in partitions if tp.partition not in committed]
        asked = False
        if unknown or ask_broker:
            asked = True
            for tp in consumer.committed(unknown or partitions, _COMMITTED_TIMEOUT_S):
                committed[tp.partition] = tp.offset
        lag: dict[int, int] = {}
        for tp in partitions:
            # A paused partition is not fetched, so its cached high mark stops moving: while
            # degraded the caller asks for fresh marks (the NoConsumptionWhileTopicGrows alert
            # needs the lag to grow while nothing is consumed).
            low, high = (-1, -1) if fresh_marks else consumer.get_watermark_offsets(tp, cached=True)
            if high < 0 or (committed.get(tp.partition, -1) < 0 and low < 0):
                # Nothing fetched yet, or we need the low mark: ask once.
                asked = True
                low, high = consumer.get_watermark_offsets(
                    tp, timeout=_WATERMARK_TIMEOUT_S, cached=False
                )
            # A negative committed offset means "nothing committed yet": all is lag.
            done = committed.get(tp.partition, -1)
            lag[tp.partition] = max(0, high - (done if done >= 0 else low))
        return lag, asked
