"""The HTTP API served by the real app (lifespan, consume loop) on the real Kafka + FerretDB."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from pymongo.database import Database

from devtools.events import gpu_event, token_event, ts
from processor.api.problems import INVALID_PARAMETERS, PROBLEM_MEDIA_TYPE
from processor.app import create_app
from processor.settings import ProcessorSettings
from tests.integration.api_support import KnownReader
from tests.support.kafka_io import produce_events
from tests.support.processes import wait_for

pytestmark = pytest.mark.integration

GPU = "GPU-dddddddd-0000-0000-0000-000000000004"
RANGE = {"start": ts(0), "end": ts(7200)}


@pytest.fixture
def settings(
    kafka_bootstrap: str, mongo_url: str, topic: str, dlq_topic: str, group_id: str,
    mongo_db: Database[dict[str, Any]],
) -> ProcessorSettings:  # fmt: skip
    return ProcessorSettings(
        kafka_bootstrap=kafka_bootstrap, kafka_topic=topic, kafka_dlq_topic=dlq_topic,
        kafka_group_id=group_id, mongo_url=mongo_url, mongo_db=mongo_db.name,
    )  # fmt: skip


@pytest.fixture
def local_gpus() -> KnownReader:
    """What /gpu/info reads locally: two known GPUs, whatever this host has (NVML or not)."""
    return KnownReader(
        [
            gpu_event("api-local", "GPU-local-0", 0, price_per_hour_usd=2.0),
            gpu_event("api-local", "GPU-local-1", 0, gpu_index=1, gpu_name="NVIDIA L4"),
        ],
        source="nvml",
    )


@pytest.fixture
def client(settings: ProcessorSettings, local_gpus: KnownReader) -> Iterator[TestClient]:
    with TestClient(create_app(settings, gpu_reader=local_gpus)) as test_client:
        yield test_client


def assert_problem(response: Any, status: int, path: str) -> dict[str, Any]:
    """``response`` is an RFC 9457 problem with ``status`` about ``path``; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["instance"] == path
    assert body["title"]
    assert body["detail"]
    assert set(body) <= {"type", "title", "status", "detail", "instance", "invalid_params"}
    return body


@pytest.fixture
def loaded(
    client: TestClient, kafka_bootstrap: str, topic: str, mongo_db: Database[dict[str, Any]]
) -> TestClient:
    """One GPU at 3.60 $/h: minute 0 serves two models, minute 1 only reports (idle)."""
    events = [
        gpu_event("api-host", GPU, 0, price_per_hour_usd=3.60),
        gpu_event("api-host", GPU, 30, price_per_hour_usd=3.60),
        token_event("api-host", GPU, 10, 2000, 1000, model="m1", latency_ms=100, tenant="team-a"),
        token_event("api-host", GPU, 20, 500, 500, model="m2", latency_ms=1000),
        gpu_event("api-host", GPU, 61, price_per_hour_usd=3.60),
    ]
    produce_events(kafka_bootstrap, topic, events)
    wait_for(
        "5 documents",
        lambda: sum(mongo_db[c].count_documents({}) for c in ("gpu_metrics", "token_usage")) == 5,
    )
    return client


def test_health_is_ok_with_every_check_named(client: TestClient) -> None:
    body = wait_for(
        "health ok with 12 partitions",
        lambda: (
            (r := client.get("/health")).status_code == 200
            and len(r.json()["consumer"]["assigned_partitions"]) == 12
            and r.json()
        ),
        timeout_s=60,
    )
    assert body["status"] == "ok"
    assert body["failing"] == []
    assert body["kafka"]["ok"]
    assert "12 partitions" in body["kafka"]["detail"]
    assert body["mongodb"]["ok"]
    assert body["consumer"]["ok"]
    assert body["consumer"]["assigned_partitions"] == list(range(12))


def test_gpu_info_names_the_local_source_and_the_stream(
    loaded: TestClient, local_gpus: KnownReader
) -> None:
    body = loaded.get("/gpu/info").json()
    # The injected reader's events, unchanged: optional fields it left out stay out.
    assert body["local"] == {
        "source": "nvml", "skipped": {}, "gpus": local_gpus.events, "error": None,
    }  # fmt: skip
    latest = [r for r in body["stream"] if r["gpu_uuid"] == GPU]
    assert len(latest) == 1
    assert latest[0]["ts"] == "2026-11-23T10:01:01+00:00"  # the newest of three readings
    assert latest[0]["gpu_key"] == f"api-host/{GPU}"
    assert latest[0]["price_per_hour_usd"] == 3.60
    assert latest[0]["price_source"] == "event"


