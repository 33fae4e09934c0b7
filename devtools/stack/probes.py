"""Is a server there? Each probe asks a real request, never just "the port is open"."""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Final

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from devtools import ports
from devtools.stack.config import Address, Server, mongo_url
from devtools.stack.errors import StackError

__all__ = [
    "admin_client",
    "answers",
    "kafka_answers",
    "kafka_metadata",
    "mongo_answers",
    "tcp_open",
]

# librdkafka logs connection failures to stderr unless given a logger; keep probes quiet.
_QUIET: Final = logging.getLogger("stack.rdkafka")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


def tcp_open(address: Address, timeout: float = 1.0) -> bool:
    """True if something accepts TCP connections on *address*."""
    return ports.tcp_open(address.host, address.port, timeout)


def admin_client(bootstrap: str, timeout: float) -> AdminClient:
    conf: dict[str, str | int | float | bool] = {
        "bootstrap.servers": bootstrap,
        "socket.connection.setup.timeout.ms": max(1000, int(timeout * 1000)),
        # librdkafka's own reconnect policy while a probe waits for a broker that is starting.
        "reconnect.backoff.ms": 100,
        "reconnect.backoff.max.ms": 1000,
    }
    return AdminClient(conf, logger=_QUIET)


def kafka_metadata(bootstrap: str, timeout: float = 5.0) -> Any | None:
    """Cluster metadata if a Kafka broker answers on *bootstrap* within *timeout*, else None."""
    first = bootstrap.split(",")[0]
    # A closed port fails in microseconds; without this, librdkafka would retry until timeout.
    with contextlib.suppress(StackError):
        if not tcp_open(Address.parse(first), min(timeout, 2.0)):
            return None
    try:
        metadata = admin_client(bootstrap, timeout).list_topics(timeout=timeout)
    except KafkaException:
        return None
    return metadata if metadata.brokers else None


def kafka_answers(bootstrap: str, timeout: float = 5.0) -> bool:
    return kafka_metadata(bootstrap, timeout) is not None


def mongo_answers(url_or_address: str | Address, timeout: float = 5.0) -> bool:
    """True if a MongoDB-wire server answers ``ping``."""
    url = str(url_or_address)
    if not url.startswith("mongodb"):
        url = mongo_url(url)
    ms = max(500, int(timeout * 1000))
    client: MongoClient[dict[str, Any]] = MongoClient(
        url,
        serverSelectionTimeoutMS=ms,
        connectTimeoutMS=ms,
        socketTimeoutMS=ms,
        directConnection=True,
        appname="stack.py",
    )
    try:
        client.admin.command("ping")
        return True
    except PyMongoError:
        return False
    finally:
        client.close()


def answers(server: Server, address: Address | str, timeout: float = 5.0) -> bool:
    """True if *server* ("kafka" or "mongo") answers a real request on *address*."""
    address = address if isinstance(address, Address) else Address.parse(address)
    if server == "kafka":
        return kafka_answers(str(address), timeout)
    return tcp_open(address, min(timeout, 2.0)) and mongo_answers(address, timeout)
