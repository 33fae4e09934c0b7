"""Shared fixtures: real Kafka and a real MongoDB-wire server (FerretDB) for integration tests.

Which servers the tests use:

* ``TEST_SERVERS`` = ``env`` | ``local`` | ``containers`` (unset or ``auto``: containers when a
  Docker engine answers, else local) picks the source. ``env``: exactly the servers named by
  ``KAFKA_BOOTSTRAP`` / ``MONGO_URL`` (a missing one is a usage error); in the other modes a
  server named there still wins, nothing is started for it. Otherwise containers or the local
  stack
  (``devtools.harness``, unit-tested). Containers: ``apache/kafka`` and ``mongo:7.0`` (pinned by
  digest, ``devtools.containers``) started through testcontainers once per session; MongoDB runs
  with auth and compose/mongo-init, the tests use its root user. Never run on this project's own
  CI machine (no Docker engine there): see docs/testing.md.
* the local stack (``devtools.stack``, the code behind ``scripts/stack.py``) in
  ``<repo>/.state/test-stack`` on the stack's addresses (default 127.0.0.1:9092 and
  127.0.0.1:27017, or ``STACK_KAFKA_LISTEN`` / ``STACK_MONGO_LISTEN``). If something already
  answers there (``make stack-up``, a compose stack, ...) it is used as is and never stopped.
  Otherwise the first test that needs a server starts it; the last pytest session using the test
  stack stops it (sessions that run at the same time share it through lease files under an
  fcntl lock).

Everything is lazy: only a test that requests ``kafka_bootstrap`` / ``mongo_url`` (directly or
through ``topic``, ``mongo_db``, ...) starts anything, and only the server it needs. Unit tests
start nothing. See docs/local-stack.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from pymongo import MongoClient
from pymongo.database import Database

from devtools import harness, stack
from devtools.containers import MongoServer, kafka_container, mongo_container
from devtools.ports import free_port
from devtools.processes import ProcessId
from devtools.waiting import wait_for

REPO = Path(__file__).resolve().parent.parent

TEST_STACK_DIR = REPO / ".state" / "test-stack"
FIRST_INSTALL_TIMEOUT_S = 1200  # the first run downloads Kafka's jars and builds FerretDB
TOPIC_PARTITIONS = 12
DLQ_PARTITIONS = 3

Doc = dict[str, Any]


# --------------------------------------------------------------------------- helpers


def kafka_client_config(
    bootstrap: str, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A confluent_kafka config for *bootstrap*: ``{"bootstrap.servers": ..., **overrides}``."""
    return {"bootstrap.servers": bootstrap, **(overrides or {})}


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def create_topic(bootstrap: str, name: str, partitions: int, timeout: float = 30.0) -> None:
    """Create *name* and wait until every partition has a leader."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    futures[name].result(timeout=timeout)

    def leaders_ready() -> bool:
        topic = admin.list_topics(name, timeout=timeout).topics.get(name)
        return (
            topic is not None
            and topic.error is None
            and len(topic.partitions) == partitions
            and all(p.leader >= 0 for p in topic.partitions.values())
        )

    wait_for(f"leaders of every partition of {name}", leaders_ready, timeout, every_s=0.1)


def delete_topic(bootstrap: str, name: str, timeout: float = 30.0) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        admin.delete_topics([name], operation_timeout=timeout)[name].result(timeout=timeout)
    except KafkaException as exc:
        error = exc.args[0]
        if not (isinstance(error, KafkaError) and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART):
            raise


# --------------------------------------------------------------------------- the shared test stack


def _lease_alive(path: Path) -> bool:
    try:
        pid_text, start_text = path.read_text().split()
        return ProcessId(int(pid_text), int(start_text)).alive()
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def _pytest_lock(state_dir: Path) -> Iterator[None]:
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / "pytest.lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class TestStack:
    """The servers this session's tests use; starts the local stack lazily, one server at a time.

    (Not a test class: ``__test__ = False``.)
    """

    __test__ = False

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.lease = state_dir / "leases" / str(os.getpid())
        self.external: dict[str, str] = {}
        self.local: dict[str, str] = {}

    def _take_lease(self) -> None:
        if not self.lease.exists():
            self.lease.parent.mkdir(parents=True, exist_ok=True)
            me = ProcessId.of(os.getpid())
            assert me is not None  # this very process runs
            self.lease.write_text(f"{me.pid} {me.starttime}\n")

    def address(self, server: stack.Server) -> str:
        if server in self.local:
            return self.local[server]
        if server in self.external:
            return self.external[server]
        cfg = stack.StackConfig.make(self.state_dir)
        address = cfg.listen(server)
        with _pytest_lock(self.state_dir):
            ours = stack.running_pid(self.state_dir, server) is not None
            if not ours and stack.answers(server, address, 3.0):
                # Someone else's server (make stack-up, compose, ...): use it, never stop it.
                self.external[server] = str(address)
                return str(address)
            self._take_lease()
            try:
                stack.up(self.state_dir, only=server)
            except stack.StackError as exc:
                pytest.fail(
                    f"could not start the local {server} for the tests:\n{exc}", pytrace=False
                )
        self.local[server] = str(address)
        return str(address)

    def release(self) -> None:
        """Drop this session's lease; the last session out stops what the test stack started."""
        if not self.lease.exists():
            return
        with _pytest_lock(self.state_dir):
            self.lease.unlink(missing_ok=True)
            others = [p for p in self.lease.parent.iterdir() if _lease_alive(p)]
            for stale in set(self.lease.parent.iterdir()) - set(others):
                stale.unlink(missing_ok=True)
            if not others:
                stack.down(self.state_dir)


