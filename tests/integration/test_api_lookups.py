"""Lookups of one event and one request, served by the real app on the real Kafka + FerretDB."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pymongo.database import Database

from devtools.events import gpu_event, token_event
from processor.api.problems import INVALID_PARAMETERS, PROBLEM_MEDIA_TYPE
from processor.app import create_app
from processor.settings import ProcessorSettings
from tests.integration.api_support import KnownReader
from tests.support.kafka_io import produce_events
from tests.support.processes import wait_for

pytestmark = pytest.mark.integration

GPU_A = "GPU-aaaaaaaa-0000-0000-0000-00000000000a"
GPU_B = "GPU-bbbbbbbb-0000-0000-0000-00000000000b"


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


@pytest.fixture
def tp_request(
    client: TestClient, kafka_bootstrap: str, topic: str, mongo_db: Database[dict[str, Any]]
) -> dict[str, Any]:
    """A tensor-parallel request on two GPUs (3.60, 1.80 $/h), split as producers/fleet.py does."""
    events = {
        "reading_a": gpu_event("lk-host", GPU_A, 0, price_per_hour_usd=3.60),
        "reading_b": gpu_event("lk-host", GPU_B, 0, price_per_hour_usd=1.80, gpu_index=1),
        "a": token_event("lk-host", GPU_A, 10, 1000, 500, model="m70", tenant="team-a"),
        "b": token_event(
            "lk-host", GPU_B, 10, 1000, 500, model="m70", tenant="team-a", gpu_index=1
        ),
        "other": token_event("lk-host", GPU_A, 20, 10, 10, model="m70"),
    }
    for name in ("a", "b"):
        events[name]["request_id"] = "req-tp-1"
    produce_events(kafka_bootstrap, topic, list(events.values()))
    wait_for("5 documents", lambda: sum(
        mongo_db[c].count_documents({}) for c in ("gpu_metrics", "token_usage")) == 5)  # fmt: skip
    return events


def test_a_token_events_cost_breakdown_by_hand(
    client: TestClient, tp_request: dict[str, Any]
) -> None:
    event = tp_request["a"]
    response = client.get(f"/api/v1/events/{event['event_id']}")
    assert response.status_code == 200, response.text
    body = response.json()
    # By hand, k = 4 (the default): 1,000 + 4 x 500 = 3,000 weighted tokens, alone in the
    # 60 s window: 50 weighted tokens/s. 3.60 $/h = 0.001 $/s, so one input token costs
    # 0.001 / 50 = 2e-5 $, one output token 8e-5 $: input 0.02 $, output 0.04 $.
    assert body["schema"] == "token.usage.v1"
    assert body["event_id"] == event["event_id"]
    assert (body["gpu"], body["model"], body["tenant"]) == (f"lk-host/{GPU_A}", "m70", "team-a")
    assert (body["price_per_hour_usd"], body["price_source"]) == (3.6, "event")
    assert body["tps"] == pytest.approx(1500 / 60)
    assert body["weighted_tps"] == pytest.approx(50.0)
    assert body["weighted_tokens"] == 3000
    assert body["cost_per_input_token"] == pytest.approx(2e-5)
    assert body["cost_per_output_token"] == pytest.approx(8e-5)
    assert body["input_cost_usd"] == pytest.approx(0.02)
    assert body["output_cost_usd"] == pytest.approx(0.04)
    assert body["cost_usd"] == pytest.approx(0.06)
    assert body["ts"] == "2026-11-23T10:00:10+00:00"
    assert body["request_id"] == "req-tp-1"
    assert isinstance(body["kafka_partition"], int)
    assert body["kafka_offset"] >= 0


def test_an_event_without_tenant_shows_it_unattributed(
    client: TestClient, tp_request: dict[str, Any]
) -> None:
    body = client.get(f"/api/v1/events/{tp_request['other']['event_id']}").json()
    assert body["tenant"] is None
    assert "request_id" not in body


def test_a_gpu_reading_by_its_event_id(client: TestClient, tp_request: dict[str, Any]) -> None:
    event = tp_request["reading_b"]
    response = client.get(f"/api/v1/events/{event['event_id']}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["schema"] == "gpu.metrics.v1"
    assert body["gpu"] == f"lk-host/{GPU_B}"
    assert body["reading"]["event_id"] == event["event_id"]
    assert body["reading"]["price_per_hour_usd"] == 1.8
    assert body["reading"]["price_source"] == "event"
    assert body["kafka_offset"] >= 0


def test_a_tensor_parallel_request_is_every_gpus_document_and_their_sum(
    client: TestClient, tp_request: dict[str, Any]
) -> None:
    response = client.get("/api/v1/requests/req-tp-1")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["request_id"] == "req-tp-1"
    assert [e["gpu"] for e in body["events"]] == [f"lk-host/{GPU_A}", f"lk-host/{GPU_B}"]
    # GPU B costs half as much (1.80 $/h) for the same share: 0.01 $ input, 0.02 $ output.
    assert [e["cost_usd"] for e in body["events"]] == [pytest.approx(0.06), pytest.approx(0.03)]
    totals = body["totals"]
    assert totals["gpus"] == 2
    assert (totals["tokens"], totals["input_tokens"], totals["output_tokens"]) == (3000, 2000, 1000)
    assert totals["weighted_tokens"] == 6000
    assert totals["input_cost_usd"] == pytest.approx(0.03)
    assert totals["output_cost_usd"] == pytest.approx(0.06)
    assert totals["cost_usd"] == pytest.approx(0.09)


def _problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


def test_unknown_ids_are_404_problems(client: TestClient, tp_request: dict[str, Any]) -> None:
    absent = "00000000-0000-4000-8000-000000000000"
    body = _problem(client.get(f"/api/v1/events/{absent}"), 404)
    assert absent in body["detail"]
    body = _problem(client.get("/api/v1/requests/req-nope"), 404)
    assert "req-nope" in body["detail"]


@pytest.mark.parametrize("bad", ["not-a-uuid", "3f2b8c1e5a4d4e7f9c210a7b3c4d5e6f0", "x" * 40])
def test_malformed_event_ids_are_422(client: TestClient, bad: str) -> None:
    body = _problem(client.get(f"/api/v1/events/{bad}"), 422)
    assert body["type"] == INVALID_PARAMETERS
    (param,) = body["invalid_params"]
    assert (param["location"], param["name"]) == ("path", "event_id")


def test_a_request_id_beyond_the_contracts_bound_is_422(client: TestClient) -> None:
    body = _problem(client.get("/api/v1/requests/" + "r" * 257), 422)
    assert body["invalid_params"][0]["name"] == "request_id"


def test_the_request_id_index_exists(
    client: TestClient, tp_request: dict[str, Any], mongo_db: Database[dict[str, Any]]
) -> None:
    names = {i["name"] for i in mongo_db["token_usage"].list_indexes()}
    assert "request_id" in names
