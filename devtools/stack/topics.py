"""The project's topics on the stack's broker: created once, idempotently."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.cimpl import NewTopic

from devtools.stack.config import topic_names
from devtools.stack.console import say
from devtools.stack.errors import StackError
from devtools.stack.probes import admin_client
from devtools.waiting import WaitTimeout, wait_for

__all__ = ["ensure_topics", "wait_replicated"]


def ensure_topics(
    bootstrap: str,
    topics: Mapping[str, int] | None = None,
    *,
    replication_factor: int = 1,
    config: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> dict[str, str]:
    """Create *topics* ({name: partitions}) if missing; returns {name: "created"|"exists"}.

    *config* is topic configuration (e.g. min.insync.replicas). Idempotent: TOPIC_ALREADY_EXISTS
    is success (an existing topic keeps its settings). Waits until the metadata shows every topic.
    """
    wanted = dict(topics) if topics is not None else topic_names()
    admin = admin_client(bootstrap, timeout)
    futures = admin.create_topics(
        [
            NewTopic(
                name,
                num_partitions=n,
                replication_factor=replication_factor,
                config=dict(config or {}),
            )
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


def wait_replicated(bootstrap: str, topics: Sequence[str], brokers: int, timeout: float) -> None:
    """Wait until the cluster shows *brokers* brokers and every partition of *topics* has a
    leader and all *brokers* replicas in sync (what "ready" means for a replicated cluster)."""
    admin = admin_client(bootstrap, timeout)

    def replicated() -> bool:
        metadata = admin.list_topics(timeout=min(timeout, 5.0))
        if len(metadata.brokers) < brokers:
            return False
        for name in topics:  # none: only the broker count is awaited
            topic = metadata.topics.get(name)
            if topic is None or topic.error or not topic.partitions:
                return False
            for partition in topic.partitions.values():
                if partition.leader < 0 or len(partition.isrs) < brokers:
                    return False
        return True

    try:
        wait_for(
            f"{brokers} brokers and full ISRs of {list(topics)} in {bootstrap}", replicated, timeout
        )
    except WaitTimeout as exc:
        raise StackError(str(exc)) from None