@pytest.fixture(scope="session")
def _test_stack() -> Iterator[TestStack]:
    handle = TestStack(TEST_STACK_DIR)
    yield handle
    handle.release()


_CHOICE: list[harness.Choice] = []


def harness_choice() -> harness.Choice:
    """TEST_SERVERS decided once per session (auto probes the Docker engine once)."""
    if not _CHOICE:
        endpoint = harness.docker_endpoint(os.environ)
        try:
            choice = harness.choose(
                os.environ.get(harness.HARNESS_ENV), lambda: harness.ping_docker(endpoint)
            )
        except harness.HarnessError as exc:
            raise pytest.UsageError(str(exc)) from exc
        _CHOICE.append(choice)
    return _CHOICE[0]


def pytest_report_header(config: pytest.Config) -> str:
    choice = harness_choice()
    return f"test harness: {choice.harness} ({choice.reason})"


@pytest.fixture(scope="session")
def _kafka_container() -> Iterator[str]:
    with kafka_container() as server:
        yield server.bootstrap


@pytest.fixture(scope="session")
def mongo7() -> Iterator[MongoServer]:
    """MongoDB 7 itself (containers mode only; skipped otherwise): a ``MongoServer`` with the
    root and the init script's application-user URLs."""
    choice = harness_choice()
    if choice.harness != "containers":
        pytest.skip(f"MongoDB 7 runs only with TEST_SERVERS=containers; this run: {choice.reason}")
    with mongo_container() as server:
        yield server


@pytest.fixture(scope="session")
def kafka_bootstrap(request: pytest.FixtureRequest) -> str:
    """Bootstrap servers of a real Kafka broker (``KAFKA_BOOTSTRAP``, a container or the local
    stack)."""
    if os.environ.get("KAFKA_BOOTSTRAP"):
        return os.environ["KAFKA_BOOTSTRAP"]
    if harness_choice().harness == "env":
        raise pytest.UsageError("TEST_SERVERS=env needs KAFKA_BOOTSTRAP (the Kafka to test)")
    if harness_choice().harness == "containers":
        return str(request.getfixturevalue("_kafka_container"))
    test_stack: TestStack = request.getfixturevalue("_test_stack")
    return test_stack.address("kafka")