def test_gpu_info_says_why_no_local_gpu_could_be_read(
    client: TestClient, local_gpus: KnownReader
) -> None:
    local_gpus.fail({"nvml": "library not found", "nvidia-smi": "not on PATH"})
    response = client.get("/gpu/info")
    assert response.status_code == 200, response.text
    local = response.json()["local"]
    assert local["source"] is None
    assert local["gpus"] == []
    assert local["skipped"] == {"nvml": "library not found", "nvidia-smi": "not on PATH"}
    assert "nvml: library not found" in local["error"]


def test_costs_by_model_split_allocation_by_weighted_tokens(loaded: TestClient) -> None:
    response = loaded.get("/api/v1/costs", params={**RANGE, "group_by": "model"})
    assert response.status_code == 200, response.text
    rows = {r["group"]: r for r in response.json()["rows"]}
    # By hand, k = 4: minute 0 costs 3.60 / 60 = 0.06 $; m1 weighs 2,000 + 4 x 1,000 = 6,000,
    # m2 500 + 4 x 500 = 2,500, of 8,500 weighted tokens.
    m1, m2 = rows["m1"], rows["m2"]
    assert (m1["tokens"], m1["input_tokens"], m1["output_tokens"]) == (3000, 2000, 1000)
    assert m1["model"] == "m1"
    assert m1["cost_usd"] == pytest.approx(0.06 * 6000 / 8500)
    assert m1["input_cost_usd"] == pytest.approx(0.06 * 2000 / 8500)
    assert m1["output_cost_usd"] == pytest.approx(0.06 * 4000 / 8500)
    assert m1["cost_per_1m_tokens"] == pytest.approx(0.06 * 6000 / 8500 / 3000 * 1e6)
    # One input token: 0.06 / 8,500 $; one output token four times that.
    assert m1["cost_per_1m_input_tokens"] == pytest.approx(0.06 / 8500 * 1e6)
    assert m1["cost_per_1m_output_tokens"] == pytest.approx(4 * 0.06 / 8500 * 1e6)
    assert m2["cost_usd"] == pytest.approx(0.06 * 2500 / 8500)
    assert m1["p95_latency_ms"] == pytest.approx(100, rel=0.05)
    assert m2["p95_latency_ms"] == pytest.approx(1000, rel=0.05)
    # Minute 1 reported but served nothing: idle.
    assert rows["(idle)"]["idle_cost_usd"] == pytest.approx(0.06)
    totals = response.json()["totals"]
    assert totals["tokens"] == 4000
    assert totals["cost_usd"] == pytest.approx(0.12)
    assert totals["idle_cost_usd"] == pytest.approx(0.06)
    assert totals["idle_share"] == pytest.approx(0.5)
    assert totals["cost_per_1m_tokens"] == pytest.approx(0.12 / 4000 * 1e6)


def test_costs_by_tenant_and_by_tenant_and_model(loaded: TestClient) -> None:
    by_tenant = loaded.get("/api/v1/costs", params={**RANGE, "group_by": "tenant"}).json()
    rows = {r["group"]: r for r in by_tenant["rows"]}
    assert set(rows) == {"team-a", "(unattributed)", "(idle)"}
    assert rows["team-a"]["tenant"] == "team-a"
    assert rows["team-a"]["cost_usd"] == pytest.approx(0.06 * 6000 / 8500)
    assert rows["(unattributed)"]["cost_usd"] == pytest.approx(0.06 * 2500 / 8500)
    assert rows["(idle)"]["idle_cost_usd"] == pytest.approx(0.06)
    assert rows["team-a"]["p95_latency_ms"] == pytest.approx(100, rel=0.05)

    combo = loaded.get("/api/v1/costs", params={**RANGE, "group_by": "tenant,model"}).json()
    assert combo["group_by"] == ["tenant", "model"]
    pairs = {(r["tenant"], r["model"]): r for r in combo["rows"]}
    assert set(pairs) == {("team-a", "m1"), ("(unattributed)", "m2"), ("(idle)", "(idle)")}
    assert pairs[("team-a", "m1")]["group"] == "team-a / m1"
    assert pairs[("(unattributed)", "m2")]["p95_latency_ms"] == pytest.approx(1000, rel=0.05)

    only = loaded.get("/api/v1/costs", params={**RANGE, "group_by": "model", "tenant": "team-a"})
    assert [r["group"] for r in only.json()["rows"]] == ["m1"]


