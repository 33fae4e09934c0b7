"""Stored document shapes: time buckets, derived fields, what is copied and what is not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from devtools.events import gpu_event, token_event
from processor.cost import ReadingPrice, TokenCost
from processor.documents import gpu_metrics_doc, time_buckets, token_usage_doc
from schemas.contracts import epoch_us, format_ts, from_epoch_us, parse_ts


def to_ts_us(ts: str) -> int:
    return epoch_us(parse_ts(ts))


def test_ts_us_is_exact_and_zone_aware() -> None:
    assert to_ts_us("1970-01-01T00:00:00Z") == 0
    assert to_ts_us("1970-01-01T01:00:00.000001+01:00") == 1
    assert to_ts_us("2026-11-23T10:00:00.123456Z") % 1_000_000 == 123456
    assert from_epoch_us(to_ts_us("2026-11-23T10:00:00.5Z")) == datetime(
        2026, 11, 23, 10, 0, 0, 500000, tzinfo=UTC
    )


def test_one_formatter_for_the_contracts_ts() -> None:
    moment = datetime(2026, 11, 23, 10, 0, 0, 250000, tzinfo=UTC)
    assert format_ts(moment) == "2026-11-23T10:00:00.250000Z"
    assert format_ts(moment.astimezone(timezone(timedelta(hours=2)))) == format_ts(moment)
    assert parse_ts(format_ts(moment)) == moment
    with pytest.raises(ValueError, match="no zone"):
        format_ts(datetime(2026, 11, 23, 10, 0, 0))


def test_time_buckets_are_epoch_minute_hour_day() -> None:
    ts_us = to_ts_us("2026-11-23T10:59:59.999999Z")
    buckets = time_buckets(ts_us)
    assert buckets["minute"] == ts_us // 60_000_000
    assert buckets["hour"] == buckets["minute"] // 60
    assert buckets["day"] == buckets["minute"] // 1440
    assert time_buckets(to_ts_us("2026-11-23T11:00:00Z"))["minute"] == buckets["minute"] + 1


def test_token_doc_carries_cost_and_provenance() -> None:
    event = token_event("h", "GPU-1", 0, 200, 50, model="通义千问-72B", latency_ms=812.0)
    event["request_id"] = "r-1"
    cost = TokenCost(
        tokens=250, tps=100.0, price_per_hour_usd=3.6, price_source="event",
        cost_per_token=1e-5, cost_usd=0.0025, input_tokens=200, output_tokens=50,
        output_weight=4.0, weighted_tokens=400.0, weighted_tps=160.0,
        cost_per_input_token=6.25e-6, input_cost_usd=0.00125, output_cost_usd=0.00125,
    )  # fmt: skip
    doc = token_usage_doc(
        event, gpu_key="h/GPU-1", ts_us=to_ts_us(event["ts"]), cost=cost, partition=7, offset=42
    )
    assert doc["_id"] == event["event_id"]
    assert "event_id" not in doc
    assert doc["gpu_key"] == "h/GPU-1"
    assert (doc["kafka_partition"], doc["kafka_offset"]) == (7, 42)
    assert doc["model"] == "通义千问-72B"
    assert doc["request_id"] == "r-1"
    assert doc["tokens"] == 250
    assert doc["cost_per_token"] == 1e-5
    assert doc["cost_usd"] == 0.0025
    assert (doc["input_cost_usd"], doc["output_cost_usd"]) == (0.00125, 0.00125)
    assert (doc["output_weight"], doc["weighted_tokens"]) == (4.0, 400.0)
    assert doc["cost_per_output_token"] == 2.5e-5
    assert doc["latency_bucket_ms"] == pytest.approx(812.0, rel=0.05)
    assert doc["latency_bucket_ms"] >= 812.0
    assert "ttft_ms" not in doc  # optional fields absent from the event stay absent
    assert doc["tp_follower"] == 0  # not a tensor-parallel share: it counts its request


def test_only_rank_0_of_a_tensor_parallel_request_counts_the_request() -> None:
    cost = TokenCost(tokens=1, tps=1.0, price_per_hour_usd=1.0, price_source="event",
                     cost_per_token=None, cost_usd=0.0)  # fmt: skip
    followers = []
    for rank in range(3):
        event = {**token_event("h", f"GPU-{rank}", 0, 1, 0), "tp_rank": rank, "tp_size": 3}
        doc = token_usage_doc(event, gpu_key=f"h/GPU-{rank}", ts_us=0, cost=cost, partition=0,
                              offset=rank)  # fmt: skip
        assert (doc["tp_rank"], doc["tp_size"]) == (rank, 3)
        followers.append(doc["tp_follower"])
    assert followers == [0, 1, 1]  # events - followers = 1 request


def test_gpu_doc_keeps_the_events_own_price_apart_from_the_resolved_one() -> None:
    event = gpu_event("h", "GPU-1", 0)
    doc = gpu_metrics_doc(
        event,
        gpu_key="h/GPU-1",
        ts_us=to_ts_us(event["ts"]),
        price=ReadingPrice(1.2, "price_map"),
        partition=0,
        offset=0,
    )
    assert doc["event_price_per_hour_usd"] is None
    assert (doc["price_per_hour_usd"], doc["price_source"]) == (1.2, "price_map")
    assert doc["unsupported_fields"] == ["temperature_gpu_c", "clock_sm_mhz"]
    assert doc["temperature_gpu_c"] is None
    assert doc["power_samples"] == 1
    assert doc["energy_delta_j"] is None
    priced = gpu_event("h", "GPU-1", 0, price_per_hour_usd=3.6)
    doc = gpu_metrics_doc(
        priced,
        gpu_key="h/GPU-1",
        ts_us=to_ts_us(priced["ts"]),
        price=ReadingPrice(3.6, "event"),
        partition=0,
        offset=1,
    )
    assert doc["event_price_per_hour_usd"] == 3.6