@pytest.fixture(scope="session")
def mongo_url(request: pytest.FixtureRequest) -> str:
    """URL of a real MongoDB-wire server (``MONGO_URL``, mongo:7.0 in a container or the local
    stack's FerretDB)."""
    if os.environ.get("MONGO_URL"):
        return os.environ["MONGO_URL"]
    if harness_choice().harness == "env":
        raise pytest.UsageError("TEST_SERVERS=env needs MONGO_URL (the MongoDB to test against)")
    if harness_choice().harness == "containers":
        return str(request.getfixturevalue("mongo7").root_url)
    test_stack: TestStack = request.getfixturevalue("_test_stack")
    return stack.mongo_url(test_stack.address("mongo"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The first run installs the stack or pulls images (minutes): give tests that may trigger
    it more time."""
    needs = {"kafka_bootstrap": "kafka", "mongo_url": "mongo"}
    containers = harness_choice().harness == "containers"
    missing = {
        fixture
        for fixture, server in needs.items()
        if not os.environ.get("KAFKA_BOOTSTRAP" if server == "kafka" else "MONGO_URL")
        and (containers or not stack.installed(only=server))
    }
    if containers:
        missing.add("mongo7")
    if not missing:
        return
    for item in items:
        if missing & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.timeout(FIRST_INSTALL_TIMEOUT_S), append=False)


# --------------------------------------------------------------------------- kafka helpers


class KafkaConfigFactory(Protocol):
    def __call__(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]: ...


@pytest.fixture(scope="session")
def kafka_config(kafka_bootstrap: str) -> KafkaConfigFactory:
    """``kafka_config({"group.id": g})`` -> a confluent_kafka config for the test broker."""

    def make(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return kafka_client_config(kafka_bootstrap, overrides)

    return make


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": kafka_bootstrap})


@pytest.fixture
def topic(kafka_bootstrap: str) -> Iterator[str]:
    """A fresh topic with 12 partitions (like ``tokens``), deleted afterwards."""
    name = unique_name("test.tokens")
    create_topic(kafka_bootstrap, name, TOPIC_PARTITIONS)
    yield name
    delete_topic(kafka_bootstrap, name)


@pytest.fixture
def dlq_topic(kafka_bootstrap: str) -> Iterator[str]:
    """A fresh topic with 3 partitions (like ``tokens.dlq``), deleted afterwards."""
    name = unique_name("test.tokens.dlq")
    create_topic(kafka_bootstrap, name, DLQ_PARTITIONS)
    yield name
    delete_topic(kafka_bootstrap, name)


@pytest.fixture
def group_id() -> str:
    """A consumer group name no other test uses."""
    return unique_name("test-group")


# --------------------------------------------------------------------------- mongo helpers


@pytest.fixture
def mongo_client(mongo_url: str) -> Iterator[MongoClient[Doc]]:
    client: MongoClient[Doc] = MongoClient(mongo_url, serverSelectionTimeoutMS=10_000)
    yield client
    client.close()


@pytest.fixture
def mongo_db(mongo_client: MongoClient[Doc]) -> Iterator[Database[Doc]]:
    """A database with a fresh name, dropped afterwards."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    yield mongo_client[name]
    mongo_client.drop_database(name)


# --------------------------------------------------------------------------- private stacks


@dataclass
class PrivateStack:
    """A stack of its own (state dir + free ports) for tests that stop and start servers."""

    state_dir: Path
    kafka_listen: str
    mongo_listen: str
    brokers: int = 1  # 3: a KRaft cluster on kafka_listen's port .. port+5

    @property
    def kafka_bootstrap(self) -> str:
        return stack.kafka_bootstrap(self.kafka_listen, self.brokers)

    @property
    def mongo_url(self) -> str:
        return stack.mongo_url(self.mongo_listen)

    def cli_args(self) -> list[str]:
        """The command line of scripts/stack.py for this stack (append the subcommand)."""
        return [
            sys.executable, str(REPO / "scripts" / "stack.py"), "--state-dir", str(self.state_dir),
            "--kafka-listen", self.kafka_listen, "--mongo-listen", self.mongo_listen,
        ]  # fmt: skip

    def up(self, only: str | None = None) -> dict[stack.Server, stack.ServerState]:
        return stack.up(
            self.state_dir,
            only=only,
            kafka_listen=self.kafka_listen,
            mongo_listen=self.mongo_listen,
            brokers=self.brokers,
        )

    def down(self, only: str | None = None) -> dict[str, str]:
        return stack.down(self.state_dir, only=only)


@pytest.fixture
def private_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PrivateStack]:
    """A not-yet-started stack on free 127.0.0.1 ports; whatever it runs is stopped afterwards.

    ``@pytest.mark.parametrize("private_stack", [3], indirect=True)`` makes it a 3-broker one."""
    brokers = int(getattr(request, "param", 1))
    handle = PrivateStack(
        state_dir=tmp_path / "stack",
        kafka_listen=f"127.0.0.1:{free_port(pair=True, span=2 * brokers)}",
        mongo_listen=f"127.0.0.1:{free_port()}",
        brokers=brokers,
    )
    yield handle
    handle.down()
