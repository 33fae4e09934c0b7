"""Dead letters: what the processor cannot store goes to `tokens.dlq`, bytes untouched.

    >>> letters = DeadLetters(producer, "tokens.dlq")
    >>> letters.send([Letter(record, "malformed JSON: ...", "unknown")])   # or raises

Each letter keeps the original key and value, and says why in headers (docs/contracts.md).
`send` returns only once the broker has every letter: the batch's offsets are committed after
it, so a letter is never lost behind a commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from confluent_kafka import KafkaError, Message, Producer

from processor.exceptions import DeadLetterUnavailable
from processor.pricing import Record

__all__ = ["DeadLetters", "Letter"]

# Bound on flushing letters before a commit; beyond it the batch is retried, never committed
# with its dead letters unsent.
FLUSH_S: Final = 15.0
# Headers are read by people and tools; a reason listing every schema error can be long.
_MAX_REASON_CHARS: Final = 2000
_BACKPRESSURE_POLL_S: Final = 0.1


@dataclass(frozen=True, slots=True)
class Letter:
    record: Record
    reason: str
    schema: str  # the contract the record claims, or "unknown"
    topic: str = ""  # where the record was read


class DeadLetters:
    """Sends letters to the dead-letter topic and waits until the broker has them all."""

    def __init__(self, producer: Producer, topic: str, flush_s: float = FLUSH_S) -> None:
        self._producer = producer
        self._topic = topic
        self._flush_s = flush_s

    def send(self, letters: Sequence[Letter]) -> None:
        """Produce every letter and flush; raise DeadLetterUnavailable if any is not taken."""
        if not letters:
            return
        failures: list[str] = []

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failures.append(str(err))

        for letter in letters:
            record = letter.record
            headers: list[tuple[str, str | bytes | None]] = [
                ("dlq.reason", letter.reason[:_MAX_REASON_CHARS].encode()),
                ("dlq.schema", letter.schema.encode()),
                ("dlq.source.topic", letter.topic.encode()),
                ("dlq.source.partition", str(record.partition()).encode()),
                ("dlq.source.offset", str(record.offset()).encode()),
            ]
            while True:
                try:
                    self._producer.produce(
                        self._topic, key=record.key(), value=record.value(), headers=headers,
                        on_delivery=delivered,
                    )  # fmt: skip
                    break
                except BufferError:
                    # Local queue full: back-pressure, never a dropped letter.
                    self._producer.poll(_BACKPRESSURE_POLL_S)
        remaining = self._producer.flush(self._flush_s)
        if remaining or failures:
            raise DeadLetterUnavailable(
                f"dead-letter topic {self._topic} did not take "
                f"{remaining or len(failures)} record(s): {failures[:1] or 'flush timed out'}"
            )
