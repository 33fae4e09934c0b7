"""The fault suite: inject one fault while producers are still sending, then check the promises.

    target = Target.for_stack(Path(".state/chaos"), "127.0.0.1:19892", "127.0.0.1:19817", 3, logs)
    result = run_fault(target, "leader_broker")
    print(result.line())   # fault=leader_broker lost=0 duplicated=0 differing=0 recovery_s=4.1

Per fault: a fresh topic and database, 3 processor replicas (real processes, static group
membership), a feed of unique events sent at a bounded rate with acks=all; the fault lands
mid-stream. Afterwards:

* lost       events the producer had acknowledged that are not stored;
* duplicated stored documents beyond one per event_id, plus stored ids that were never sent;
* differing  documents whose derived fields (devtools.derived) differ from a clean run: a fresh
  processor on a fresh database consuming the same topic from its start;
* recovery_s seconds from the fault's injection until every event acknowledged before it is
  stored (consumption resumed and caught up). For ``store_30s`` that includes the 30 s outage.

scripts/chaos.py is the command line (``make chaos``); tests/integration/test_chaos.py runs the
quickest fault against the test stack. docs/operations.md lists the measured figures.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Final

import httpx
import orjson
from confluent_kafka import KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from pymongo import MongoClient

from devtools import processes, stack
from devtools.derived import stored_derived
from devtools.events import gpu_event, token_event
from devtools.ports import free_port
from devtools.waiting import wait_for
from schemas.contracts import kafka_key

REPO: Final = Path(__file__).resolve().parent.parent
FAULTS: Final = ("leader_broker", "one_replica", "all_replicas", "store_30s", "kafka_restart")
PARTITIONS: Final = 12
REPLICAS: Final = 3
STORE_OUTAGE_S: Final = 30.0
# A supervisor (compose `restart:`, systemd, Kubernetes) brings a dead process back after a
# moment; the suite does the same so that recovery includes a realistic restart, not a rebalance
# after the 45 s session timeout.
RESTART_AFTER_S: Final = 3.0
# Events stored before the fault: it must land mid-stream, with the feed still sending.
STORED_BEFORE_FAULT: Final = 300
# A whole-cluster restart takes ~20-40 s here; the producer keeps its records queued meanwhile
# instead of failing them (a failed delivery is not an acknowledgement, but we want none).
MESSAGE_TIMEOUT_MS: Final = 300_000
CATCH_UP_TIMEOUT_S: Final = 240.0
HOSTS: Final = ("chaos-a", "chaos-b")
GPUS: Final = tuple(
    (HOSTS[i % 2], f"GPU-c4a05000-0000-0000-0000-{i:012d}") for i in range(PARTITIONS)
)


@dataclass(frozen=True)
class Target:
    """Where the suite runs: servers, and (to inject server faults) the stack's state dir."""

    bootstrap: str
    mongo_url: str
    log_dir: Path
    brokers: int = 1
    state_dir: Path | None = None
    kafka_listen: str | None = None
    mongo_listen: str | None = None

    def restart_servers(self, only: str) -> None:
        if self.state_dir is None:
            raise ValueError("server faults need a stack state dir")
        stack.up(self.state_dir, only=only, kafka_listen=self.kafka_listen,
                 mongo_listen=self.mongo_listen, brokers=self.brokers, rejoin=True)  # fmt: skip

    def stop_servers(self, only: str) -> None:
        if self.state_dir is None:
            raise ValueError("server faults need a stack state dir")
        stack.down(self.state_dir, only=only)


@dataclass(frozen=True)
class Result:
    fault: str
    lost: int
    duplicated: int
    differing: int
    recovery_s: float
    sent: int
    stored: int

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.differing == 0

    def line(self) -> str:
        return (f"fault={self.fault} lost={self.lost} duplicated={self.duplicated} "
                f"differing={self.differing} recovery_s={self.recovery_s:.1f}")  # fmt: skip