def test_costs_as_csv_have_the_json_rows(loaded: TestClient) -> None:
    params = {**RANGE, "group_by": "tenant,model", "granularity": "day"}
    as_json = loaded.get("/api/v1/costs", params=params).json()
    for response in (
        loaded.get("/api/v1/costs", params={**params, "format": "csv"}),
        loaded.get("/api/v1/costs", params=params, headers={"Accept": "text/csv"}),
    ):
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/csv")
        assert "attachment" in response.headers["content-disposition"]
        lines = list(csv.DictReader(io.StringIO(response.text)))
        assert [(r["tenant"], r["model"]) for r in lines] == [
            (r["tenant"], r["model"]) for r in as_json["rows"]
        ]
        for line, row in zip(lines, as_json["rows"], strict=True):
            assert float(line["cost_usd"]) == row["cost_usd"]  # full precision
            assert int(line["tokens"]) == row["tokens"]
    chosen = loaded.get(
        "/api/v1/costs", params={**params, "format": "csv", "fields": "model,cost_per_1m_tokens"}
    )
    assert chosen.text.splitlines()[0] == "model,cost_per_1m_tokens"


def test_costs_by_gpu_and_host(loaded: TestClient) -> None:
    by_gpu = loaded.get("/api/v1/costs", params={**RANGE, "group_by": "gpu", "granularity": "day"})
    (row,) = by_gpu.json()["rows"]
    assert row["group"] == f"api-host/{GPU}"
    assert row["gpu"] == f"api-host/{GPU}"
    assert row["tokens"] == 4000
    # Per GPU the whole allocation counts, idle included: 0.06 busy + 0.06 idle.
    assert row["cost_usd"] == pytest.approx(0.12)
    assert row["idle_cost_usd"] == pytest.approx(0.06)
    assert row["input_cost_usd"] + row["output_cost_usd"] == pytest.approx(0.06)
    assert row["cost_per_1m_tokens"] == pytest.approx(30.0)
    by_host = loaded.get("/api/v1/costs", params={**RANGE, "group_by": "host", "host": "api-host"})
    assert [r["group"] for r in by_host.json()["rows"]] == ["api-host"]


@pytest.mark.parametrize(
    ("params", "name", "reason"),
    [
        # Refused while parsing (FastAPI) ...
        ({"group_by": "colour"}, "group_by", "pattern"),
        ({"group_by": "model,model"}, "group_by", "given twice"),
        ({"format": "xml"}, "format", "'json' or 'csv'"),
        ({"format": "csv", "fields": "model,colour"}, "fields", "unknown CSV field"),
        ({"granularity": "week"}, "granularity", "'minute', 'hour', 'day' or 'all'"),
        ({"start": "yesterday"}, "start", "RFC 3339"),
        ({"start": "1700000000"}, "start", "RFC 3339"),  # seconds since the epoch: not RFC 3339
        ({"end": "2026-11-23"}, "end", "RFC 3339"),
        ({"host": ""}, "host", "at least 1 character"),
        ({"host": "a/b"}, "host", "pattern"),
        ({"window": "week"}, "window", "'today', 'yesterday', '24h', '7d' or 'month'"),
        # ... and by the route: the same shape.
        ({"start": ts(60), "end": ts(0)}, "start", "must be before end"),
        ({"start": ts(0), "end": ts(8 * 86400), "granularity": "minute"}, "start",
         "range too long"),
        ({"window": "24h", "start": ts(0)}, "window", "cannot be combined with start"),
        ({"window": "7d", "end": ts(0)}, "window", "cannot be combined with end"),
    ],
)  # fmt: skip
def test_bad_query_parameters_get_a_problem_naming_each(
    client: TestClient, params: dict[str, str], name: str, reason: str
) -> None:
    body = assert_problem(client.get("/api/v1/costs", params=params), 422, "/api/v1/costs")
    assert body["type"] == INVALID_PARAMETERS
    (param,) = body["invalid_params"]
    assert param["location"] == "query"
    assert param["name"] == name
    assert reason in param["reason"]
    assert reason in body["detail"]


