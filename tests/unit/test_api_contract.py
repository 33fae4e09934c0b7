"""The HTTP API's documented shapes: GPU readings equal the gpu.metrics.v1 contract, one error
shape (RFC 9457) on every operation, readable operation ids. No services: only the models and
the OpenAPI document the app generates."""

from __future__ import annotations

from typing import Any, Final

import pytest
from pydantic import BaseModel

from devtools.events import gpu_event
from processor.api.problems import PROBLEM_MEDIA_TYPE
from processor.api.readings import INTERNAL_FIELDS, GpuMetricsEvent, StoredReading, reading_out
from processor.app import create_app
from processor.cost import PRICE_SOURCES, ReadingPrice
from processor.documents import gpu_metrics_doc
from processor.settings import ProcessorSettings
from schemas.contracts import GPU_METRICS_V1, epoch_us, load_schema, parse_ts, validation_errors

CONTRACT: Final = load_schema(GPU_METRICS_V1)

# How a stored reading, as the API shows it, differs from the contract, on purpose (the
# docstring of processor/api/readings.py explains each). Anything else is drift.
STORED_DROPS: Final = {"schema"}
STORED_ADDS: Final = {
    "gpu_key", "price_source", "event_price_per_hour_usd", "energy_delta_j", "energy_interval_s",
    "anomalies",
}  # fmt: skip


def _kind(prop: dict[str, Any]) -> tuple[frozenset[str], frozenset[Any] | None, Any, Any]:
    """(JSON types incl. null, allowed values, format, item kind) of a property, however spelt.

    The contract writes ``{"type": ["number", "null"]}``, pydantic ``{"anyOf": [...]}``; the
    contract's ``enum``/``const`` carry no ``type``, pydantic's do.
    """
    if "anyOf" in prop:
        kinds = [_kind(p) for p in prop["anyOf"]]
        allowed = [k[1] for k in kinds if k[1] is not None]
        return (
            frozenset().union(*(k[0] for k in kinds)),
            frozenset().union(*allowed) if allowed else None,
            next((k[2] for k in kinds if k[2] is not None), None),
            next((k[3] for k in kinds if k[3] is not None), None),
        )
    values: frozenset[Any] | None = None
    if "const" in prop:
        values = frozenset([prop["const"]])
    elif "enum" in prop:
        values = frozenset(prop["enum"])
    declared = prop.get("type")
    if declared is None and values is not None:
        types = frozenset("string" for v in values if isinstance(v, str))
    else:
        types = frozenset([declared] if isinstance(declared, str) else declared or [])
    items = _kind(prop["items"]) if "items" in prop else None
    return types, values, prop.get("format"), items


def _shape(schema: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    return {n: _kind(p) for n, p in schema["properties"].items()}, set(schema.get("required", []))


def _model_shape(model: type[BaseModel]) -> tuple[dict[str, Any], set[str]]:
    return _shape(model.model_json_schema(mode="serialization"))


def test_the_event_model_is_the_contract() -> None:
    kinds, required = _model_shape(GpuMetricsEvent)
    contract_kinds, contract_required = _shape(CONTRACT)
    assert set(kinds) == set(contract_kinds)
    for name, kind in contract_kinds.items():
        assert kinds[name] == kind, name
    assert required == contract_required


def test_a_stored_reading_is_the_contract_with_the_resolved_price() -> None:
    kinds, required = _model_shape(StoredReading)
    contract_kinds, contract_required = _shape(CONTRACT)
    assert set(kinds) == set(contract_kinds) - STORED_DROPS | STORED_ADDS
    for name in set(contract_kinds) - STORED_DROPS - {"price_per_hour_usd"}:
        assert kinds[name] == contract_kinds[name], name
    # The event's price keeps the contract's type; the resolved one is never null.
    assert kinds["event_price_per_hour_usd"] == contract_kinds["price_per_hour_usd"]
    assert kinds["price_per_hour_usd"] == (frozenset({"number"}), None, None, None)
    assert kinds["price_source"][1] == frozenset(PRICE_SOURCES)
    assert kinds["gpu_key"][0] == frozenset({"string"})
    # The energy fields and anomaly flags are optional: documents stored before they existed
    # lack them.
    optional_adds = {"energy_delta_j", "energy_interval_s", "anomalies"}
    assert required == (
        contract_required - STORED_DROPS | STORED_ADDS - optional_adds | {"price_per_hour_usd"}
    )


def _full_event() -> dict[str, Any]:
    """A reading with every optional field of the contract set."""
    event = gpu_event("host-a", "GPU-1", 0, price_per_hour_usd=2.5)
    event.update(power_limit_w=400, energy_total_mj=12345.5)
    assert set(event) == set(CONTRACT["properties"])
    return event


def test_the_api_shows_every_stored_field_and_only_those() -> None:
    event = _full_event()
    doc = gpu_metrics_doc(
        event,
        gpu_key="host-a/GPU-1",
        ts_us=epoch_us(parse_ts(event["ts"])),
        price=ReadingPrice(2.5, "event"),
        partition=3,
        offset=7,
    )
    shown = reading_out(doc).model_dump(mode="json", exclude_unset=True)
    # A field documents.py starts storing must be shown (or named internal) on purpose.
    assert (
        set(shown) == set(doc) - INTERNAL_FIELDS | {"event_id"} == set(StoredReading.model_fields)
    )
    assert shown["event_id"] == event["event_id"]
    # An integer stays an integer (30000, not 30000.0), as before the models existed.
    assert shown["memory_used_mib"] == 30000
    assert isinstance(shown["memory_used_mib"], int)
    # Mapped back, the API's view is a valid event: same names, types and values as produced.
    back = {k: v for k, v in shown.items() if k not in STORED_ADDS}
    back |= {"schema": GPU_METRICS_V1, "price_per_hour_usd": shown["event_price_per_hour_usd"]}
    assert validation_errors(back) == []
    assert back == {**event, "ts": "2026-11-23T10:00:00+00:00"}


def test_optional_fields_the_event_lacked_stay_absent() -> None:
    event = gpu_event("host-a", "GPU-1", 0)
    del event["unsupported_fields"]
    doc = gpu_metrics_doc(
        event,
        gpu_key="host-a/GPU-1",
        ts_us=epoch_us(parse_ts(event["ts"])),
        price=ReadingPrice(1.0, "default"),
        partition=0,
        offset=0,
    )
    shown = reading_out(doc).model_dump(mode="json", exclude_unset=True)
    assert not {"power_limit_w", "energy_total_mj", "unsupported_fields"} & set(shown)
    assert shown["event_price_per_hour_usd"] is None
    assert shown["price_per_hour_usd"] == 1.0


def test_a_local_event_passes_through_unchanged() -> None:
    event = _full_event()
    shown = GpuMetricsEvent.model_validate(event).model_dump(
        mode="json", by_alias=True, exclude_unset=True
    )
    assert shown == event


# --------------------------------------------------------------------------- OpenAPI


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    # Generating the document needs no server: the lifespan (which connects) does not run.
    settings = ProcessorSettings(mongo_url="mongodb://127.0.0.1:9/", kafka_bootstrap="127.0.0.1:9")
    return create_app(settings, consume=False).openapi()


def _operations(openapi: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m, p, op) for p, ops in openapi["paths"].items() for m, op in ops.items()]