class Feed(threading.Thread):
    """Sends *count* unique events at *rate* per second; records which ones Kafka acknowledged."""

    def __init__(self, bootstrap: str, topic: str, rate: float, count: int) -> None:
        super().__init__(name="chaos-feed", daemon=True)
        self.topic, self.rate, self.count = topic, rate, count
        self.producer = Producer({
            "bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
            "linger.ms": 5, "message.timeout.ms": MESSAGE_TIMEOUT_MS,
        })  # fmt: skip
        self._lock = threading.Lock()
        self.acked: list[str] = []
        self.failed: list[str] = []
        self.sent_ids: set[str] = set()
        self.error: BaseException | None = None

    def events(self) -> list[dict[str, Any]]:
        """Prices first (one GPU reading each), then tokens with a price change every 500."""
        out: list[dict[str, Any]] = [
            gpu_event(h, g, 0, price_per_hour_usd=2.0 + i % 3, energy_total_mj=1_000_000)
            for i, (h, g) in enumerate(GPUS)
        ]
        for n in range(self.count):
            host, gpu = GPUS[n % PARTITIONS]
            out.append(token_event(host, gpu, 1 + n * 0.05, 100 + n % 900, 10 + n % 300,
                                   tenant=("team-a", "team-b")[n % 2]))  # fmt: skip
            if n % 500 == 499:
                out.append(gpu_event(host, gpu, 1 + n * 0.05, price_per_hour_usd=1.5 + n % 7))
        return out

    def snapshot(self) -> set[str]:
        with self._lock:
            return set(self.acked)

    def _delivered(self, event_id: str, err: KafkaError | None, _msg: Message) -> None:
        with self._lock:
            (self.failed if err is not None else self.acked).append(event_id)

    def run(self) -> None:
        try:
            started = time.monotonic()
            for n, event in enumerate(self.events()):
                self.sent_ids.add(event["event_id"])
                while True:
                    try:
                        self.producer.produce(
                            self.topic, key=kafka_key(event), value=orjson.dumps(event),
                            on_delivery=partial(self._delivered, event["event_id"]),
                        )  # fmt: skip
                        break
                    except BufferError:
                        self.producer.poll(0.1)
                self.producer.poll(0)
                ahead = started + n / self.rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            remaining = self.producer.flush(MESSAGE_TIMEOUT_MS / 1000 + 30)
            if remaining:
                raise RuntimeError(f"{remaining} records still unsent")
        except BaseException as exc:  # reported by the caller, not lost in a thread
            self.error = exc


class Replica:
    """One processor (python -m processor) with its own port and log."""

    def __init__(self, env: Mapping[str, str], log: Path) -> None:
        self.port = free_port()
        self.log = log
        self.env = {**os.environ, **env, "HTTP_HOST": "127.0.0.1", "HTTP_PORT": str(self.port),
                    "PYTHONUNBUFFERED": "1"}  # fmt: skip
        self.spawned: processes.Spawned | None = None

    def start(self) -> Replica:
        self.spawned = processes.spawn([sys.executable, "-m", "processor"], log=self.log,
                                       cwd=REPO, env=self.env, new_session=False)  # fmt: skip
        wait_for(f"processor {self.log.stem} to answer", self._answers, 60)
        return self

    def _answers(self) -> bool:
        assert self.spawned is not None
        if self.spawned.popen.poll() is not None:
            raise RuntimeError(f"processor exited: see {self.log}")
        try:
            httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=5)
        except httpx.HTTPError:
            return False
        return True

    def kill(self) -> None:
        if self.spawned is not None:
            processes.kill(self.spawned.id)
            self.spawned.popen.wait(10)

    def stop(self) -> None:
        if self.spawned is not None:
            processes.stop(self.spawned.id, grace_s=30)
            self.spawned.popen.wait(10)


def _stored_ids(client: MongoClient[dict[str, Any]], db: str) -> tuple[set[str], int]:
    """(distinct stored ids, stored document count) over both collections."""
    ids: set[str] = set()
    docs = 0
    for collection in ("token_usage", "gpu_metrics"):
        found = [d["_id"] for d in client[db][collection].find({}, {"_id": 1})]
        docs += len(found)
        ids.update(found)
    return ids, docs


def _create_topic(bootstrap: str, name: str, brokers: int) -> None:
    config = {"min.insync.replicas": "2"} if brokers >= 3 else {}
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, PARTITIONS, brokers, config=config)])[name].result(30)


def _kill_partition_leader(target: Target, topic: str) -> int:
    admin = AdminClient({"bootstrap.servers": target.bootstrap})
    leader = admin.list_topics(topic, timeout=10).topics[topic].partitions[0].leader
    unit = "kafka" if leader == 1 else f"kafka-{leader}"
    assert target.state_dir is not None
    pid = stack.running_pid(target.state_dir, unit)
    if pid is None:
        raise RuntimeError(f"broker {leader} ({unit}) does not run from {target.state_dir}")
    os.kill(pid, signal.SIGKILL)  # the stack started it; its PID file identifies it
    return leader


