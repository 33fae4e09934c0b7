"""The project's topics on the stack's broker: created once, idempotently."""

from __future__ import annotations

from collections.abc import Mapping

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.cimpl import NewTopic

from devtools.stack.config import topic_names
from devtools.stack.console import say
from devtools.stack.errors import StackError
from devtools.stack.probes import admin_client
from devtools.waiting import WaitTimeout, wait_for

__all__ = ["ensure_topics"]


def ensure_topics(
    bootstrap: str,
    topics: Mapping[str, int] | None = None,
    *,
    replication_factor: int = 1,
    timeout: float = 30.0,
) -> dict[str, str]:
    """Create *topics* ({name: partitions}) if missing; returns {name: "created"|"exists"}.

    Idempotent: TOPIC_ALREADY_EXISTS is success. Waits until the metadata shows every topic.
    """
    wanted = dict(topics) if topics is not None else topic_names()
    admin = admin_client(bootstrap, timeout)
    futures = admin.create_topics(
        [
            NewTopic(name, num_partitions=n, replication_factor=replication_factor)
            for name, n in wanted.items()
        ],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    result: dict[str, str] = {}
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
            result[name] = "created"
        except KafkaException as exc:
            error = exc.args[0]
            if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                result[name] = "exists"
            else:
                raise StackError(f"creating topic {name!r} on {bootstrap}: {error}") from exc

    def visible() -> dict[str, int] | None:
        metadata = admin.list_topics(timeout=timeout)
        if any(n not in metadata.topics or metadata.topics[n].error for n in wanted):
            return None
        return {n: len(metadata.topics[n].partitions) for n in wanted}

    try:
        partitions = wait_for(f"topics {list(wanted)} in {bootstrap} metadata", visible, timeout)
    except WaitTimeout as exc:
        raise StackError(str(exc)) from None
    for name, expected in wanted.items():
        if partitions[name] != expected:
            say(f"kafka: warning: topic {name!r} has {partitions[name]} partitions, not {expected}")
    return result