def test_operation_ids_are_the_route_names(openapi: dict[str, Any]) -> None:
    ids = {f"{m.upper()} {p}": op["operationId"] for m, p, op in _operations(openapi)}
    assert ids == {
        "GET /health": "get_health",
        "GET /gpu/info": "get_gpu_info",
        "GET /api/v1/gpus": "list_gpus",
        "GET /api/v1/gpus/{host}/{gpu_uuid}/metrics": "list_gpu_readings",
        "GET /api/v1/costs": "get_costs",
        "GET /api/v1/events/{event_id}": "get_event",
        "GET /api/v1/requests/{request_id}": "get_request",
        "GET /api/v1/anomalies": "list_anomalies",
        "GET /api/v1/stats": "get_stats",
    }


def test_every_error_response_is_a_problem(openapi: dict[str, Any]) -> None:
    problem_ref = {"$ref": "#/components/schemas/Problem"}
    for method, path, op in _operations(openapi):
        errors = {s: r for s, r in op["responses"].items() if s[0] in "45"}
        assert "500" in errors, (method, path)
        if op.get("parameters"):
            assert "422" in errors, (method, path)
        for status, response in errors.items():
            if (path, status) == ("/health", "503"):
                # Degraded health is the health report itself, not an error of the request.
                assert response["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/Health"
                }
                continue
            assert response["content"] == {PROBLEM_MEDIA_TYPE: {"schema": problem_ref}}, (
                method, path, status,
            )  # fmt: skip
    schemas = openapi["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert set(schemas["Problem"]["required"]) == {"type", "title", "status", "detail", "instance"}
    assert schemas["Problem"]["properties"]["invalid_params"]["items"] == {
        "$ref": "#/components/schemas/InvalidParam"
    }
    assert set(schemas["InvalidParam"]["required"]) == {"location", "name", "reason"}


def test_reading_responses_reference_the_contract_models(openapi: dict[str, Any]) -> None:
    schemas = openapi["components"]["schemas"]
    assert schemas["Readings"]["properties"]["readings"]["items"] == {
        "$ref": "#/components/schemas/StoredReading"
    }
    assert schemas["GpuInfo"]["properties"]["stream"]["items"] == {
        "$ref": "#/components/schemas/StoredReading"
    }
    assert schemas["LocalGpus"]["properties"]["gpus"]["items"] == {
        "$ref": "#/components/schemas/GpuMetricsEvent"
    }
    gpus = openapi["paths"]["/api/v1/gpus"]["get"]["responses"]["200"]["content"]
    assert gpus["application/json"]["schema"]["items"] == {
        "$ref": "#/components/schemas/StoredReading"
    }