def test_every_bad_parameter_is_listed(client: TestClient) -> None:
    path = f"/api/v1/gpus/bad host/{GPU}/metrics"
    response = client.get(path, params={"limit": 0, "start": "soon"})
    body = assert_problem(response, 422, path.replace(" ", "%20"))
    assert {(p["location"], p["name"]) for p in body["invalid_params"]} == {
        ("path", "host"), ("query", "limit"), ("query", "start"),
    }  # fmt: skip


def test_times_in_rfc3339_with_the_documented_leniencies_are_accepted(client: TestClient) -> None:
    for start in ("2026-11-23T10:00:00Z", "2026-11-23t10:00:00.5z", "2026-11-23T10:00:00",
                  "2026-11-23 10:00:00+01:00"):  # fmt: skip
        response = client.get("/api/v1/costs", params={"start": start, "end": ts(3600)})
        assert response.status_code == 200, (start, response.text)


def test_window_shorthands_resolve_to_utc_ranges(client: TestClient) -> None:
    body = client.get("/api/v1/costs", params={"window": "yesterday"}).json()
    start, end = (datetime.fromisoformat(body[k]) for k in ("start", "end"))
    assert end - start == timedelta(days=1)
    assert (end.hour, end.minute, end.second) == (0, 0, 0)
    body = client.get("/api/v1/costs", params={"window": "month"}).json()
    assert datetime.fromisoformat(body["start"]).day == 1
    path = f"/api/v1/gpus/api-host/{GPU}/metrics"
    body = assert_problem(client.get(path, params={"window": "24h", "end": ts(0)}), 422, path)
    assert body["invalid_params"][0]["name"] == "window"


def test_unknown_gpu_route_and_method_are_problems(loaded: TestClient) -> None:
    path = "/api/v1/gpus/api-host/GPU-nope/metrics"
    body = assert_problem(loaded.get(path), 404, path)
    assert body["type"] == "about:blank"
    assert body["title"] == "Not Found"
    assert "no readings ever stored for GPU api-host/GPU-nope" in body["detail"]
    assert "invalid_params" not in body
    assert_problem(loaded.get("/api/v2/nothing"), 404, "/api/v2/nothing")
    response = loaded.post("/api/v1/stats")
    assert_problem(response, 405, "/api/v1/stats")
    assert response.headers["allow"] == "GET"


def test_mongodb_down_is_a_503_problem(settings: ProcessorSettings) -> None:
    # Nothing listens on port 9 (discard); a short timeout keeps the failure quick.
    down = settings.model_copy(
        update={"mongo_url": SecretStr("mongodb://127.0.0.1:9/"), "mongo_timeout_ms": 300}
    )
    with TestClient(create_app(down, consume=False, gpu_reader=KnownReader([]))) as client:
        body = assert_problem(client.get("/api/v1/stats"), 503, "/api/v1/stats")
        assert body["type"] == "about:blank"
        assert "MongoDB count failed" in body["detail"]


def test_degraded_health_is_a_503_with_the_report(settings: ProcessorSettings) -> None:
    with TestClient(create_app(settings, consume=False, gpu_reader=KnownReader([]))) as client:
        response = client.get("/health")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["status"] == "degraded"
    assert body["failing"] == ["consumer"]
    assert body["consumer"]["detail"] == "consume loop not started"


OUT_OF_RANGE = ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "1969-12-31T23:00:00Z"]


