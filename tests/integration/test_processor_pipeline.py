"""The processor against the real broker and FerretDB: costs, duplicates, dead letters."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY
from pymongo import MongoClient
from pymongo.database import Database

from devtools.events import gpu_event, token_event
from processor.consumer import PipelineLoop
from processor.settings import ProcessorSettings
from processor.store import MongoStore
from tests.support.kafka_io import headers_of, produce_events, produce_raw, read_topic
from tests.support.processes import wait_for

pytestmark = pytest.mark.integration

A100 = "GPU-aaaaaaaa-0000-0000-0000-000000000001"
NOPRICE = "GPU-bbbbbbbb-0000-0000-0000-000000000002"
RTX = "GPU-cccccccc-0000-0000-0000-000000000003"


@pytest.fixture
def settings(
    kafka_bootstrap: str, mongo_url: str, topic: str, dlq_topic: str, group_id: str,
    mongo_db: Database[dict[str, Any]],
) -> ProcessorSettings:  # fmt: skip
    return ProcessorSettings(
        kafka_bootstrap=kafka_bootstrap,
        kafka_topic=topic,
        kafka_dlq_topic=dlq_topic,
        kafka_group_id=group_id,
        mongo_url=mongo_url,
        mongo_db=mongo_db.name,
        gpu_prices=json.dumps({"NVIDIA GeForce RTX 3090": 1.20}),
        consume_batch_size=100,
    )


@pytest.fixture
def loop(settings: ProcessorSettings) -> Iterator[PipelineLoop]:
    store = MongoStore(settings.mongo_url.get_secret_value(), settings.mongo_db)
    pipeline = PipelineLoop(settings, store)
    pipeline.start()
    yield pipeline
    pipeline.stop()
    store.close()


def count(db: Database[dict[str, Any]], collection: str) -> int:
    return db[collection].count_documents({})


def test_known_dataset_is_stored_with_hand_computed_costs(
    kafka_bootstrap: str, topic: str, mongo_db: Database[dict[str, Any]], loop: PipelineLoop
) -> None:
    events = [
        gpu_event("h1", A100, 0, price_per_hour_usd=3.60),  # 0.001 $/s
        token_event("h1", A100, 1, 5000, 750, event_id="00000000-0000-4000-8000-000000000001"),
        # DESIGN.md's worked example: 6,000 tokens in the 60 s up to e -> tps 100.
        token_event("h1", A100, 30, 200, 50, event_id="00000000-0000-4000-8000-000000000002"),
        # 61 s after e1 and 61 after e2's window start: only itself is in its window.
        token_event("h1", A100, 91, 60, 40, event_id="00000000-0000-4000-8000-000000000003"),
        # No gpu.metrics event at all: the default price 0.85 $/h.
        token_event("h1", NOPRICE, 5, 500, 100, event_id="00000000-0000-4000-8000-000000000004",
                    gpu_index=1),
        # A reading without a price: the price map by gpu_name (1.20 $/h).
        gpu_event("h1", RTX, 0, gpu_name="NVIDIA GeForce RTX 3090", gpu_index=2),
        token_event("h1", RTX, 10, 1000, 200, event_id="00000000-0000-4000-8000-000000000005",
                    gpu_index=2),
    ]  # fmt: skip
    produce_events(kafka_bootstrap, topic, events)
    wait_for("5 token docs", lambda: count(mongo_db, "token_usage") == 5, timeout_s=60)
    wait_for("2 gpu docs", lambda: count(mongo_db, "gpu_metrics") == 2, timeout_s=30)
    docs = {d["_id"][-1]: d for d in mongo_db["token_usage"].find()}

    # By hand, with the default output weight k = 4 (weighted = input + 4 x output):
    #   1: 5000 + 4x750 = 8000 weighted, alone in its window -> pays the whole 60 s: 0.06 $.
    #   2: 200 + 4x50 = 400; window holds 1 and 2 = 8400 weighted -> 140/s, so one input token
    #      costs 0.001/140 $ and e2 costs 400 x 0.001/140; plain tps = (5750 + 250) / 60 = 100.
    #   3: 60 + 4x40 = 220, alone (61 s after 2's window start) -> 0.06 $.
    #   4: 500 + 4x100 = 900 at 0.85 $/h, alone -> 0.85/60 $.   5: 1000 + 4x200, alone -> 1.2/60.
    expected = {
        # id: (tokens, tps, price, price_source, weighted tokens, cost_usd)
        "1": (5750, 5750 / 60, 3.60, "event", 8000, 0.06),
        "2": (250, 100.0, 3.60, "event", 400, 400 * 0.001 / 140),
        "3": (100, 100 / 60, 3.60, "event", 220, 0.06),
        "4": (600, 10.0, 0.85, "default", 900, 0.85 / 60),
        "5": (1200, 20.0, 1.20, "price_map", 1800, 1.20 / 60),
    }
    for key, (tokens, tps, price, source, weighted, cost) in expected.items():
        doc = docs[key]
        assert doc["tokens"] == tokens
        assert doc["tps"] == pytest.approx(tps, rel=1e-12)
        assert doc["price_per_hour_usd"] == price
        assert doc["price_source"] == source
        assert (doc["output_weight"], doc["weighted_tokens"]) == (4.0, weighted)
        assert doc["cost_usd"] == pytest.approx(cost, rel=1e-12)
        assert doc["cost_per_token"] == pytest.approx(cost / tokens, rel=1e-12)
        per_input = cost / weighted
        assert doc["input_cost_usd"] == pytest.approx(per_input * doc["input_tokens"], rel=1e-12)
        assert doc["output_cost_usd"] == pytest.approx(
            per_input * 4 * doc["output_tokens"], rel=1e-12
        )
        assert doc["minute"] == doc["ts_us"] // 60_000_000
    assert docs["2"]["weighted_tps"] == pytest.approx(140.0, rel=1e-12)
    assert docs["2"]["cost_per_input_token"] == pytest.approx(0.001 / 140, rel=1e-12)
    assert docs["2"]["cost_per_output_token"] == pytest.approx(0.004 / 140, rel=1e-12)
    readings = {d["gpu_uuid"]: d for d in mongo_db["gpu_metrics"].find()}
    assert readings[A100]["price_per_hour_usd"] == 3.60
    assert readings[RTX]["price_source"] == "price_map"


def _sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_the_same_event_sent_twice_is_stored_once(
    kafka_bootstrap: str, topic: str, mongo_db: Database[dict[str, Any]], loop: PipelineLoop
) -> None:
    first = token_event("h2", A100, 0, 10, 10)
    dup_before = _sample("pipeline_events_duplicate_total", {"collection": "token_usage"})
    # Twice in one batch, then once more in a later batch.
    produce_events(kafka_bootstrap, topic, [first, first, token_event("h2", A100, 1, 1, 1)])
    wait_for("2 token docs", lambda: count(mongo_db, "token_usage") == 2)
    produce_events(kafka_bootstrap, topic, [first, token_event("h2", A100, 2, 1, 1)])
    wait_for("3 token docs", lambda: count(mongo_db, "token_usage") == 3)
    wait_for(
        "both duplicates counted",
        lambda: (
            _sample("pipeline_events_duplicate_total", {"collection": "token_usage"})
            >= dup_before + 2
        ),
    )
    assert mongo_db["token_usage"].count_documents({"_id": first["event_id"]}) == 1
    stored = mongo_db["token_usage"].find_one({"_id": first["event_id"]})
    assert stored is not None
    assert stored["tps"] == pytest.approx(20 / 60)  # the first copy's window, not the replay's


def test_bad_messages_go_to_the_dead_letter_topic_and_the_rest_is_stored(
    kafka_bootstrap: str,
    topic: str,
    dlq_topic: str,
    settings: ProcessorSettings,
    mongo_db: Database[dict[str, Any]],
    loop: PipelineLoop,
) -> None:
    key = f"h3/{A100}"
    good = [token_event("h3", A100, i, 5, 5) for i in range(4)]
    bad_schema = token_event("h3", A100, 9, -5, 5)
    unknown = {**token_event("h3", A100, 9, 5, 5), "schema": "token.usage.v9"}
    oversize = token_event("h3", A100, 9, 5, 5, model="m" * (settings.max_message_bytes + 10))
    records: list[tuple[str | None, bytes | None]] = [
        (key, orjson.dumps(good[0])),
        (key, b'{"schema": "token.usage.v1", "event_id": '),  # malformed JSON
        (key, orjson.dumps(good[1])),
        (key, orjson.dumps(bad_schema)),
        (key, orjson.dumps(unknown)),
        (key, orjson.dumps(good[2])),
        (key, orjson.dumps(oversize)),
        (key, None),  # a tombstone: null value
        (key, orjson.dumps(good[3])),
    ]
    produce_raw(kafka_bootstrap, topic, records)
    wait_for("4 good docs", lambda: count(mongo_db, "token_usage") == 4)
    letters = read_topic(kafka_bootstrap, dlq_topic, expected=5, timeout_s=30)
    assert len(letters) == 5
    reasons = sorted(headers_of(m)["dlq.reason"] for m in letters)
    assert any("malformed JSON" in r for r in reasons), reasons
    assert any("input_tokens" in r and "minimum" in r for r in reasons), reasons
    assert any("unknown schema 'token.usage.v9'" in r for r in reasons), reasons
    assert any("exceeds" in r for r in reasons), reasons
    assert any("null value" in r for r in reasons), reasons
    for letter in letters:
        h = headers_of(letter)
        assert h["dlq.source.topic"] == topic
        assert int(h["dlq.source.offset"]) in {1, 3, 4, 6, 7}
        assert h["dlq.source.partition"].isdigit()
    by_offset = {int(headers_of(m)["dlq.source.offset"]): m for m in letters}
    assert by_offset[3].value() == orjson.dumps(bad_schema)  # the original bytes, untouched
    assert {d["_id"] for d in mongo_db["token_usage"].find()} == {e["event_id"] for e in good}


def test_poison_timestamps_and_wrong_keys_are_dead_lettered_and_consumption_goes_on(
    kafka_bootstrap: str,
    topic: str,
    dlq_topic: str,
    mongo_db: Database[dict[str, Any]],
    loop: PipelineLoop,
) -> None:
    key = f"h4/{A100}"
    good = [token_event("h4", A100, i, 5, 5) for i in range(6)]
    # Both pass the schema's date-time format; converting them to UTC overflows.
    far_future = {**token_event("h4", A100, 9, 5, 5), "ts": "9999-12-31T23:59:59-01:00"}
    far_past = {**gpu_event("h4", A100, 9), "ts": "0001-01-01T00:00:00+01:00"}
    before_epoch = {**token_event("h4", A100, 9, 5, 5), "ts": "1969-12-31T23:59:59Z"}
    records: list[tuple[str | None, bytes | None]] = [
        (key, orjson.dumps(good[0])),
        (key, orjson.dumps(far_future)),
        (key, orjson.dumps(good[1])),
        (key, orjson.dumps(far_past)),
        (key, orjson.dumps(before_epoch)),
        (key, orjson.dumps(good[2])),
        (None, orjson.dumps(token_event("h4", A100, 9, 5, 5))),  # null key
        ("", orjson.dumps(token_event("h4", A100, 9, 5, 5))),  # empty key
        ("k" * 5000, orjson.dumps(token_event("h4", A100, 9, 5, 5))),
        (f"h4/{RTX}", orjson.dumps(token_event("h4", A100, 9, 5, 5))),  # another GPU's key
        (key, orjson.dumps(good[3])),
    ]
    produce_raw(kafka_bootstrap, topic, records)
    wait_for("4 good docs", lambda: count(mongo_db, "token_usage") == 4)
    letters = read_topic(kafka_bootstrap, dlq_topic, expected=7, timeout_s=30)
    # Keyed differently, the letters come from several partitions: find each by its bytes.
    index_of = {value: i for i, (_key, value) in enumerate(records)}
    reasons = {index_of[m.value()]: headers_of(m)["dlq.reason"] for m in letters}
    assert sorted(reasons) == [1, 3, 4, 6, 7, 8, 9]
    assert "cannot be converted to UTC" in reasons[1]
    assert "cannot be converted to UTC" in reasons[3]
    assert "outside the accepted range" in reasons[4]
    assert reasons[6].startswith("key null is not the event's host/gpu_uuid")
    assert reasons[7].startswith("key b'' is not")
    assert "... (5000 bytes)" in reasons[8]
    assert reasons[9].startswith(f"key b'h4/{RTX}' is not the event's host/gpu_uuid 'h4/{A100}'")
    assert {headers_of(m)["dlq.schema"] for m in letters} == {"token.usage.v1", "gpu.metrics.v1"}

    # The loop is alive and keeps consuming: later events are stored too.
    status = loop.status()
    assert status.running, status
    assert status.degraded is None, status
    produce_raw(kafka_bootstrap, topic, [(key, orjson.dumps(e)) for e in good[4:]])
    wait_for("6 good docs", lambda: count(mongo_db, "token_usage") == 6)
    assert {d["_id"] for d in mongo_db["token_usage"].find()} == {e["event_id"] for e in good}
    assert loop.status().running


def test_a_reading_may_share_its_event_id_with_a_token_event_whatever_the_batching(
    kafka_bootstrap: str, topic: str, mongo_db: Database[dict[str, Any]], loop: PipelineLoop
) -> None:
    shared = "00000000-0000-4000-8000-0000000000aa"
    token = token_event("h5", A100, 1, 10, 10, event_id=shared)
    reading = {**gpu_event("h5", A100, 2), "event_id": shared}
    # Same key, one produce call: one partition, and (batch size 100) one batch.
    produce_events(kafka_bootstrap, topic, [token, reading])
    wait_for("the token event", lambda: count(mongo_db, "token_usage") == 1)
    wait_for("the reading", lambda: count(mongo_db, "gpu_metrics") == 1)
    assert mongo_db["token_usage"].find_one({"_id": shared}) is not None
    assert mongo_db["gpu_metrics"].find_one({"_id": shared}) is not None


def test_a_redelivered_reading_prices_later_tokens_the_same_live_and_after_a_restart(
    kafka_bootstrap: str,
    topic: str,
    settings: ProcessorSettings,
    mongo_client: MongoClient[dict[str, Any]],
    mongo_db: Database[dict[str, Any]],
) -> None:
    """Readings A (1.0 $/h), tokens, B (2.0 $/h), tokens, A again (same bytes), tokens."""
    reading_a = gpu_event("h6", A100, 0, price_per_hour_usd=1.0)
    first = [
        reading_a,
        token_event("h6", A100, 1, 30, 30),
        gpu_event("h6", A100, 2, price_per_hour_usd=2.0),
        token_event("h6", A100, 3, 30, 30),
        dict(reading_a),
    ]
    last = token_event("h6", A100, 4, 30, 30)
    produce_events(kafka_bootstrap, topic, first)
    dups = "pipeline_events_duplicate_total"
    dups_before = _sample(dups, {"collection": "gpu_metrics"})

    # Restarted: one replica takes the first five, stops (commits), a new one takes the last.
    store = MongoStore(settings.mongo_url.get_secret_value(), settings.mongo_db)
    try:
        before_restart = PipelineLoop(settings, store)
        before_restart.start()
        wait_for("A's redelivery seen", lambda: _sample(dups, {"collection": "gpu_metrics"})
                 >= dups_before + 1)  # fmt: skip
        before_restart.stop()
        produce_events(kafka_bootstrap, topic, [last])
        after_restart = PipelineLoop(settings, store)
        after_restart.start()
        wait_for("3 token docs", lambda: count(mongo_db, "token_usage") == 3)
        after_restart.stop()
    finally:
        store.close()

    # Straight through: the whole log, from the start, into another database.
    straight_db = mongo_client[f"{mongo_db.name}-straight"]
    straight = settings.model_copy(update={"kafka_group_id": f"{settings.kafka_group_id}-2",
                                           "mongo_db": straight_db.name})  # fmt: skip
    store = MongoStore(straight.mongo_url.get_secret_value(), straight.mongo_db)
    try:
        through = PipelineLoop(straight, store)
        through.start()
        wait_for("3 token docs", lambda: count(straight_db, "token_usage") == 3)
        through.stop()
        uninterrupted = straight_db["token_usage"].find_one({"_id": last["event_id"]})
    finally:
        store.close()
        mongo_client.drop_database(straight_db.name)

    restarted = mongo_db["token_usage"].find_one({"_id": last["event_id"]})
    assert restarted is not None
    assert uninterrupted is not None
    # B is the latest reading; A's redelivery must not bring 1.0 $/h back.
    assert restarted["price_per_hour_usd"] == 2.0
    assert uninterrupted["price_per_hour_usd"] == 2.0
    for name in ("tps", "price_source", "cost_per_token", "cost_usd"):
        assert restarted[name] == uninterrupted[name], name