def run_fault(
    target: Target,
    fault: str,
    *,
    rate: float = 150.0,
    count: int = 4000,
    say: Callable[[str], None] = lambda _line: None,
) -> Result:
    """Run one fault of FAULTS end to end; returns its figures (raises only if the run broke)."""
    if fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}; one of {', '.join(FAULTS)}")
    tag = f"{fault}-{uuid.uuid4().hex[:6]}"
    topic = f"chaos-{tag}"
    db, clean_db = (f"{prefix}_{tag}".replace("-", "_") for prefix in ("chaos", "clean"))
    _create_topic(target.bootstrap, topic, target.brokers)
    env = {
        "KAFKA_BOOTSTRAP": target.bootstrap, "KAFKA_TOPIC": topic, "KAFKA_DLQ_TOPIC": "tokens.dlq",
        "KAFKA_GROUP_ID": f"g-{tag}", "MONGO_URL": target.mongo_url, "MONGO_DB": db,
        "LAG_INTERVAL_S": "1", "MONGO_TIMEOUT_MS": "1000", "STORE_RETRY_MAX_S": "1",
        "LOG_LEVEL": "INFO",
    }  # fmt: skip
    client: MongoClient[dict[str, Any]] = MongoClient(target.mongo_url,
                                                      serverSelectionTimeoutMS=2000)  # fmt: skip
    logs = target.log_dir / tag
    replicas = [Replica({**env, "KAFKA_GROUP_INSTANCE_ID": f"r{i}"}, logs / f"r{i}.log")
                for i in range(REPLICAS)]  # fmt: skip
    feed = Feed(target.bootstrap, topic, rate, count)
    try:
        for replica in replicas:
            replica.start()
        feed.start()

        def stored_now() -> set[str]:
            try:
                return _stored_ids(client, db)[0]
            except Exception:  # the store may be the fault; "not yet" until it is back
                return set()

        wait_for("events stored before the fault",
                 lambda: len(stored_now()) >= STORED_BEFORE_FAULT, 120, 0.2)  # fmt: skip
        before = feed.snapshot()
        injected = time.monotonic()
        say(f"{fault}: injecting with {len(before)} events acknowledged")
        if fault == "leader_broker":
            leader = _kill_partition_leader(target, topic)
            say(f"{fault}: SIGKILLed broker {leader} (leader of partition 0)")
            time.sleep(RESTART_AFTER_S)
            target.restart_servers("kafka")
        elif fault == "one_replica":
            replicas[1].kill()
            time.sleep(RESTART_AFTER_S)
            replicas[1].start()
        elif fault == "all_replicas":
            for replica in replicas:
                replica.kill()
            time.sleep(RESTART_AFTER_S)
            for replica in replicas:
                replica.start()
        elif fault == "store_30s":
            target.stop_servers("mongo")
            time.sleep(STORE_OUTAGE_S)
            target.restart_servers("mongo")
        elif fault == "kafka_restart":
            target.stop_servers("kafka")
            target.restart_servers("kafka")
        wait_for("events acknowledged before the fault to be stored",
                 lambda: before <= stored_now(), CATCH_UP_TIMEOUT_S, 0.2)  # fmt: skip
        recovery_s = time.monotonic() - injected
        say(f"{fault}: caught up after {recovery_s:.1f} s; waiting for the feed to finish")
        feed.join(MESSAGE_TIMEOUT_MS / 1000 + 60)
        if feed.error is not None:
            raise RuntimeError(f"the feed failed: {feed.error!r}")
        acked = feed.snapshot()
        wait_for("every acknowledged event stored", lambda: acked <= stored_now(),
                 CATCH_UP_TIMEOUT_S, 0.5)  # fmt: skip
        for replica in replicas:
            replica.stop()
        ids, docs = _stored_ids(client, db)
        lost = len(acked - ids)
        duplicated = (docs - len(ids)) + len(ids - feed.sent_ids)

        # The same log, consumed from its start by one fresh processor into a fresh database.
        say(f"{fault}: clean run over the same topic")
        clean = Replica({**env, "KAFKA_GROUP_ID": f"clean-{tag}", "MONGO_DB": clean_db},
                        logs / "clean.log").start()  # fmt: skip
        try:
            wait_for("the clean run to store as much",
                     lambda: len(_stored_ids(client, clean_db)[0]) >= len(ids),
                     CATCH_UP_TIMEOUT_S, 0.5)  # fmt: skip
        finally:
            clean.stop()
        faulty, reference = stored_derived(client, db), stored_derived(client, clean_db)
        differing = sum(1 for k in reference.keys() | faulty.keys()
                        if reference.get(k) != faulty.get(k))  # fmt: skip
        result = Result(fault, lost, duplicated, differing, recovery_s, len(feed.sent_ids),
                        len(ids))  # fmt: skip
        if result.ok:  # keep the evidence of a failing run
            client.drop_database(db)
            client.drop_database(clean_db)
            AdminClient({"bootstrap.servers": target.bootstrap}).delete_topics([topic])
        return result
    finally:
        for replica in replicas:
            replica.kill()
        client.close()
