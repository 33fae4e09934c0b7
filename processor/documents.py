"""Turn validated events into the MongoDB documents the processor stores (pure, no I/O).

Each document carries precomputed time buckets (``minute``, ``hour``, ``day`` as integers since
the epoch) so every query is `$match` + `$group` + `$sum`: FerretDB has no date operators.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from processor.cost import TokenCost
from processor.rollup import latency_bucket_ms
from schemas.contracts import parse_ts

__all__ = [
    "GPU_METRICS",
    "TOKEN_USAGE",
    "epoch_us",
    "gpu_key",
    "gpu_metrics_doc",
    "time_buckets",
    "to_ts_us",
    "token_usage_doc",
]

GPU_METRICS: Final = "gpu_metrics"
TOKEN_USAGE: Final = "token_usage"

_US_PER_MINUTE: Final = 60_000_000
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

# Event fields copied verbatim; everything else is derived. event_id becomes _id.
_GPU_FIELDS: Final = (
    "host", "gpu_uuid", "gpu_index", "source", "gpu_name", "utilization_gpu_pct",
    "memory_used_mib", "memory_total_mib", "power_draw_w", "temperature_gpu_c", "clock_sm_mhz",
    "power_limit_w", "energy_total_mj", "unsupported_fields",
)  # fmt: skip
_TOKEN_FIELDS: Final = (
    "host", "gpu_uuid", "gpu_index", "model", "input_tokens", "output_tokens", "latency_ms",
    "request_id", "ttft_ms", "cache_read_input_tokens", "status",
)  # fmt: skip


def to_ts_us(ts: str) -> int:
    """RFC 3339 -> integer microseconds since the epoch (exact, so window edges are exact)."""
    return epoch_us(parse_ts(ts))


def epoch_us(moment: datetime) -> int:
    """An aware datetime -> integer microseconds since the epoch (exact)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_ts_us(ts_us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=ts_us)


def time_buckets(ts_us: int) -> dict[str, int]:
    """Epoch minute, hour and day of a timestamp: the grouping keys of every rollup."""
    minute = ts_us // _US_PER_MINUTE
    return {"minute": minute, "hour": minute // 60, "day": minute // 1440}


def gpu_key(event: Mapping[str, Any]) -> str:
    return f"{event['host']}/{event['gpu_uuid']}"


def _common(event: Mapping[str, Any], ts_us: int, partition: int, offset: int) -> dict[str, Any]:
    return {
        "_id": event["event_id"],
        "schema": event["schema"],
        "gpu_key": gpu_key(event),
        "ts": from_ts_us(ts_us),
        "ts_us": ts_us,
        **time_buckets(ts_us),
        "kafka_partition": partition,
        "kafka_offset": offset,
    }


def gpu_metrics_doc(
    event: Mapping[str, Any],
    *,
    ts_us: int,
    price: tuple[float, str],
    partition: int,
    offset: int,
) -> dict[str, Any]:
    """The stored form of a gpu.metrics.v1 event with the price the cost model resolved."""
    doc = _common(event, ts_us, partition, offset)
    doc.update((f, event[f]) for f in _GPU_FIELDS if f in event)
    # The event's own price is kept apart from the resolved one: a rebuild must replay what
    # the event said, not what the map said at the time.
    doc["event_price_per_hour_usd"] = event.get("price_per_hour_usd")
    doc["price_per_hour_usd"], doc["price_source"] = price
    return doc


def token_usage_doc(
    event: Mapping[str, Any],
    *,
    ts_us: int,
    cost: TokenCost,
    partition: int,
    offset: int,
) -> dict[str, Any]:
    """The stored form of a token.usage.v1 event with its cost."""
    doc = _common(event, ts_us, partition, offset)
    doc.update((f, event[f]) for f in _TOKEN_FIELDS if f in event)
    doc["tokens"] = cost.tokens
    doc["latency_bucket_ms"] = latency_bucket_ms(float(event["latency_ms"]))
    doc["tps"] = cost.tps
    doc["price_per_hour_usd"] = cost.price_per_hour_usd
    doc["price_source"] = cost.price_source
    doc["cost_per_token"] = cost.cost_per_token
    doc["cost_usd"] = cost.cost_usd
    return doc
