"""Builders of contract-valid events (plain dicts, as producers send them), for tests and bench."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

T0 = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)


def ts(seconds: float, base: datetime = T0) -> str:
    return (base + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def token_event(
    host: str,
    gpu_uuid: str,
    at_s: float,
    input_tokens: int,
    output_tokens: int,
    *,
    model: str = "llama-3.1-8b-instruct",
    event_id: str | None = None,
    latency_ms: float = 500.0,
    gpu_index: int = 0,
    base: datetime = T0,
    tenant: str | None = None,
) -> dict[str, Any]:
    return {
        **({} if tenant is None else {"tenant": tenant}),
        "schema": "token.usage.v1",
        "event_id": event_id or str(uuid.uuid4()),
        "ts": ts(at_s, base),
        "host": host,
        "gpu_uuid": gpu_uuid,
        "gpu_index": gpu_index,
        "model": model,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "latency_ms": latency_ms,
    }


def gpu_event(
    host: str,
    gpu_uuid: str,
    at_s: float,
    *,
    gpu_name: str = "NVIDIA A100-SXM4-40GB",
    price_per_hour_usd: float | None = None,
    gpu_index: int = 0,
    base: datetime = T0,
    energy_total_mj: int | None = None,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "schema": "gpu.metrics.v1",
        "event_id": str(uuid.uuid4()),
        "ts": ts(at_s, base),
        "host": host,
        "gpu_uuid": gpu_uuid,
        "gpu_index": gpu_index,
        "source": "seed",
        "gpu_name": gpu_name,
        "utilization_gpu_pct": 80.0,
        "memory_used_mib": 30000,
        "memory_total_mib": 40960,
        "power_draw_w": 300.0,
        "temperature_gpu_c": None,
        "clock_sm_mhz": None,
        "unsupported_fields": ["temperature_gpu_c", "clock_sm_mhz"],
    }
    if price_per_hour_usd is not None:
        event["price_per_hour_usd"] = price_per_hour_usd
    if energy_total_mj is not None:
        event["energy_total_mj"] = energy_total_mj
    return event
