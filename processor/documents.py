"""Turn validated events into the MongoDB documents the processor stores (pure, no I/O).

Each document carries precomputed time buckets (``minute``, ``hour``, ``day`` as integers since
the epoch) and a latency bucket, so every query is `$match` + `$group` + `$sum`: FerretDB has
no date operators and no percentile accumulator.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

from processor.anomalies import Flag
from processor.cost import ReadingPrice, TokenCost
from schemas.contracts import from_epoch_us

__all__ = [
    "GPU_METRICS",
    "LATENCY_BUCKET_GROWTH",
    "TOKEN_USAGE",
    "gpu_metrics_doc",
    "latency_bucket_ms",
    "time_buckets",
    "token_usage_doc",
]

GPU_METRICS: Final = "gpu_metrics"
TOKEN_USAGE: Final = "token_usage"

_US_PER_MINUTE: Final = 60_000_000

# Event fields copied verbatim; everything else is derived. event_id becomes _id.
_GPU_FIELDS: Final = (
    "host", "gpu_uuid", "gpu_index", "source", "gpu_name", "utilization_gpu_pct",
    "memory_used_mib", "memory_total_mib", "power_draw_w", "temperature_gpu_c", "clock_sm_mhz",
    "power_limit_w", "energy_total_mj", "unsupported_fields",
)  # fmt: skip
_TOKEN_FIELDS: Final = (
    "host", "gpu_uuid", "gpu_index", "model", "input_tokens", "output_tokens", "latency_ms",
    "request_id", "ttft_ms", "cache_read_input_tokens", "status", "tenant", "user",
    "tp_rank", "tp_size",
)  # fmt: skip


def time_buckets(ts_us: int) -> dict[str, int]:
    """Epoch minute, hour and day of a timestamp: the grouping keys of every rollup."""
    minute = ts_us // _US_PER_MINUTE
    return {"minute": minute, "hour": minute // 60, "day": minute // 1440}


def _common(
    event: Mapping[str, Any], gpu_key: str, ts_us: int, partition: int, offset: int
) -> dict[str, Any]:
    return {
        "_id": event["event_id"],
        "schema": event["schema"],
        "gpu_key": gpu_key,
        "ts": from_epoch_us(ts_us),
        "ts_us": ts_us,
        **time_buckets(ts_us),
        "kafka_partition": partition,
        "kafka_offset": offset,
    }


def gpu_metrics_doc(
    event: Mapping[str, Any],
    *,
    gpu_key: str,
    ts_us: int,
    price: ReadingPrice,
    partition: int,
    offset: int,
    anomalies: Sequence[Flag] = (),
) -> dict[str, Any]:
    """The stored form of a gpu.metrics.v1 event with the price the cost model resolved and
    its anomaly flags (processor/anomalies.py)."""
    doc = _common(event, gpu_key, ts_us, partition, offset)
    doc.update((f, event[f]) for f in _GPU_FIELDS if f in event)
    # The event's own price is kept apart from the resolved one: a rebuild must replay what
    # the event said, not what the map said at the time.
    doc["event_price_per_hour_usd"] = event.get("price_per_hour_usd")
    doc["price_per_hour_usd"], doc["price_source"] = price.price
    # FerretDB's $group has $sum only: a 1/0 count lets a rollup average the power readings.
    doc["power_samples"] = 0 if event.get("power_draw_w") is None else 1
    doc["energy_delta_j"] = price.energy_delta_j
    doc["energy_samples"] = 0 if price.energy_delta_j is None else 1
    doc["energy_interval_s"] = price.energy_interval_s
    doc["anomalies"] = [flag.as_doc() for flag in anomalies]
    # A plain integer to match on (anomaly_count > 0): what /api/v1/anomalies asks for.
    doc["anomaly_count"] = len(anomalies)
    return doc


def token_usage_doc(
    event: Mapping[str, Any],
    *,
    gpu_key: str,
    ts_us: int,
    cost: TokenCost,
    partition: int,
    offset: int,
) -> dict[str, Any]:
    """The stored form of a token.usage.v1 event with its cost."""
    doc = _common(event, gpu_key, ts_us, partition, offset)
    doc.update((f, event[f]) for f in _TOKEN_FIELDS if f in event)
    doc["tokens"] = cost.tokens
    doc["latency_bucket_ms"] = latency_bucket_ms(float(event["latency_ms"]))
    doc["tps"] = cost.tps
    doc["price_per_hour_usd"] = cost.price_per_hour_usd
    doc["price_source"] = cost.price_source
    # A tensor-parallel request is one event per GPU: ranks > 0 do not count it again. Stored
    # as 1/0 so that a $sum (FerretDB has no $cond) subtracts them, and older documents
    # without the field count as a request each.
    doc["tp_follower"] = 1 if event.get("tp_rank", 0) > 0 else 0
    doc["output_weight"] = cost.output_weight
    doc["weighted_tokens"] = cost.weighted_tokens
    doc["weighted_tps"] = cost.weighted_tps
    doc["cost_per_input_token"] = cost.cost_per_input_token
    doc["cost_per_output_token"] = cost.cost_per_output_token
    doc["cost_per_token"] = cost.cost_per_token
    doc["input_cost_usd"] = cost.input_cost_usd
    doc["output_cost_usd"] = cost.output_cost_usd
    doc["cost_usd"] = cost.cost_usd
    return doc


# -- latency buckets (stored on each token document; rollup.percentile_from_buckets reads them)

# Bucket upper bounds are round6(GROWTH**k): consecutive bounds differ by < 5 % even after
# rounding to 6 significant digits (1.049 * (1 + 1e-6) < 1.05).
LATENCY_BUCKET_GROWTH: Final = 1.049
_LOG_GROWTH: Final = math.log(LATENCY_BUCKET_GROWTH)
# Latencies at or below ~1 ns share the first bucket; above 1e12 ms (~31 years) is an error.
_K_MIN: Final = math.floor(math.log(1e-6) / _LOG_GROWTH)
_MAX_LATENCY_MS: Final = 1e12


def _bucket_upper(k: int) -> float:
    return float(f"{LATENCY_BUCKET_GROWTH**k:.6g}")


def latency_bucket_ms(latency_ms: float) -> float:
    """Upper bound of the log-spaced bucket holding ``latency_ms`` (0 -> 0.0).

    The bucket of ``x`` is the smallest bound ``u_k = round6(1.049**k)`` with ``u_k >= x``,
    so ``u_{k-1} < x <= u_k`` and ``u_k / x < 1.05``: reporting the bound overstates a
    latency by less than 5 %. Bounds are rounded to 6 significant digits so they are stable
    floats, usable as a grouping key (and as a MongoDB field value).
    """
    if isinstance(latency_ms, bool) or not isinstance(latency_ms, int | float):
        raise ValueError(f"latency_ms must be a number, got {type(latency_ms).__name__}")
    if not math.isfinite(latency_ms) or latency_ms < 0 or latency_ms > _MAX_LATENCY_MS:
        raise ValueError(f"latency_ms must be in [0, {_MAX_LATENCY_MS:g}], got {latency_ms!r}")
    if latency_ms == 0:
        return 0.0
    k = max(_K_MIN, math.ceil(math.log(latency_ms) / _LOG_GROWTH))
    # The logarithm may be off by an ulp at a boundary: settle on the smallest u_k >= x.
    while _bucket_upper(k) < latency_ms:
        k += 1
    while k > _K_MIN and _bucket_upper(k - 1) >= latency_ms:
        k -= 1
    return _bucket_upper(k)
