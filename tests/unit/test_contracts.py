"""The event contracts: valid and invalid examples, aliases, decoding of raw Kafka values."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.contracts import (
    KNOWN_SCHEMAS,
    ContractError,
    ContractViolation,
    decode,
    kafka_key,
    load_schema,
    parse_ts,
    ts_range,
    validate,
    validation_errors,
)

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"

TOKEN: dict[str, Any] = {
    "schema": "token.usage.v1",
    "event_id": "0b6f8a5e-3c1d-4c7e-9a55-1f2e3d4c5b6a",
    "ts": "2026-11-23T10:00:00.250Z",
    "host": "inference-01",
    "gpu_uuid": "GPU-5f1c2d3e-aaaa-bbbb-cccc-0123456789ab",
    "gpu_index": 0,
    "model": "llama-3.1-8b-instruct",
    "input_tokens": 812,
    "output_tokens": 164,
    "latency_ms": 1530.5,
}
GPU: dict[str, Any] = {
    "schema": "gpu.metrics.v1",
    "event_id": "7d1e2f3a-4b5c-4d6e-8f90-a1b2c3d4e5f6",
    "ts": "2026-11-23T10:00:00+00:00",
    "host": "inference-01",
    "gpu_uuid": "GPU-5f1c2d3e-aaaa-bbbb-cccc-0123456789ab",
    "gpu_index": 0,
    "source": "nvml",
    "gpu_name": "NVIDIA A100-SXM4-40GB",
    "utilization_gpu_pct": 87.0,
    "memory_used_mib": 30120,
    "memory_total_mib": 40960,
    "power_draw_w": 312.4,
    "temperature_gpu_c": 64,
    "clock_sm_mhz": 1410,
}


def token(**changes: Any) -> dict[str, Any]:
    event = copy.deepcopy(TOKEN)
    event.update(changes)
    return event


def gpu(**changes: Any) -> dict[str, Any]:
    event = copy.deepcopy(GPU)
    event.update(changes)
    return event


def without(event: dict[str, Any], field: str) -> dict[str, Any]:
    event = copy.deepcopy(event)
    del event[field]
    return event


def test_valid_examples_pass() -> None:
    assert validation_errors(token()) == []
    assert validation_errors(gpu()) == []


@pytest.mark.parametrize("tenant", ["acme", "team-search", "org/ml.platform", "a", "t" * 128])
def test_tenant_values_within_the_charset_are_accepted(tenant: str) -> None:
    assert validation_errors(token(tenant=tenant, user="svc:batch+1")) == []


def test_every_optional_field_is_accepted() -> None:
    full_token = token(
        request_id="req-42",
        ttft_ms=120.0,
        cache_read_input_tokens=512,
        status="timeout",
        tenant="team-search",
        user="alice@example.com",
    )
    full_gpu = gpu(
        power_limit_w=400,
        energy_total_mj=123456789,
        price_per_hour_usd=3.2,
        temperature_gpu_c=None,
        unsupported_fields=["temperature_gpu_c"],
    )
    assert validation_errors(full_token) == []
    assert validation_errors(full_gpu) == []


@pytest.mark.parametrize("field", sorted(load_schema("token.usage.v1")["required"]))
def test_token_required_fields(field: str) -> None:
    reasons = validation_errors(without(TOKEN, field))
    assert reasons, f"missing {field} was accepted"
    if field != "schema":
        assert any(field in r for r in reasons), reasons


@pytest.mark.parametrize("field", sorted(load_schema("gpu.metrics.v1")["required"]))
def test_gpu_required_fields(field: str) -> None:
    assert validation_errors(without(GPU, field))


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"input_tokens": "812"}, "input_tokens"),
        ({"input_tokens": 1.5}, "input_tokens"),
        ({"output_tokens": -1}, "output_tokens"),
        ({"output_tokens": 10_000_001}, "output_tokens"),
        ({"input_tokens": 2**62}, "input_tokens"),
        ({"latency_ms": -0.1}, "latency_ms"),
        ({"gpu_index": True}, "gpu_index"),
        ({"model": ""}, "model"),
        ({"host": ""}, "host"),
        ({"host": "a/b"}, "host"),
        ({"event_id": "not-a-uuid"}, "event_id"),
        ({"ts": "2026-11-23T10:00:00"}, "ts"),
        ({"ts": "yesterday"}, "ts"),
        ({"ts": "2026-13-45T99:00:00Z"}, "ts"),
        ({"status": "weird"}, "status"),
        ({"tenant": ""}, "tenant"),
        ({"tenant": "(unattributed)"}, "tenant"),
        ({"tenant": "team a"}, "tenant"),
        ({"tenant": "t" * 129}, "tenant"),
        ({"tenant": "ctl\u0007"}, "tenant"),
        ({"tenant": 7}, "tenant"),
        ({"user": "u" * 257}, "user"),
        ({"user": "-leading-dash"}, "user"),
        ({"prompt_token": 3}, "prompt_token"),
    ],
)
def test_token_invalid_values_name_the_field(changes: dict[str, Any], where: str) -> None:
    reasons = validation_errors(token(**changes))
    assert reasons
    assert any(where in r for r in reasons), reasons


@pytest.mark.parametrize(
    "changes",
    [
        {"utilization_gpu_pct": 101},
        {"utilization_gpu_pct": "87"},
        {"memory_used_mib": -5},
        {"source": "dcgm"},
        {"power_draw_w": 1e9},
        {"gpu_name": ""},
        {"unsupported_fields": ["x", "x"]},
        {"price_per_hour_usd": -1},
    ],
)
def test_gpu_invalid_values(changes: dict[str, Any]) -> None:
    assert validation_errors(gpu(**changes))


def test_every_reason_is_returned_not_just_the_first() -> None:
    reasons = validation_errors(token(input_tokens=-1, output_tokens="x", model=""))
    assert len(reasons) >= 3


def test_unknown_or_missing_schema() -> None:
    assert "unknown schema" in validation_errors(token(schema="token.usage.v2"))[0]
    assert "unknown schema" in validation_errors(without(TOKEN, "schema"))[0]
    assert "JSON object" in validation_errors([TOKEN])[0]


def test_unicode_model_names_are_valid() -> None:
    for name in ("通义千问-72B", "mistral-7b-ÿ", "🦙-3.1-8b", "モデル"):
        assert validation_errors(token(model=name)) == []


def test_aliases_are_renamed_to_one_spelling() -> None:
    event = without(without(TOKEN, "input_tokens"), "output_tokens")
    event.update(prompt_tokens=10, completion_tokens=20)
    validated = validate(event)
    assert validated["input_tokens"] == 10
    assert validated["output_tokens"] == 20
    assert "prompt_tokens" not in validated
    assert "completion_tokens" not in validated


def test_validate_raises_with_reasons() -> None:
    with pytest.raises(ContractViolation) as info:
        validate(token(input_tokens=-3))
    assert info.value.reasons
    assert "input_tokens" in str(info.value)


def test_decode_roundtrip_and_failures() -> None:
    assert decode(orjson.dumps(TOKEN)) == TOKEN
    cases: list[tuple[bytes | None, str]] = [
        (b"{not json", "malformed JSON"),
        (b"", "malformed JSON"),
        (None, "null value"),
        (b'{"schema": "token.usage.v1", "input_tokens": 1e999}', "malformed JSON"),
        (
            # orjson reads integers beyond 64 bits as floats; the schema's maximum rejects them.
            b'{"schema":"token.usage.v1","input_tokens":' + str(2**80).encode() + b"}",
            "input_tokens: .* greater than the maximum",
        ),
        (b"[1, 2]", "JSON object"),
        (b'"just a string"', "JSON object"),
    ]
    for raw, expected in cases:
        with pytest.raises(ContractViolation, match=expected):
            decode(raw)


def test_decode_rejects_oversize_messages() -> None:
    raw = orjson.dumps(token(model="m" * 200))
    with pytest.raises(ContractViolation, match="exceeds"):
        decode(raw, max_bytes=100)
    assert decode(raw, max_bytes=len(raw))["model"] == "m" * 200


def test_parse_ts_normalises_to_utc() -> None:
    assert parse_ts("2026-11-23T12:00:00+02:00").isoformat() == "2026-11-23T10:00:00+00:00"
    assert parse_ts("2026-11-23t10:00:00z").hour == 10
    with pytest.raises(ValueError, match="zone"):
        parse_ts("2026-11-23T10:00:00")


# Each passes the schema's date-time format; the first two cannot even be converted to UTC
# (OverflowError in astimezone), the others are outside the documented range.
OUT_OF_RANGE_TS = [
    "9999-12-31T23:59:59-01:00",
    "0001-01-01T00:00:00+01:00",
    "0001-01-01T00:00:00Z",
    "1969-12-31T23:59:59.999999Z",
    "2100-01-01T00:00:00Z",
    "2100-01-01T01:00:00+01:00",
]


@pytest.mark.parametrize("value", OUT_OF_RANGE_TS)
@pytest.mark.parametrize("example", [TOKEN, GPU], ids=["token", "gpu"])
def test_timestamps_outside_the_range_are_a_contract_violation(
    value: str, example: dict[str, Any]
) -> None:
    raw = orjson.dumps({**example, "ts": value})
    with pytest.raises(ContractViolation, match=r"^ts: timestamp") as caught:
        decode(raw)
    assert caught.value.reasons == tuple(validation_errors(orjson.loads(raw)))
    with pytest.raises(ValueError, match=r"range|cannot be converted"):
        parse_ts(value)


def test_range_edges_are_inclusive_start_exclusive_end() -> None:
    earliest, end = ts_range()
    assert (earliest.isoformat(), end.isoformat()) == (
        "1970-01-01T00:00:00+00:00",
        "2100-01-01T00:00:00+00:00",
    )
    assert parse_ts("1970-01-01T00:00:00Z") == earliest
    assert parse_ts("2099-12-31T23:59:59.999999Z").year == 2099
    assert parse_ts("1970-01-01T01:00:00+01:00") == earliest  # same instant, other offset


def test_kafka_key_is_host_slash_gpu() -> None:
    assert kafka_key(TOKEN) == "inference-01/GPU-5f1c2d3e-aaaa-bbbb-cccc-0123456789ab"


def test_load_schema_unknown_name() -> None:
    with pytest.raises(ContractError, match="unknown schema"):
        load_schema("nope.v1")


@pytest.mark.parametrize("name", KNOWN_SCHEMAS)
def test_schema_files_describe_every_field(name: str) -> None:
    schema = json.loads((SCHEMA_DIR / f"{name}.json").read_text(encoding="utf-8"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False
    undocumented = [k for k, v in schema["properties"].items() if not v.get("description")]
    assert undocumented == []
    assert set(schema["required"]) <= set(schema["properties"])