@pytest.mark.parametrize(
    "params",
    [
        *({"start": t} for t in OUT_OF_RANGE),
        *({"end": t} for t in OUT_OF_RANGE),
        {"end": "0001-01-01T00:00:00Z"},  # the default start (end - 24h) would underflow
        {"start": ts(0), "end": "9999-12-31T23:59:59Z"},
    ],
)
@pytest.mark.parametrize("path", ["/api/v1/costs", f"/api/v1/gpus/api-host/{GPU}/metrics"])
def test_times_outside_the_event_range_get_422_not_500(
    client: TestClient, path: str, params: dict[str, str]
) -> None:
    response = client.get(path, params=params)
    body = assert_problem(response, 422, path)
    (param,) = body["invalid_params"]
    assert param["name"] in params
    assert "must lie between 1970-01-01T00:00:00Z and 2100-01-01T00:00:00Z" in param["reason"]
    # The connection stays usable (a 500 from an exception would have dropped it).
    assert client.get("/api/v1/stats").status_code == 200


def test_end_at_the_epoch_defaults_start_to_it_rather_than_underflowing(
    client: TestClient,
) -> None:
    response = client.get("/api/v1/costs", params={"end": "1970-01-01T00:01:00Z"})
    assert response.status_code == 200, response.text
    assert response.json()["start"] == "1970-01-01T00:00:00Z"


@pytest.mark.parametrize("group_by", ["gpu", "host", "model"])
def test_a_model_filter_keeps_that_models_share_in_every_grouping(
    loaded: TestClient, group_by: str
) -> None:
    response = loaded.get("/api/v1/costs", params={**RANGE, "group_by": group_by, "model": "m1"})
    assert response.status_code == 200, response.text
    (row,) = response.json()["rows"]
    expected_group = {"gpu": f"api-host/{GPU}", "host": "api-host", "model": "m1"}[group_by]
    assert row["group"] == expected_group
    # Minute 0 costs 3.60 / 60 = 0.06 $; m1 weighed 6,000 of the GPU's 8,500 weighted tokens
    # then (k = 4). Minute 1 was idle: it belongs to no model, so it is not part of m1's rows.
    assert row["tokens"] == 3000
    assert row["requests"] == 1
    assert row["cost_usd"] == pytest.approx(0.06 * 6000 / 8500)
    assert row["idle_cost_usd"] == 0
    assert row["p95_latency_ms"] == pytest.approx(100, rel=0.05)
    assert response.json()["totals"]["cost_usd"] == pytest.approx(0.06 * 6000 / 8500)


def test_one_gpus_readings_over_a_range(loaded: TestClient) -> None:
    gpus = loaded.get("/api/v1/gpus").json()
    assert any(g["gpu_uuid"] == GPU for g in gpus)
    response = loaded.get(
        f"/api/v1/gpus/api-host/{GPU}/metrics", params={"start": ts(0), "end": ts(60)}
    )
    assert response.status_code == 200
    readings = response.json()["readings"]
    assert [r["ts"] for r in readings] == ["2026-11-23T10:00:00+00:00", "2026-11-23T10:00:30+00:00"]
    # Field names and values as before the response models: the contract's, plus the price.
    assert set(readings[0]) == {
        "event_id", "ts", "host", "gpu_uuid", "gpu_index", "source", "gpu_name",
        "utilization_gpu_pct", "memory_used_mib", "memory_total_mib", "power_draw_w",
        "temperature_gpu_c", "clock_sm_mhz", "unsupported_fields", "gpu_key",
        "price_per_hour_usd", "price_source", "event_price_per_hour_usd", "anomalies",
        "energy_delta_j", "energy_interval_s",
    }  # fmt: skip
    assert readings[0]["anomalies"] == []
    assert readings[0]["memory_used_mib"] == 30000
    assert readings[0]["temperature_gpu_c"] is None
    limited = loaded.get(f"/api/v1/gpus/api-host/{GPU}/metrics", params={**RANGE, "limit": 1})
    assert len(limited.json()["readings"]) == 1


def test_stats_and_metrics(loaded: TestClient) -> None:
    assert loaded.get("/api/v1/stats").json() == {"gpu_metrics": 3, "token_usage": 2}
    text = loaded.get("/metrics").text
    for name in (
        "pipeline_events_consumed_total",
        "pipeline_events_written_total",
        "pipeline_batch_size_bucket",
        "pipeline_write_latency_seconds_bucket",
        "pipeline_end_to_end_latency_seconds_bucket",
        "pipeline_consumer_lag",
        "starlette_requests_total",
    ):
        assert name in text, name
    assert loaded.get("/docs").status_code == 200
    assert "/api/v1/costs" in loaded.get("/openapi.json").json()["paths"]
