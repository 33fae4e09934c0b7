"""Addresses, directories and versions of the local stack, and what a server is doing."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from devtools.stack.errors import StackError

__all__ = [
    "BROKER_COUNTS",
    "DEFAULT_STATE_DIR",
    "KAFKA_VERSION",
    "REPO",
    "SERVERS",
    "Address",
    "Server",
    "ServerState",
    "StackConfig",
    "default_cache_dir",
    "mongo_url",
    "selected",
    "topic_names",
]

REPO: Final = Path(__file__).resolve().parents[2]
KAFKA_VERSION: Final = "3.9.1"
FERRETDB_VERSION: Final = "v1.24.2"

DEFAULT_STATE_DIR: Final = Path(".state")
DEFAULT_KAFKA_LISTEN: Final = "127.0.0.1:9092"
DEFAULT_MONGO_LISTEN: Final = "127.0.0.1:27017"
DEFAULT_TOPIC: Final = "tokens"
DEFAULT_DLQ_TOPIC: Final = "tokens.dlq"
TOPIC_PARTITIONS: Final = 12
DLQ_PARTITIONS: Final = 3

Server = Literal["kafka", "mongo"]
SERVERS: Final[tuple[Server, ...]] = ("kafka", "mongo")


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Address:
        host, sep, port = text.strip().rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65535:
            raise StackError(f"bad address {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9092")
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def next_port(self) -> Address:
        return Address(self.host, self.port + 1)


def default_kafka_listen() -> Address:
    return Address.parse(os.environ.get("STACK_KAFKA_LISTEN") or DEFAULT_KAFKA_LISTEN)


def default_mongo_listen() -> Address:
    return Address.parse(os.environ.get("STACK_MONGO_LISTEN") or DEFAULT_MONGO_LISTEN)


def default_cache_dir() -> Path:
    return Path(os.environ.get("STACK_CACHE_DIR") or REPO / ".cache")


def topic_names() -> dict[str, int]:
    """The project's topics and their partition counts (names overridable by env)."""
    return {
        os.environ.get("KAFKA_TOPIC") or DEFAULT_TOPIC: TOPIC_PARTITIONS,
        os.environ.get("KAFKA_DLQ_TOPIC") or DEFAULT_DLQ_TOPIC: DLQ_PARTITIONS,
    }


def mongo_url(address: Address | str) -> str:
    return f"mongodb://{address}/"


def selected(only: str | None) -> tuple[Server, ...]:
    """The servers an ``--only`` value names (both when None)."""
    if only is None:
        return SERVERS
    if only not in SERVERS:
        raise StackError(f"--only must be one of {', '.join(SERVERS)}, not {only!r}")
    return (only,)


BROKER_COUNTS: Final = (1, 3)


def check_brokers(brokers: int) -> int:
    # 2 nodes would be a quorum that cannot lose either; RF 3 / min ISR 2 needs exactly 3.
    if brokers not in BROKER_COUNTS:
        raise StackError(f"--brokers must be 1 or 3, not {brokers}")
    return brokers


def check_security(security: str, brokers: int) -> str:
    if security not in ("plaintext", "sasl-ssl"):
        raise StackError(f"--security must be plaintext or sasl-ssl, not {security}")
    if security != "plaintext" and brokers != 1:
        raise StackError("--security sasl-ssl is for the single-broker stack (--brokers 1)")
    return security


@dataclass(frozen=True)
class StackConfig:
    state_dir: Path
    kafka_listen: Address
    mongo_listen: Address
    cache_dir: Path
    brokers: int = 1  # Kafka KRaft nodes (1, or 3 for a cluster with RF 3 / min ISR 2)
    security: str = "plaintext"  # or "sasl-ssl": a SASL_SSL listener too (devtools/stack/sasl.py)

    @classmethod
    def make(
        cls,
        state_dir: Path | str = DEFAULT_STATE_DIR,
        *,
        kafka_listen: Address | str | None = None,
        mongo_listen: Address | str | None = None,
        cache_dir: Path | str | None = None,
        brokers: int = 1,
        security: str = "plaintext",
    ) -> StackConfig:
        def addr(value: Address | str | None, default: Address) -> Address:
            if value is None:
                return default
            return value if isinstance(value, Address) else Address.parse(value)

        return cls(
            state_dir=Path(state_dir).absolute(),
            kafka_listen=addr(kafka_listen, default_kafka_listen()),
            mongo_listen=addr(mongo_listen, default_mongo_listen()),
            cache_dir=Path(cache_dir).absolute() if cache_dir else default_cache_dir().absolute(),
            brokers=check_brokers(brokers),
            security=check_security(security, brokers),
        )

    def listen(self, server: Server) -> Address:
        return self.kafka_listen if server == "kafka" else self.mongo_listen

    def log_path(self, unit: str) -> Path:
        """Log of *unit*: a server name, or a Kafka node's ("kafka-2")."""
        return self.state_dir / f"{unit}.log"


@dataclass
class ServerState:
    """What one server of the stack is doing (returned by up() and status())."""

    name: Server
    address: Address
    pid: int | None = None
    running: bool = False  # a process this state dir started is alive
    answering: bool = False  # the server answered a real request
    started_now: bool = False
    detail: str = ""
    log: Path | None = None
    node: int = 1  # the Kafka KRaft node this state describes (1 for FerretDB)
    members: list[ServerState] = field(default_factory=list)  # Kafka nodes 2.. of a cluster
    bootstrap: str = ""  # every broker address, comma-separated (Kafka only)

    @property
    def ok(self) -> bool:
        return self.running and self.answering
