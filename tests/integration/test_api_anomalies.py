"""GPU anomaly flags end to end: stored on the reading, counted in /metrics, listed by the API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from pymongo.database import Database

from devtools.events import gpu_event, ts
from processor.anomalies import RULES
from processor.app import create_app
from processor.settings import ProcessorSettings
from tests.integration.api_support import KnownReader
from tests.support.kafka_io import produce_events
from tests.support.processes import wait_for

pytestmark = pytest.mark.integration

GPU = "GPU-eeeeeeee-0000-0000-0000-00000000000e"
CALM = "GPU-ffffffff-0000-0000-0000-00000000000f"
RANGE = {"start": ts(0), "end": ts(3600)}


def reading(gpu: str, at_s: float, host: str = "an-host", **values: Any) -> dict[str, Any]:
    event = gpu_event(host, gpu, at_s, price_per_hour_usd=2.0)
    event.update(temperature_gpu_c=60.0, clock_sm_mhz=1410.0, power_draw_w=300.0,
                 utilization_gpu_pct=80.0, power_limit_w=400.0, unsupported_fields=[])  # fmt: skip
    event.update(values)
    return event


@pytest.fixture
def client(
    kafka_bootstrap: str, mongo_url: str, topic: str, dlq_topic: str, group_id: str,
    mongo_db: Database[dict[str, Any]],
) -> Iterator[TestClient]:  # fmt: skip
    settings = ProcessorSettings(
        kafka_bootstrap=kafka_bootstrap, kafka_topic=topic, kafka_dlq_topic=dlq_topic,
        kafka_group_id=group_id, mongo_url=mongo_url, mongo_db=mongo_db.name,
    )  # fmt: skip
    with TestClient(create_app(settings, gpu_reader=KnownReader([]))) as test_client:
        yield test_client


def count(rule: str) -> float:
    return REGISTRY.get_sample_value("pipeline_gpu_anomalies_total", {"rule": rule}) or 0.0


def test_flags_are_stored_counted_and_listed(
    client: TestClient, kafka_bootstrap: str, topic: str, mongo_db: Database[dict[str, Any]]
) -> None:
    before = {rule: count(rule) for rule in RULES}
    # Twelve calm readings (every field constant: MAD 0, so each field's floor / T is the
    # scale), then a hot one and one at the power cap with its clock down. By hand, defaults
    # (T = 5, floors 5 °C and 50 W, 10 readings before a verdict):
    # - 95 °C: 35 from the median 60, scale 5 / 5 = 1: score 35 -> temperature_outlier;
    # - 396 W >= 0.98 x 400 with 1000 MHz < 0.85 x 1410: power_throttle, score 1 - 1000/1410;
    #   396 W is 96 from 300, scale 50 / 5 = 10: score 9.6 -> power_outlier too.
    events = [reading(GPU, 2 * i) for i in range(12)]
    hot = reading(GPU, 24, temperature_gpu_c=95.0)
    capped = reading(GPU, 26, power_draw_w=396.0, clock_sm_mhz=1000.0)
    calm = [reading(CALM, 2 * i, host="calm-host") for i in range(14)]
    produce_events(kafka_bootstrap, topic, [*events, hot, capped, *calm, dict(hot)])
    wait_for("28 readings", lambda: mongo_db["gpu_metrics"].count_documents({}) == 28)

    stored = mongo_db["gpu_metrics"].find_one({"_id": hot["event_id"]})
    assert stored is not None
    assert stored["anomalies"] == [{"rule": "temperature_outlier", "field": "temperature_gpu_c",
                                    "value": 95.0, "median": 60.0, "score": 35.0}]  # fmt: skip
    assert stored["anomaly_count"] == 1
    assert mongo_db["gpu_metrics"].count_documents({"anomalies": []}) == 26

    response = client.get("/api/v1/anomalies", params=RANGE)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] == 2
    assert body["truncated"] is False
    first, second = body["anomalies"]
    assert (first["event_id"], first["host"], first["gpu_uuid"]) == (hot["event_id"], "an-host",
                                                                     GPU)  # fmt: skip
    assert first["ts"] == "2026-11-23T10:00:24+00:00"
    assert [f["rule"] for f in first["flags"]] == ["temperature_outlier"]
    assert second["event_id"] == capped["event_id"]
    rules = {f["rule"]: f for f in second["flags"]}
    assert set(rules) == {"power_outlier", "power_throttle"}
    assert rules["power_outlier"]["score"] == pytest.approx(9.6)
    assert rules["power_throttle"]["value"] == 1000.0
    assert rules["power_throttle"]["median"] == 1410.0
    assert rules["power_throttle"]["score"] == pytest.approx(1 - 1000 / 1410)

    # Filters, a window and a limit.
    assert client.get("/api/v1/anomalies", params={**RANGE, "host": "calm-host"}).json()[
        "count"] == 0  # fmt: skip
    only = client.get("/api/v1/anomalies", params={**RANGE, "gpu_uuid": GPU, "limit": 1}).json()
    assert (only["count"], only["truncated"]) == (1, True)
    assert client.get("/api/v1/anomalies", params={"window": "24h"}).json()["count"] == 0
    bad = client.get("/api/v1/anomalies", params={"window": "24h", "start": ts(0)})
    assert bad.status_code == 422
    assert bad.json()["invalid_params"][0]["name"] == "window"

    # Counted once per stored flag: the redelivered hot reading is not counted again.
    wait_for("the counters", lambda: count("power_throttle") == before["power_throttle"] + 1)
    assert {rule: count(rule) - before[rule] for rule in RULES} == {
        "temperature_outlier": 1, "power_outlier": 1, "utilization_outlier": 0,
        "power_throttle": 1, "thermal_throttle": 0,
    }  # fmt: skip
    text = client.get("/metrics").text
    for rule in RULES:
        assert f'pipeline_gpu_anomalies_total{{rule="{rule}"}}' in text

    # The reading's own view carries its flags too.
    one = client.get(f"/api/v1/events/{hot['event_id']}").json()
    assert one["reading"]["anomalies"][0]["rule"] == "temperature_outlier"
