"""MongoDB 7 itself (not FerretDB): the store's queries use the intended indexes, and the init
script's application user can do what the processor does and nothing more.

Runs only with TEST_SERVERS=containers (the ``mongo7`` fixture skips otherwise, with the reason):
``mongo:7.0`` started by testcontainers with auth and compose/mongo-init, as compose runs it.
NOT EXERCISED on this project's own CI machine (no Docker engine there); docs/testing.md.

The queries are captured as the store sends them (command monitoring) and explained as such, so
a change to store.py's queries is what these tests check, not a copy of them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any, Final

import pytest
from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import OperationFailure

from devtools.containers import MongoServer
from processor.documents import GPU_METRICS, TOKEN_USAGE, time_buckets
from processor.store import MongoStore
from tests.support.mongo_plans import Stage, captured_commands, explain_command, plan_stages

pytestmark = pytest.mark.integration

Doc = dict[str, Any]

PARTITIONS: Final = 12
GPUS_PER_PARTITION: Final = 2
TOKENS_PER_GPU: Final = 150
READINGS_PER_GPU: Final = 30
MINUTES: Final = 60  # the data spans an hour; rollup queries ask for a few minutes of it
T0_US: Final = 1_790_000_000_000_000
UNAUTHORIZED: Final = 13


def _docs() -> dict[str, list[Doc]]:
    gpus: list[Doc] = []
    tokens: list[Doc] = []
    offset = 0
    for partition in range(PARTITIONS):
        for g in range(GPUS_PER_PARTITION):
            key = f"host-{partition}/GPU-{partition}-{g}"
            for i in range(READINGS_PER_GPU):
                ts = T0_US + i * (MINUTES * 60_000_000 // READINGS_PER_GPU)
                offset += 1
                gpus.append({
                    "_id": str(uuid.uuid4()), "gpu_key": key, "host": key.split("/")[0],
                    "ts_us": ts, **time_buckets(ts), "kafka_partition": partition,
                    "kafka_offset": offset, "price_per_hour_usd": 2.0, "power_draw_w": 300.0,
                    "power_samples": 1, "energy_delta_j": None, "energy_samples": 0,
                })  # fmt: skip
            for i in range(TOKENS_PER_GPU):
                ts = T0_US + i * (MINUTES * 60_000_000 // TOKENS_PER_GPU)
                offset += 1
                tokens.append({
                    "_id": str(uuid.uuid4()), "gpu_key": key, "host": key.split("/")[0],
                    "ts_us": ts, **time_buckets(ts), "kafka_partition": partition,
                    "kafka_offset": offset, "model": f"model-{i % 3}", "tenant": None,
                    "input_tokens": 100, "output_tokens": 50, "tokens": 150,
                    "output_weight": 1.0, "cost_usd": 0.001, "price_per_hour_usd": 2.0,
                    "latency_bucket_ms": 100.0,
                })  # fmt: skip
    return {GPU_METRICS: gpus, TOKEN_USAGE: tokens}


@pytest.fixture(scope="module")
def app_store(mongo7: MongoServer) -> Iterator[MongoStore]:
    """The processor's store as the application user, on the init script's database, filled."""
    store = MongoStore(mongo7.app_url, mongo7.app_db)
    store.ensure_indexes()  # the init script made them: this must find them, not fail
    result = store.write(_docs())
    assert not result.rejected
    yield store
    store.close()
    root: MongoClient[Doc] = MongoClient(mongo7.root_url)
    for name in (GPU_METRICS, TOKEN_USAGE):
        root[mongo7.app_db][name].delete_many({})
    root.close()


def _explained(store: MongoStore, call: Callable[[], object]) -> list[tuple[Doc, list[Stage]]]:
    """Run ``call`` on a fresh client, then explain every query command it sent."""
    with captured_commands() as sent:
        call()
    assert sent, "the call sent no query"
    db = store.collection(GPU_METRICS).database
    return [(cmd, plan_stages(db.command(explain_command(cmd)))) for cmd in sent]


def _indexes(stages: list[Stage]) -> set[str]:
    return {s.index for s in stages if s.index is not None}


def _fresh_store(mongo7: MongoServer) -> MongoStore:
    # Listeners apply to clients created after registration: make the client inside the block.
    return MongoStore(mongo7.app_url, mongo7.app_db)


def test_rebuild_queries_walk_the_partition_index(
    app_store: MongoStore, mongo7: MongoServer
) -> None:
    stores: list[MongoStore] = []

    def rebuild() -> None:
        store = _fresh_store(mongo7)
        stores.append(store)
        history = store.partition_history(5, before_offset=10**9, retain_us=120_000_000)
        assert history.token_events
        assert history.latest_gpu_metrics

    plans = _explained(app_store, rebuild)
    for store in stores:
        store.close()
    kinds = {next(iter(cmd)) for cmd, _ in plans}
    assert kinds == {"distinct", "find"}, kinds
    for cmd, stages in plans:
        names = {s.stage for s in stages}
        assert "COLLSCAN" not in names, (cmd, stages)
        assert names & {"IXSCAN", "DISTINCT_SCAN"}, (cmd, stages)
        if next(iter(cmd)) == "distinct" or cmd.get("find") == GPU_METRICS:
            # partition prefix / (ts_us, _id) order: only partition_gpu_ts serves these
            # without a collection scan or an in-memory sort.
            assert _indexes(stages) == {"partition_gpu_ts"}, (cmd, stages)
            assert "SORT" not in names, (cmd, stages)
        else:
            # token_usage by (partition, gpu, ts): partition_gpu_ts, or gpu_key_ts whose
            # (gpu_key, ts_us) is as selective (a GPU lives on one partition). Either is a scan
            # of one GPU's window, which is what the rebuild needs.
            assert _indexes(stages) <= {"partition_gpu_ts", "gpu_key_ts"}, (cmd, stages)
            assert "SORT" not in names, (cmd, stages)


@pytest.mark.parametrize(
    ("name", "query", "index"),
    [
        ("gpu minutes", lambda s, m: s.gpu_minutes(m), "minute"),
        ("token minutes", lambda s, m: s.token_minutes(m), "minute"),
    ],
)
def test_rollup_aggregations_scan_the_minute_index(
    app_store: MongoStore,
    mongo7: MongoServer,
    name: str,
    query: Callable[[MongoStore, Doc], object],
    index: str,
) -> None:
    first = time_buckets(T0_US)["minute"] + 10
    match = {"minute": {"$gte": first, "$lte": first + 4}}  # as processor/api/costs.py builds it
    store = _fresh_store(mongo7)
    try:
        plans = _explained(app_store, lambda: query(store, match))
    finally:
        store.close()
    ((cmd, stages),) = plans
    assert cmd["aggregate"] in (GPU_METRICS, TOKEN_USAGE), name
    assert "COLLSCAN" not in {s.stage for s in stages}, stages
    assert index in _indexes(stages), stages


def test_latency_by_model_scans_the_model_minute_index(
    app_store: MongoStore, mongo7: MongoServer
) -> None:
    first = time_buckets(T0_US)["minute"] + 10
    match = {"minute": {"$gte": first, "$lte": first + 4}, "model": "model-1"}
    store = _fresh_store(mongo7)
    try:
        ((_, stages),) = _explained(
            app_store, lambda: store.latency_histogram(match, ["model"], "minute")
        )
    finally:
        store.close()
    assert "COLLSCAN" not in {s.stage for s in stages}, stages
    assert _indexes(stages), stages
    assert _indexes(stages) <= {"model_minute", "minute"}, stages


# --------------------------------------------------------------------------- the app user


def test_app_user_can_do_what_the_processor_does(app_store: MongoStore) -> None:
    app_store.ping()
    app_store.ensure_indexes()
    counts = app_store.counts()
    assert counts[TOKEN_USAGE] == PARTITIONS * GPUS_PER_PARTITION * TOKENS_PER_GPU
    assert app_store.latest_readings()
    assert app_store.partition_history(0, 10**9, 60_000_000).token_events
    # A duplicate is "already stored", not an error (insert of an existing _id).
    again = app_store.collection(TOKEN_USAGE).find_one({})
    assert again is not None
    result = app_store.write({TOKEN_USAGE: [again]})
    assert result.duplicates[TOKEN_USAGE] == 1
    assert not result.rejected


@pytest.fixture
def app_db(mongo7: MongoServer) -> Iterator[Database[Doc]]:
    client: MongoClient[Doc] = MongoClient(mongo7.app_url, serverSelectionTimeoutMS=10_000)
    yield client[mongo7.app_db]
    client.close()


DENIED: Final[list[tuple[str, Callable[[Database[Doc]], object]]]] = [
    ("update a stored event", lambda db: db[TOKEN_USAGE].update_one({}, {"$set": {"x": 1}})),
    ("delete a stored event", lambda db: db[TOKEN_USAGE].delete_one({})),
    ("drop a collection", lambda db: db.drop_collection(TOKEN_USAGE)),
    ("drop an index", lambda db: db[TOKEN_USAGE].drop_index("minute")),
    ("drop the database", lambda db: db.client.drop_database(db.name)),
    ("create a user", lambda db: db.command("createUser", "x", pwd="y", roles=[])),
    ("grant itself a role", lambda db: db.command("grantRolesToUser", "x", roles=["root"])),
    ("read another database", lambda db: db.client["admin"]["system.users"].find_one()),
    ("write another database", lambda db: db.client["other"]["c"].insert_one({"a": 1})),
    ("read server status", lambda db: db.client.admin.command("serverStatus")),
    ("shut the server down", lambda db: db.client.admin.command("shutdown")),
]


@pytest.mark.parametrize(("what", "action"), DENIED, ids=[d[0] for d in DENIED])
def test_app_user_can_do_nothing_more(
    app_store: MongoStore,
    app_db: Database[Doc],
    what: str,
    action: Callable[[Database[Doc]], object],
) -> None:
    with pytest.raises(OperationFailure) as denied:
        action(app_db)
    assert denied.value.code == UNAUTHORIZED, (what, denied.value.details)
