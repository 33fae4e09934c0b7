"""GET /api/v1/costs: what tokens cost, by model, GPU or host, per minute, hour or day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final

from fastapi import APIRouter, Query
from pydantic import BaseModel

from processor.api.deps import StoreDep
from processor.api.problems import problem_responses
from processor.api.times import Rfc3339, resolve_range
from processor.documents import time_buckets
from processor.exceptions import BadParameter, InvalidParameters
from processor.rollup import Granularity, GroupBy, allocate
from schemas.contracts import epoch_us

router = APIRouter(prefix="/api/v1", tags=["costs"])

# Longest range per granularity: bounds the rows one request can ask the server to group.
_MAX_RANGE: Final[dict[str, timedelta]] = {
    "minute": timedelta(days=7),
    "hour": timedelta(days=93),
    "day": timedelta(days=3 * 366),
}


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


@router.get("/costs", response_model=CostReport, responses=problem_responses(422, 503))
def get_costs(
    store: StoreDep,
    group_by: Annotated[GroupBy, Query(description="What each row is about.")] = "model",
    granularity: Annotated[Granularity, Query(description="Size of each time bucket.")] = "hour",
    start: Annotated[
        Rfc3339 | None, Query(description="Inclusive, RFC 3339; default end - 24h.")
    ] = None,
    end: Annotated[Rfc3339 | None, Query(description="Exclusive, RFC 3339; default now.")] = None,
    # host and model have the contract's bounds: a longer value can match no stored event.
    host: Annotated[
        str | None,
        Query(min_length=1, max_length=253, pattern=r"^[^/\s]+$", description="Only this host."),
    ] = None,
    model: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=256,
            description="Only this model's usage, in every grouping: its share of each "
            "GPU-minute's allocation; idle minutes belong to no model and are left out.",
        ),
    ] = None,
) -> CostReport:
    """Tokens, allocation cost, idle cost, $ per 1k tokens and p95 latency per group and period."""
    start_utc, end_utc = resolve_range(start, end, timedelta(hours=24))
    if end_utc - start_utc > _MAX_RANGE[granularity]:
        raise InvalidParameters(BadParameter(
            "query", "start", f"range too long for granularity={granularity}: at most "
                              f"{_MAX_RANGE[granularity].days} days from start to end",
        ))  # fmt: skip
    first = time_buckets(epoch_us(start_utc))["minute"]
    # end is exclusive: a partial last minute is included up to its start.
    last = time_buckets(epoch_us(end_utc) - 1)["minute"]
    match: dict[str, Any] = {"minute": {"$gte": first, "$lte": last}}
    if host is not None:
        match["host"] = host
    gpu_minutes = store.gpu_minutes(match)
    token_minutes = store.token_minutes(match)
    hist_match = dict(match, **({"model": model} if model else {}))
    latency = store.latency_histogram(hist_match, group_by, granularity)
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
