"""GET /api/v1/costs: what tokens cost, by model, tenant, GPU or host (or a combination),
per minute, hour or day; as JSON or CSV."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from processor.api.deps import SettingsDep, StoreDep
from processor.api.problems import problem_responses
from processor.api.times import EndQuery, HostFilter, Start24hQuery, WindowQuery, resolve_range
from processor.documents import time_buckets
from processor.exceptions import BadParameter, InvalidParameters
from processor.rollup import (
    DIMENSIONS,
    CostRow,
    Dimension,
    Granularity,
    allocate,
    parse_group_by,
)
from processor.settings import ProcessorSettings
from schemas.contracts import epoch_us

router = APIRouter(prefix="/api/v1", tags=["costs"])

# Longest range per granularity: bounds the rows one request can ask the server to group.
_MAX_RANGE: Final[dict[str, timedelta]] = {
    "minute": timedelta(days=7),
    "hour": timedelta(days=93),
    "day": timedelta(days=3 * 366),
    "all": timedelta(days=3 * 366),
}
_DIM = "(model|tenant|gpu|host)"
_CSV_TYPE: Final = "text/csv"


class CostRowOut(BaseModel):
    """One row. Money in USD, energy in kWh; the headline is ``cost_usd``."""

    group: str = Field(description="The row's values of the group_by dimensions, joined by ' / '.")
    model: str | None = Field(
        None, description="With model in group_by: the model, or (idle) for idle GPU time."
    )
    tenant: str | None = Field(
        None,
        description="With tenant in group_by: the tenant, (unattributed) for usage without "
        "one, or (idle).",
    )
    gpu: str | None = Field(None, description="With gpu in group_by: the GPU's host/gpu_uuid.")
    host: str | None = Field(None, description="With host in group_by: the host.")
    period_start: datetime
    tokens: int = Field(description="Input + output tokens.")
    input_tokens: int
    output_tokens: int
    requests: int
    cost_usd: float = Field(
        description="Allocation cost (the number to quote): GPU price x reporting time, split "
        "by weighted tokens; all rows add up to the GPU bill. = input + output + idle cost."
    )
    input_cost_usd: float = Field(description="The part of cost_usd from input tokens.")
    output_cost_usd: float = Field(description="The part of cost_usd from output tokens.")
    idle_cost_usd: float = Field(description="Allocation of GPU-minutes that served no tokens.")
    cost_per_1m_tokens: float | None = Field(
        description="cost_usd per million tokens (null without tokens)."
    )
    cost_per_1m_input_tokens: float | None = Field(
        description="input_cost_usd per million input tokens."
    )
    cost_per_1m_output_tokens: float | None = Field(
        description="output_cost_usd per million output tokens."
    )
    throughput_estimate_usd: float = Field(
        description="Sum of the events' own cost_usd: the live estimate each event got from its "
        "GPU's throughput in the trailing window (docs/cost-model.md: which number to quote)."
    )
    energy_kwh: float = Field(description="GPU energy allocated to this row, kWh (before PUE).")
    energy_kwh_per_1m_tokens: float | None
    energy_cost_usd: float | None = Field(
        None, description="energy_kwh x PUE x ENERGY_PRICE_USD_PER_KWH; null when unset."
    )
    co2e_g: float | None = Field(
        None, description="energy_kwh x PUE x CARBON_INTENSITY_G_PER_KWH; null when unset."
    )
    p95_latency_ms: float | None


class CostTotals(BaseModel):
    tokens: int
    input_tokens: int
    output_tokens: int
    requests: int
    cost_usd: float = Field(description="The whole allocation: the GPU bill of the window.")
    input_cost_usd: float
    output_cost_usd: float
    idle_cost_usd: float
    idle_share: float | None = Field(description="idle_cost_usd / cost_usd (null if no cost).")
    cost_per_1m_tokens: float | None = Field(
        description="cost_usd (idle included) per million tokens: the fully loaded price."
    )
    cost_per_1m_input_tokens: float | None
    cost_per_1m_output_tokens: float | None
    throughput_estimate_usd: float
    energy_kwh: float
    energy_kwh_per_1m_tokens: float | None
    energy_cost_usd: float | None
    co2e_g: float | None


class CostReport(BaseModel):
    group_by: list[Dimension]
    granularity: Granularity
    start: datetime
    end: datetime
    rows: list[CostRowOut]
    totals: CostTotals


def _per_1m(amount: float, tokens: int) -> float | None:
    return amount / tokens * 1_000_000 if tokens else None


def _energy_extras(kwh: float, settings: ProcessorSettings) -> dict[str, float | None]:
    facility_kwh = kwh * settings.pue
    price, intensity = settings.energy_price_usd_per_kwh, settings.carbon_intensity_g_per_kwh
    return {
        "energy_cost_usd": None if price is None else facility_kwh * price,
        "co2e_g": None if intensity is None else facility_kwh * intensity,
    }


def _row_out(r: CostRow, settings: ProcessorSettings) -> CostRowOut:
    return CostRowOut(
        group=r.group,
        **dict(r.dims),
        period_start=datetime.fromtimestamp(r.period_start_minute * 60, UTC),
        tokens=r.tokens,
        input_tokens=r.input_tokens,
        output_tokens=r.output_tokens,
        requests=r.requests,
        cost_usd=r.cost_usd,
        input_cost_usd=r.input_cost_usd,
        output_cost_usd=r.output_cost_usd,
        idle_cost_usd=r.idle_cost_usd,
        cost_per_1m_tokens=r.cost_per_1m_tokens,
        cost_per_1m_input_tokens=r.cost_per_1m_input_tokens,
        cost_per_1m_output_tokens=r.cost_per_1m_output_tokens,
        throughput_estimate_usd=r.throughput_estimate_usd,
        energy_kwh=r.energy_kwh,
        energy_kwh_per_1m_tokens=r.energy_kwh_per_1m_tokens,
        **_energy_extras(r.energy_kwh, settings),
        p95_latency_ms=r.p95_latency_ms,
    )


def _totals(rows: list[CostRowOut], settings: ProcessorSettings) -> CostTotals:
    tokens = sum(r.tokens for r in rows)
    inp = sum(r.input_tokens for r in rows)
    out = sum(r.output_tokens for r in rows)
    cost = sum(r.cost_usd for r in rows)
    input_cost = sum(r.input_cost_usd for r in rows)
    output_cost = sum(r.output_cost_usd for r in rows)
    idle = sum(r.idle_cost_usd for r in rows)
    kwh = sum(r.energy_kwh for r in rows)
    return CostTotals(
        tokens=tokens,
        input_tokens=inp,
        output_tokens=out,
        requests=sum(r.requests for r in rows),
        cost_usd=cost,
        input_cost_usd=input_cost,
        output_cost_usd=output_cost,
        idle_cost_usd=idle,
        idle_share=idle / cost if cost else None,
        cost_per_1m_tokens=_per_1m(cost, tokens),
        cost_per_1m_input_tokens=_per_1m(input_cost, inp),
        cost_per_1m_output_tokens=_per_1m(output_cost, out),
        throughput_estimate_usd=sum(r.throughput_estimate_usd for r in rows),
        energy_kwh=kwh,
        energy_kwh_per_1m_tokens=_per_1m(kwh, tokens),
        **_energy_extras(kwh, settings),
    )


# CSV columns: the dimensions first (those grouped by), then every number of a row.
_CSV_NUMBERS: Final = tuple(
    name for name in CostRowOut.model_fields if name not in {"group", *DIMENSIONS}
)


def _csv(report: CostReport, fields: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")  # RFC 4180
    writer.writerow(fields)
    for row in report.rows:
        values = row.model_dump(mode="json")
        writer.writerow(["" if values[f] is None else values[f] for f in fields])
    return buffer.getvalue()


def _csv_fields(dims: tuple[Dimension, ...], fields: str | None) -> list[str]:
    available = [*dims, *_CSV_NUMBERS]
    if fields is None:
        return available
    chosen = [f.strip() for f in fields.split(",") if f.strip()]
    unknown = [f for f in chosen if f not in available]
    if unknown or not chosen:
        raise InvalidParameters(BadParameter(
            "query", "fields", f"unknown CSV field(s) {', '.join(map(repr, unknown))}; "
            f"choose among: {', '.join(available)}" if unknown else "name at least one field",
        ))  # fmt: skip
    return chosen


@router.get(
    "/costs",
    response_model=CostReport,
    responses={
        **problem_responses(422, 503),
        200: {"content": {_CSV_TYPE: {"schema": {"type": "string"}}}},
    },
)
def get_costs(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    group_by: Annotated[
        str,
        Query(
            pattern=rf"^{_DIM}(,{_DIM}){{0,3}}$",
            description="What each row is about: model, tenant, gpu or host, or several "
            "separated by commas (tenant,model).",
        ),
    ] = "model",
    granularity: Annotated[
        Granularity,
        Query(description="Size of each time bucket; all = one bucket for the whole window."),
    ] = "hour",
    start: Start24hQuery = None,
    end: EndQuery = None,
    window: WindowQuery = None,
    # model has the contract's bound: a longer value can match no stored event.
    host: HostFilter = None,
    model: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=256,
            description="Only this model's usage, in every grouping: its share of each "
            "GPU-minute's allocation; idle minutes belong to no model and are left out.",
        ),
    ] = None,
    tenant: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=128,
            description="Only this tenant's usage ((unattributed): usage without a tenant), "
            "like model.",
        ),
    ] = None,
    format: Annotated[
        Literal["json", "csv"] | None,
        Query(description="json (default) or csv; Accept: text/csv also selects CSV."),
    ] = None,
    fields: Annotated[
        str | None,
        Query(
            max_length=1000,
            description="CSV only: the columns, comma-separated (default: all of them).",
        ),
    ] = None,
) -> Any:
    """Tokens, allocation cost (input/output/idle), $ per 1M tokens, energy and p95 latency
    per group and period."""
    try:
        dims = parse_group_by(group_by)
    except ValueError as exc:
        raise InvalidParameters(BadParameter("query", "group_by", str(exc))) from None
    as_csv = format == "csv" or (
        format is None and _CSV_TYPE in request.headers.get("accept", "").lower()
    )
    columns = _csv_fields(dims, fields) if as_csv else []
    start_utc, end_utc = resolve_range(start, end, timedelta(hours=24), window=window)
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
    if tenant is not None:
        hist_match["tenant"] = None if tenant == "(unattributed)" else tenant
    latency = store.latency_histogram(hist_match, dims, granularity, first)
    rows = allocate(
        gpu_minutes, token_minutes, dims, granularity, latency,
        model=model, tenant=tenant, origin_minute=first,
    )  # fmt: skip
    out = [_row_out(r, settings) for r in rows]
    report = CostReport(
        group_by=list(dims), granularity=granularity, start=start_utc, end=end_utc,
        rows=out, totals=_totals(out, settings),
    )  # fmt: skip
    if as_csv:
        stamp = f"{start_utc:%Y%m%dT%H%MZ}-{end_utc:%Y%m%dT%H%MZ}"
        return Response(
            _csv(report, columns),
            media_type=f"{_CSV_TYPE}; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="costs-{stamp}.csv"',
            },
        )
    return report
