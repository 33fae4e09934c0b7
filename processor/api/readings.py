"""GPU readings as the API shows them: the ``gpu.metrics.v1`` contract, field for field.

Two shapes:

* ``GpuMetricsEvent`` — an event exactly as the contract defines it (``/gpu/info``'s local
  GPUs, read on this host and never stored).
* ``StoredReading`` — a stored reading (``/gpu/info``'s stream, ``/api/v1/gpus``, one GPU's
  readings): the contract without ``schema``, plus ``gpu_key``, and the price as the processor
  resolved it: ``price_per_hour_usd`` (never null) with its ``price_source``, next to
  ``event_price_per_hour_usd``, which is the contract's ``price_per_hour_usd`` as the event
  carried it.

Optional contract fields stay optional: a field the event did not carry is left out of the
response, not sent as null (routes set ``response_model_exclude_unset``). The models are
written out rather than generated so the OpenAPI document and mypy see them;
``tests/unit/test_api_models.py`` keeps them equal to ``schemas/gpu.metrics.v1.json``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, Field, WithJsonSchema

__all__ = [
    "INTERNAL_FIELDS",
    "AnomalyFlag",
    "EventId",
    "GpuMetricsEvent",
    "Number",
    "Source",
    "StoredReading",
    "Timestamp",
    "reading_out",
]

# A JSON number, passed through as stored: an integer (30000) stays an integer instead of
# becoming 30000.0, as it was before these models existed. The schema says "number" like the
# contract's.
Number = Annotated[int | float, WithJsonSchema({"type": "number"})]
# Kept as the string the API has always sent (isoformat with +00:00 for stored readings, the
# producer's own text for local events); the schema carries the contract's format.
Timestamp = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]
EventId = Annotated[str, WithJsonSchema({"type": "string", "format": "uuid"})]
Source = Literal["nvml", "nvidia-smi", "seed", "dcgm-exporter"]

# Storage-only fields of a gpu_metrics document that a client has no use for (_id is shown as
# event_id).
INTERNAL_FIELDS: Final = frozenset({"_id", "ts_us", "minute", "hour", "day", "kafka_partition",
                                    "kafka_offset", "schema", "power_samples",
                                    "energy_samples", "anomaly_count"})  # fmt: skip


class AnomalyFlag(BaseModel):
    """One anomaly rule that fired on a reading (docs/anomalies.md)."""

    rule: Literal[
        "temperature_outlier", "utilization_outlier", "power_outlier", "power_throttle",
        "thermal_throttle",
    ] = Field(description="Which rule fired.")  # fmt: skip
    field: str = Field(description="The reading's field the rule judged.")
    value: float = Field(description="That field's value in this reading.")
    median: float = Field(description="The field's median over the GPU's recent window.")
    score: float = Field(
        description="Outliers: |value - median| in robust standard deviations (flagged above "
        "ANOMALY_MAD_THRESHOLD); throttles: the relative clock drop 1 - value / median."
    )


class _Reading(BaseModel):
    """The contract's fields shared by both shapes (all but ``schema`` and the price)."""

    event_id: EventId = Field(description="UUID of the event; its idempotency key.")
    ts: Timestamp = Field(description="When the reading was taken, RFC 3339.")
    host: str = Field(description="Host name of the inference host.")
    gpu_uuid: str = Field(description="GPU (or MIG instance) UUID as NVML reports it.")
    gpu_index: int = Field(description="Index of the GPU on its host.")
    source: Source = Field(description="Which reader produced the values.")
    gpu_name: str = Field(description="Product name; the key of the price map.")
    utilization_gpu_pct: Number | None = Field(description="GPU utilisation, percent 0-100.")
    memory_used_mib: Number | None = Field(description="Framebuffer memory used, MiB.")
    memory_total_mib: Number | None = Field(description="Framebuffer memory total, MiB.")
    power_draw_w: Number | None = Field(description="Board power draw, watts.")
    temperature_gpu_c: Number | None = Field(description="GPU core temperature, °C.")
    clock_sm_mhz: Number | None = Field(description="Current SM clock, MHz.")
    power_limit_w: Number | None = Field(None, description="Optional. Power limit, watts.")
    energy_total_mj: Number | None = Field(
        None, description="Optional. Energy since the driver was loaded, millijoules."
    )
    unsupported_fields: list[str] = Field(
        default_factory=list, description="Optional. Metric fields the device cannot report."
    )


class GpuMetricsEvent(_Reading):
    """A ``gpu.metrics.v1`` event as the contract defines it."""

    schema_: Literal["gpu.metrics.v1"] = Field(alias="schema", description="Contract name.")
    price_per_hour_usd: Number | None = Field(
        None, description="Optional. What this GPU costs per hour in USD, if the event says."
    )


class StoredReading(_Reading):
    """A stored ``gpu.metrics.v1`` reading with the price the processor resolved for it."""

    gpu_key: str = Field(description="`host/gpu_uuid`: the path of the GPU's own routes.")
    price_per_hour_usd: Number = Field(description="The price the processor used, USD/hour.")
    price_source: Literal["event", "price_map", "default"] = Field(
        description="Where that price came from: the event, GPU_PRICES, PRICE_PER_HOUR_USD."
    )
    event_price_per_hour_usd: Number | None = Field(
        description="The event's own price_per_hour_usd (null when it carried none)."
    )
    energy_delta_j: float | None = Field(
        None,
        description="Energy the GPU's counter (energy_total_mj) rose by since the GPU's "
        "previous, older reading, joules; null without both counters, for a late reading, or "
        "after a counter reset.",
    )
    energy_interval_s: float | None = Field(
        None, description="Seconds between that previous reading and this one."
    )
    anomalies: list[AnomalyFlag] = Field(
        default_factory=list,
        description="Anomaly flags of this reading against its GPU's recent window; empty when "
        "none fired (left out for readings stored before flags existed).",
    )


def reading_out(doc: dict[str, Any]) -> StoredReading:
    """A stored gpu_metrics document as the API shows it."""
    out = {k: v for k, v in doc.items() if k not in INTERNAL_FIELDS}
    out["event_id"] = str(doc["_id"])
    ts = doc.get("ts")
    if isinstance(ts, datetime):
        out["ts"] = ts.astimezone(UTC).isoformat()
    return StoredReading.model_validate(out)
