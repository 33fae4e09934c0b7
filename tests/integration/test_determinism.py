"""Same log, same stored numbers: 1 replica vs 3 replicas vs a replica killed and restarted.

Replicas are real processes (`python -m processor`); the kill is SIGKILL, so whatever was
written but not committed is processed again and the cost windows of the partitions are
rebuilt from MongoDB.
"""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from pymongo import MongoClient

from devtools.derived import stored_derived as stored
from devtools.events import gpu_event, token_event
from processor.anomalies import RULES
from tests.support.kafka_io import produce_events
from tests.support.processes import ProcessorProcess, wait_for

pytestmark = pytest.mark.integration

MODELS = ("llama-3.1-8b-instruct", "llama-3.1-70b-instruct")
TENANTS = ("team-a", "team-b", None)


def sensor_readings(
    rng: random.Random, gpus: list[tuple[str, str]], seconds: float
) -> list[tuple[float, dict[str, Any]]]:
    """A reading every 3 s per GPU (jittered, out of order) with outliers and throttling."""
    out = []
    for i, (host, gpu) in enumerate(gpus):
        for n in range(int(seconds / 3)):
            at = n * 3.0 + rng.uniform(-2.0, 2.0)
            event = gpu_event(host, gpu, at, gpu_index=i % 4,
                              price_per_hour_usd=3.6 if i % 2 else None,
                              energy_total_mj=energy_at(at) if i % 2 else None)  # fmt: skip
            values = {"temperature_gpu_c": round(rng.gauss(65, 1.0), 1),
                      "power_draw_w": round(rng.gauss(300, 10), 1),
                      "utilization_gpu_pct": round(rng.uniform(70, 95), 1),
                      "clock_sm_mhz": float(rng.choice((1395, 1410, 1410, 1425))),
                      "power_limit_w": 400.0}  # fmt: skip
            kind = rng.random()
            if kind < 0.02:
                values["temperature_gpu_c"] = 92.0  # a spike
            elif kind < 0.04:
                values.update(power_draw_w=397.0, clock_sm_mhz=1005.0)  # at the cap
            elif kind < 0.06:
                values.update(temperature_gpu_c=88.0, clock_sm_mhz=990.0)  # hot and slowed
            elif kind < 0.08:
                values["utilization_gpu_pct"] = 3.0  # a stall
            event.update(values, unsupported_fields=[])
            out.append((at, event))
            if rng.random() < 0.03:  # a producer duplicate
                out.append((at, dict(event)))
    return out


def energy_at(at: float) -> int:
    """The energy counter of a GPU drawing ~300 W: monotonic in event time (mJ)."""
    return 10_000_000 + int(max(at, 0.0) * 300_000)


def build_log(seed: int = 7, n_tokens: int = 6000) -> tuple[list[dict[str, Any]], int]:
    """Token events on 8 GPUs with jittered (out-of-order) ts, price changes and duplicates;
    readings every 3 s per GPU with outliers and throttling (anomaly flags)."""
    rng = random.Random(seed)
    gpus = [(f"host-{h}", f"GPU-{uuid.UUID(int=rng.getrandbits(128))}") for h in range(2)
            for _ in range(4)]  # fmt: skip
    events: list[dict[str, Any]] = []
    energy = dict.fromkeys(gpus, energy_at(0))  # mJ counters; every other GPU reports one
    for i, (host, gpu) in enumerate(gpus):
        price = 3.6 if i % 2 else None  # half priced by the event, half by the default
        events.append(
            gpu_event(
                host,
                gpu,
                0,
                price_per_hour_usd=price,
                gpu_index=i % 4,
                energy_total_mj=energy[host, gpu] if i % 2 else None,
            )
        )
    unique = 0
    # Readings interleaved with the token traffic by event time, as producers send them.
    readings = sorted(sensor_readings(rng, gpus, n_tokens * 0.05), key=lambda r: r[0])
    for n in range(n_tokens):
        while readings and readings[0][0] <= n * 0.05:
            events.append(readings.pop(0)[1])
        host, gpu = gpus[rng.randrange(len(gpus))]
        at = n * 0.05 + rng.uniform(-3.0, 3.0)  # ~200 s of traffic, out of order by up to 6 s
        event = token_event(host, gpu, at, rng.randint(0, 2000), rng.randint(0, 800),
                            latency_ms=rng.uniform(50, 4000), model=MODELS[n % 2],
                            tenant=TENANTS[n % 3])  # fmt: skip
        events.append(event)
        unique += 1
        if n % 500 == 250:  # a price change mid-stream, with an energy reading
            energy[host, gpu] = energy_at(at)
            events.append(gpu_event(host, gpu, at, price_per_hour_usd=rng.choice([2.0, 4.5]),
                                    energy_total_mj=energy[host, gpu]))  # fmt: skip
        if n % 97 == 0:  # a producer duplicate
            events.append(dict(event))
    events.extend(r for _, r in readings)
    return events, unique


@pytest.fixture(scope="module")
def dataset(kafka_bootstrap: str) -> Iterator[tuple[str, int]]:
    name = f"determinism-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(name, 12, 1)])[name].result(30)
    events, unique = build_log()
    produce_events(kafka_bootstrap, name, events)
    yield name, unique
    admin.delete_topics([name])[name].result(30)


@pytest.fixture
def mongo(mongo_url: str) -> Iterator[MongoClient[dict[str, Any]]]:
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_url)
    yield client
    client.close()


@pytest.fixture
def dbs(mongo: MongoClient[dict[str, Any]]) -> Iterator[dict[str, str]]:
    """A fresh database name per run, dropped afterwards."""
    names = {k: f"det_{k}_{uuid.uuid4().hex[:6]}" for k in ("one", "three", "killed")}
    yield names
    for name in names.values():
        mongo.drop_database(name)


