"""Kafka and MongoDB 7 as containers for the tests (TEST_SERVERS=containers), via testcontainers.

    >>> with kafka_container() as kafka, mongo_container() as mongo:
    ...     kafka.bootstrap, mongo.root_url, mongo.app_url

NOT EXERCISED on this project's own CI machine (it has no Docker engine): docs/testing.md says
what runs where. The images are the deployment's (compose/*.yml) pinned by digest. The digests
were not pulled here (Docker Hub is unreachable from this machine); each is the digest that
several independent public repositories pin for the same tag (see docs/testing.md). A wrong one
fails the pull loudly ("manifest unknown"), never silently runs another image.
"""

from __future__ import annotations

import base64
import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from devtools.ports import free_port
from devtools.stack.config import KAFKA_VERSION, REPO
from devtools.waiting import wait_for

__all__ = [
    "KAFKA_IMAGE",
    "MONGO_APP_DB",
    "MONGO_IMAGE",
    "KafkaServer",
    "MongoServer",
    "kafka_container",
    "mongo_container",
]

KAFKA_IMAGE: Final = (
    f"apache/kafka:{KAFKA_VERSION}"
    "@sha256:4ceccc577f03f51f6af8dbfda55194d0d892f4fa7913ffbded567ce3895622ed"
)
# mongo:7.0 was 7.0.37 under this digest; compose says mongo:7.0 (the same line).
MONGO_IMAGE: Final = (
    "mongo:7.0.37@sha256:340c1c56fb10e95cf79ff547f8664b96bc6ead9909bc355238cbf865a9695a6f"
)
MONGO_INIT_DIR: Final = REPO / "compose" / "mongo-init"
MONGO_APP_DB: Final = "gpu_cost"
MONGO_APP_USER: Final = "gpu_cost_app"
# A KRaft broker in a container is ready in ~10 s; an image pull on a slow link takes longer,
# but testcontainers pulls before start, so this bounds only the broker's own start.
KAFKA_READY_S: Final = 120.0
# mongod's entrypoint starts a temporary server for the init scripts, stops it and starts the
# real one: ~10-20 s on a laptop.
MONGO_READY_S: Final = 120.0


@dataclass(frozen=True)
class KafkaServer:
    bootstrap: str


@dataclass(frozen=True)
class MongoServer:
    root_url: str  # the root user (authSource=admin): tests make their own databases
    app_url: str  # the init script's application user, on MONGO_APP_DB
    app_db: str


@contextlib.contextmanager
def kafka_container(image: str = KAFKA_IMAGE) -> Iterator[KafkaServer]:
    """A single-node KRaft broker of the official image, advertised on a fixed host port.

    testcontainers' KafkaContainer drives Confluent's image (its start hook edits Confluent's
    scripts), so the official image is started as a plain container: the host port is chosen
    first so that the advertised listener can name it. That assumes the engine publishes ports
    on this machine's localhost (a local engine, as on a laptop or a CI runner).
    """
    from testcontainers.core.container import DockerContainer

    port = free_port()
    container = (
        DockerContainer(image)
        .with_bind_ports(9092, port)
        .with_envs(
            CLUSTER_ID=_cluster_id(),
            KAFKA_NODE_ID="1",
            KAFKA_PROCESS_ROLES="broker,controller",
            KAFKA_CONTROLLER_QUORUM_VOTERS="1@localhost:9093",
            KAFKA_CONTROLLER_LISTENER_NAMES="CONTROLLER",
            KAFKA_LISTENERS="INTERNAL://:19092,EXTERNAL://:9092,CONTROLLER://localhost:9093",
            KAFKA_ADVERTISED_LISTENERS=f"INTERNAL://localhost:19092,EXTERNAL://localhost:{port}",
            KAFKA_LISTENER_SECURITY_PROTOCOL_MAP=(
                "CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,EXTERNAL:PLAINTEXT"
            ),
            KAFKA_INTER_BROKER_LISTENER_NAME="INTERNAL",
            KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_MIN_ISR="1",
            # Tests join consumer groups constantly: no rebalance delay (as the local stack).
            KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS="0",
            KAFKA_AUTO_CREATE_TOPICS_ENABLE="false",
            KAFKA_HEAP_OPTS="-Xms256m -Xmx512m",
        )
    )
    with container:
        bootstrap = f"{container.get_container_host_ip()}:{port}"
        wait_for(
            f"Kafka container at {bootstrap}", lambda: _kafka_answers(bootstrap), KAFKA_READY_S
        )
        yield KafkaServer(bootstrap=bootstrap)


def _cluster_id() -> str:
    """16 random bytes, URL-safe base64 without padding, not starting with "-" (a KRaft id)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _kafka_answers(bootstrap: str) -> bool:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    try:
        AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=3)
    except KafkaException:
        return False
    return True


@contextlib.contextmanager
def mongo_container(image: str = MONGO_IMAGE) -> Iterator[MongoServer]:
    """``mongo:7.0`` with auth; compose/mongo-init run by the image's entrypoint, as in compose."""
    from testcontainers.core.container import DockerContainer

    root_password = secrets.token_urlsafe(16)
    app_password = secrets.token_urlsafe(16)
    container = (
        DockerContainer(image)
        .with_exposed_ports(27017)
        .with_envs(
            MONGO_INITDB_ROOT_USERNAME="root",
            MONGO_INITDB_ROOT_PASSWORD=root_password,
            MONGO_APP_DB=MONGO_APP_DB,
            MONGO_APP_USER=MONGO_APP_USER,
            MONGO_APP_PASSWORD=app_password,
        )
        .with_volume_mapping(str(MONGO_INIT_DIR), "/docker-entrypoint-initdb.d", "ro")
    )
    with container:
        address = f"{container.get_container_host_ip()}:{container.get_exposed_port(27017)}"
        root_url = f"mongodb://root:{quote(root_password)}@{address}/?authSource=admin"
        app_url = (
            f"mongodb://{MONGO_APP_USER}:{quote(app_password)}@{address}/{MONGO_APP_DB}"
            f"?authSource={MONGO_APP_DB}"
        )
        # The app user exists only once the init script ran and the real mongod listens (the
        # entrypoint's temporary one binds to the container's loopback only).
        wait_for(f"MongoDB container at {address}", lambda: _mongo_answers(app_url), MONGO_READY_S)
        yield MongoServer(root_url=root_url, app_url=app_url, app_db=MONGO_APP_DB)


def _mongo_answers(url: str) -> bool:
    client: MongoClient[dict[str, object]] = MongoClient(url, serverSelectionTimeoutMS=2000)
    try:
        client[MONGO_APP_DB].command("ping")
    except PyMongoError:
        return False
    finally:
        client.close()
    return True
