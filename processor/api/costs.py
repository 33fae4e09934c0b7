"""GET /api/v1/costs: what tokens cost, by model, GPU or host, per minute, hour or day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel

from processor.api.deps import StoreDep
from processor.documents import time_buckets
from processor.rollup import allocate
from schemas.contracts import epoch_us, ts_range

router = APIRouter(prefix="/api/v1", tags=["costs"])

GroupBy = Literal["model", "gpu", "host"]
Granularity = Literal["minute", "hour", "day"]

# Longest range per granularity: bounds the rows one request can ask the server to group.
_MAX_RANGE: Final[dict[str, timedelta]] = {
    "minute": timedelta(days=7),
    "hour": timedelta(days=93),
    "day": timedelta(days=3 * 366),
}
_GROUP_FIELD: Final = {"model": "model", "gpu": "gpu_key", "host": "host"}
_PERIOD_MINUTES: Final = {"minute": 1, "hour": 60, "day": 1440}


class CostRowOut(BaseModel):
    group: str
    period_start: datetime
    tokens: int
    requests: int
    cost_usd: float
    throughput_cost_usd: float
    idle_cost_usd: float
    cost_per_1k_tokens: float | None
    p95_latency_ms: float | None


class CostTotals(BaseModel):
    tokens: int
    requests: int
    cost_usd: float
    throughput_cost_usd: float
    idle_cost_usd: float
    cost_per_1k_tokens: float | None


class CostReport(BaseModel):
    group_by: GroupBy
    granularity: Granularity
    start: datetime
    end: datetime
    rows: list[CostRowOut]
    totals: CostTotals


def _utc(value: datetime) -> datetime:
    # A time without a zone is read as UTC, like every ts the pipeline stores.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _in_range(name: str, value: datetime) -> datetime:
    """``value`` in UTC if it lies in the contracts' ts range, else a 422 naming ``name``."""
    earliest, latest = ts_range()
    try:
        utc = _utc(value)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-01:00 is past year 9999 in UTC
        utc = None
    if utc is None or not earliest <= utc <= latest:
        raise HTTPException(
            422, f"{name} ({value.isoformat()}) must lie between {earliest:%Y-%m-%dT%H:%M:%SZ} "
                 f"and {latest:%Y-%m-%dT%H:%M:%SZ}, the range events may carry",
        )  # fmt: skip
    return utc


def resolve_range(
    start: datetime | None, end: datetime | None, default: timedelta
) -> tuple[datetime, datetime]:
    """Defaults (the last ``default`` up to now) and sanity checks, as 422s with a reason."""
    end_utc = _in_range("end", end) if end is not None else datetime.now(UTC)
    if start is not None:
        start_utc = _in_range("start", start)
    else:
        # The default never reaches below what any event can carry.
        start_utc = max(end_utc - default, ts_range()[0])
    if start_utc >= end_utc:
        raise HTTPException(422, f"start ({start_utc.isoformat()}) must be before end "
                                 f"({end_utc.isoformat()})")  # fmt: skip
    return start_utc, end_utc


@router.get("/costs", response_model=CostReport)
def costs(
    store: StoreDep,
    group_by: Annotated[GroupBy, Query(description="What each row is about.")] = "model",
    granularity: Annotated[Granularity, Query(description="Size of each time bucket.")] = "hour",
    start: Annotated[
        datetime | None, Query(description="Inclusive, RFC 3339; default end - 24h.")
    ] = None,
    end: Annotated[datetime | None, Query(description="Exclusive, RFC 3339; default now.")] = None,
    host: Annotated[str | None, Query(min_length=1, description="Only this host.")] = None,
    model: Annotated[
        str | None,
        Query(
            min_length=1,
            description="Only this model's usage, in every grouping: its share of each "
            "GPU-minute's allocation; idle minutes belong to no model and are left out.",
        ),
    ] = None,
) -> CostReport:
    """Tokens, allocation cost, idle cost, $ per 1k tokens and p95 latency per group and period."""
    start_utc, end_utc = resolve_range(start, end, timedelta(hours=24))
    if end_utc - start_utc > _MAX_RANGE[granularity]:
        raise HTTPException(
            422, f"range too long for granularity={granularity}: at most "
                 f"{_MAX_RANGE[granularity].days} days",
        )  # fmt: skip
    first = time_buckets(epoch_us(start_utc))["minute"]
    # end is exclusive: a partial last minute is included up to its start.
    last = time_buckets(epoch_us(end_utc) - 1)["minute"]
    match: dict[str, Any] = {"minute": {"$gte": first, "$lte": last}}
    if host is not None:
        match["host"] = host
    gpu_minutes = store.gpu_minutes(match)
    token_minutes = store.token_minutes(match)
    hist_match = dict(match, **({"model": model} if model else {}))
    hist = store.latency_histogram(hist_match, _GROUP_FIELD[group_by], granularity)
    minutes_per_period = _PERIOD_MINUTES[granularity]
    latency = {(g, p * minutes_per_period): b for (g, p), b in hist.items()}
    rows = allocate(gpu_minutes, token_minutes, group_by, granularity, latency, model=model)
    out = [
        CostRowOut(
            group=r.group,
            period_start=datetime.fromtimestamp(r.period_start_minute * 60, UTC),
            tokens=r.tokens,
            requests=r.requests,
            cost_usd=r.cost_usd,
            throughput_cost_usd=r.throughput_cost_usd,
            idle_cost_usd=r.idle_cost_usd,
            cost_per_1k_tokens=r.cost_per_1k_tokens,
            p95_latency_ms=r.p95_latency_ms,
        )
        for r in rows
    ]
    tokens = sum(r.tokens for r in out)
    cost = sum(r.cost_usd for r in out)
    totals = CostTotals(
        tokens=tokens,
        requests=sum(r.requests for r in out),
        cost_usd=cost,
        throughput_cost_usd=sum(r.throughput_cost_usd for r in out),
        idle_cost_usd=sum(r.idle_cost_usd for r in out),
        cost_per_1k_tokens=cost / tokens * 1000 if tokens else None,
    )
    return CostReport(
        group_by=group_by, granularity=granularity, start=start_utc, end=end_utc,
        rows=out, totals=totals,
    )  # fmt: skip