def run_env(kafka_bootstrap: str, mongo_url: str, topic: str, db: str) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP": kafka_bootstrap,
        "KAFKA_TOPIC": topic,
        "KAFKA_DLQ_TOPIC": "tokens.dlq",
        "KAFKA_GROUP_ID": f"g-{db}",
        "MONGO_URL": mongo_url,
        "MONGO_DB": db,
        # Small batches: the drain takes long enough for rebalances and a kill to land mid-stream.
        "CONSUME_BATCH_SIZE": "10",
        # Two models with their own output weights: k travels through the rebuild too.
        "OUTPUT_TOKEN_WEIGHT": "4",
        "OUTPUT_TOKEN_WEIGHT_BY_MODEL": '{"llama-3.1-70b-instruct": 2.5}',
        "LOG_LEVEL": "INFO",
    }


def rebuilt_token_events(log: Path) -> int:
    text = log.read_text(errors="replace")
    return sum(int(n) for n in re.findall(r"rebuilt cost state .* token_events=(\d+)", text))


# Three drains of ~7,000 events on a shared 2-core machine: more than the suite's 300 s default.
@pytest.mark.timeout(900)
def test_one_replica_three_replicas_and_a_kill_store_identical_costs(
    kafka_bootstrap: str,
    mongo_url: str,
    dataset: tuple[str, int],
    mongo: MongoClient[dict[str, Any]],
    dbs: dict[str, str],
    tmp_path: Path,
) -> None:
    topic, unique = dataset

    def count(db: str) -> int:
        return mongo[db]["token_usage"].count_documents({})

    # 1 replica, uninterrupted: the reference.
    one = ProcessorProcess(run_env(kafka_bootstrap, mongo_url, topic, dbs["one"]),
                           tmp_path / "one.log").start()  # fmt: skip
    wait_for("single replica to store everything", lambda: count(dbs["one"]) == unique, 180)
    one.stop()

    # 3 replicas: the 2nd and 3rd join mid-stream, then the 1st leaves mid-stream, so
    # partitions move both ways and their new owners rebuild windows from the store.
    env = run_env(kafka_bootstrap, mongo_url, topic, dbs["three"])
    logs = [tmp_path / f"three-{i}.log" for i in range(3)]
    # The first replica takes one message per batch (the stored values do not depend on the
    # batch size): slow, so it is still mid-way through the partitions it keeps when it
    # leaves. (Joining alone does not prove a rebuild: librdkafka may hand it one partition's
    # messages at a time, and the partitions that move can be ones it has not touched yet.)
    first = ProcessorProcess({**env, "CONSUME_BATCH_SIZE": "1"}, logs[0]).start()
    wait_for("the first replica to start storing", lambda: count(dbs["three"]) > 0, 60, 0.05)
    others = [ProcessorProcess(env, log).start() for log in logs[1:]]
    at_join = count(dbs["three"])

    def batches(replica: ProcessorProcess) -> int:
        return int(replica.health()[1].get("consumer", {}).get("batches", 0))

    def first_keeps_some() -> bool:
        held = first.health()[1].get("consumer", {}).get("assigned_partitions")
        return bool(held) and len(held) < 12

    wait_for("the first replica to give partitions away", first_keeps_some, 60, 0.05)
    after_join = batches(first)
    # One message per batch: 50 more batches are 50 messages of the partitions it kept.
    wait_for("the first replica to consume its kept partitions",
             lambda: batches(first) >= after_join + 50, 120, 0.02)  # fmt: skip
    first.stop()  # its partitions move, mid-stream, to the other two
    at_leave = count(dbs["three"])
    wait_for("the other replicas to store everything", lambda: count(dbs["three"]) == unique, 180)
    for replica in others:
        replica.stop()
    assert at_join < unique, "the drain ended before the other replicas joined"
    assert at_leave < unique, "the drain ended before the first replica left"
    assert sum(rebuilt_token_events(log) for log in logs[1:]) > 0, "no window was rebuilt"

    # 1 replica killed with SIGKILL mid-stream, then restarted.
    env = run_env(kafka_bootstrap, mongo_url, topic, dbs["killed"])
    victim = ProcessorProcess(env, tmp_path / "killed-1.log").start()
    wait_for("a third of the log stored", lambda: count(dbs["killed"]) >= unique // 3, 120, 0.02)
    victim.kill()
    at_kill = count(dbs["killed"])
    assert at_kill < unique, "the replica finished before it could be killed"
    restarted = ProcessorProcess(env, tmp_path / "killed-2.log").start()
    wait_for("the restarted replica to finish", lambda: count(dbs["killed"]) == unique, 180)
    restarted.stop()
    assert rebuilt_token_events(tmp_path / "killed-2.log") > 0, "restart did not rebuild"

    reference = stored(mongo, dbs["one"])
    gpu_docs = mongo[dbs["one"]]["gpu_metrics"].count_documents({})
    assert len(reference) == unique + gpu_docs
    energy = mongo[dbs["one"]]["gpu_metrics"].count_documents({"energy_delta_j": {"$gt": 0}})
    assert energy > 0, "no reading carried an energy delta: the energy path went untested"
    flagged = {
        rule: mongo[dbs["one"]]["gpu_metrics"].count_documents({"anomalies.rule": rule})
        for rule in RULES
    }
    assert all(flagged.values()), f"a rule never fired, so it went untested: {flagged}"
    for name in ("three", "killed"):
        other = stored(mongo, dbs[name])
        differing = [k for k in reference if reference[k] != other.get(k)]
        assert not differing, (
            f"{name}: {len(differing)} documents differ, e.g. "
            f"{reference[differing[0]]} != {other.get(differing[0])}"
        )
