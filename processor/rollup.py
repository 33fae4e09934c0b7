"""Cost rollups from per-minute rows (pure, no I/O — see docs/cost-model.md).

The store groups documents in MongoDB/FerretDB with only ``$match``/``$group``/``$sum`` on
the precomputed epoch ``minute`` and hands back plain rows; :func:`allocate` turns them into
cost per model, GPU or host per minute, hour or day:

- a GPU is *reporting* in a minute if it has at least one reading or one token event then;
- that minute costs ``price / 60`` (price in $/h: the mean of its readings' prices, else of
  its token events' prices);
- the minute's cost is split among models by token share; a reporting minute with zero
  tokens is *idle* and its whole cost is ``idle_cost_usd``.

Float sums use :func:`math.fsum` (correctly rounded), so a result does not depend on the
order rows come back in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

__all__ = [
    "GRANULARITY_MINUTES",
    "GROUP_FIELD",
    "IDLE_GROUP",
    "CostRow",
    "GpuMinute",
    "Granularity",
    "GroupBy",
    "TokenMinute",
    "allocate",
    "percentile_from_buckets",
    "period_start_minute",
]

GroupBy = Literal["model", "gpu", "host"]
Granularity = Literal["minute", "hour", "day"]

GRANULARITY_MINUTES: Final[Mapping[str, int]] = {"minute": 1, "hour": 60, "day": 1440}
# The stored document field each grouping reads.
GROUP_FIELD: Final[Mapping[str, str]] = {"model": "model", "gpu": "gpu_key", "host": "host"}
IDLE_GROUP: Final = "(idle)"
_MINUTES_PER_HOUR: Final = 60.0


@dataclass(frozen=True, slots=True)
class GpuMinute:
    """gpu_metrics grouped by (gpu_key, minute)."""

    gpu_key: str
    host: str
    minute: int
    price_sum: float  # sum of the readings' resolved price_per_hour_usd
    readings: int


@dataclass(frozen=True, slots=True)
class TokenMinute:
    """token_usage grouped by (gpu_key, minute, model)."""

    gpu_key: str
    host: str
    model: str
    minute: int
    tokens: int
    requests: int
    cost_usd: float  # sum of the events' (throughput-model) cost_usd
    price_sum: float  # sum of the events' price_per_hour_usd


@dataclass(frozen=True, slots=True)
class CostRow:
    group: str  # the model / gpu_key / host value
    period_start_minute: int  # start of the minute/hour/day bucket, as epoch minute
    tokens: int
    requests: int
    cost_usd: float  # allocation cost: price × reporting time, split by token share
    throughput_cost_usd: float  # sum of per-event cost_usd (the tps model)
    idle_cost_usd: float  # allocation cost of minutes in which the GPU served no tokens
    cost_per_1k_tokens: float | None  # cost_usd / tokens × 1000, None when tokens == 0
    p95_latency_ms: float | None  # from latency_hist, None if not given


def period_start_minute(minute: int, granularity: Granularity) -> int:
    """Start of the minute/hour/day (UTC) bucket holding an epoch minute, as epoch minute."""
    size = GRANULARITY_MINUTES.get(granularity)
    if size is None:
        raise ValueError(f"granularity must be one of {tuple(GRANULARITY_MINUTES)}")
    return minute - minute % size


@dataclass(slots=True)
class _Acc:
    tokens: int = 0
    requests: int = 0
    cost: list[float] = field(default_factory=list)
    throughput: list[float] = field(default_factory=list)
    idle: list[float] = field(default_factory=list)


@dataclass(slots=True)
class _Readings:
    hosts: set[str] = field(default_factory=set)
    price_sums: list[float] = field(default_factory=list)
    readings: int = 0


@dataclass(slots=True)
class _ModelMinute:
    tokens: int = 0
    requests: int = 0
    cost: list[float] = field(default_factory=list)
    price_sums: list[float] = field(default_factory=list)


@dataclass(slots=True)
class _TokensOfMinute:
    hosts: set[str] = field(default_factory=set)
    models: dict[str, _ModelMinute] = field(default_factory=dict)


def allocate(
    gpu_minutes: Iterable[GpuMinute],
    token_minutes: Iterable[TokenMinute],
    group_by: GroupBy,
    granularity: Granularity,
    latency_hist: Mapping[tuple[str, int], Mapping[float, int]] | None = None,
    *,
    model: str | None = None,
) -> list[CostRow]:
    """Cost rows for ``group_by`` per ``granularity`` bucket, sorted by (period, group).

    ``group_by="model"``: idle cost is a row of group ``"(idle)"`` (its ``cost_usd`` and
    ``idle_cost_usd`` are both the idle cost). ``"gpu"``/``"host"``: ``cost_usd`` is the
    whole allocation of that GPU/host, ``idle_cost_usd`` the part of it in idle minutes.
    In every grouping the ``cost_usd`` of all rows adds up to the allocation of all
    reporting GPU-minutes. ``latency_hist`` maps ``(group, period_start_minute)`` to a
    latency histogram (``latency_bucket_ms`` of the documents -> count) for
    ``p95_latency_ms``.

    ``model``: only that model's usage, in every grouping. Its share of a GPU-minute is
    still its tokens over *all* the GPU's tokens that minute (``token_minutes`` must not be
    filtered by model), and idle minutes belong to no model, so they are left out: rows
    carry ``idle_cost_usd == 0`` and there is no ``"(idle)"`` row.
    """
    if group_by not in ("model", "gpu", "host"):
        raise ValueError(f"group_by must be 'model', 'gpu' or 'host', got {group_by!r}")
    if granularity not in GRANULARITY_MINUTES:
        raise ValueError(f"granularity must be one of {tuple(GRANULARITY_MINUTES)}")

    readings: dict[tuple[str, int], _Readings] = {}
    for g in gpu_minutes:
        rd = readings.setdefault((g.gpu_key, g.minute), _Readings())
        rd.hosts.add(g.host)
        rd.price_sums.append(g.price_sum)
        rd.readings += g.readings

    token_rows: dict[tuple[str, int], _TokensOfMinute] = {}
    for t in token_minutes:
        tk = token_rows.setdefault((t.gpu_key, t.minute), _TokensOfMinute())
        tk.hosts.add(t.host)
        mm = tk.models.setdefault(t.model, _ModelMinute())
        mm.tokens += t.tokens
        mm.requests += t.requests
        mm.cost.append(t.cost_usd)
        mm.price_sums.append(t.price_sum)

    accs: dict[tuple[int, str], _Acc] = {}

    def acc(group: str, period: int) -> _Acc:
        a = accs.get((period, group))
        if a is None:
            a = accs[(period, group)] = _Acc()
        return a

    for key in sorted(readings.keys() | token_rows.keys()):
        gpu_key, minute = key
        r = readings.get(key)
        tm = token_rows.get(key)
        models = tm.models if tm is not None else {}
        n_readings = r.readings if r is not None else 0
        n_requests = sum(m.requests for m in models.values())
        if r is not None and n_readings > 0:
            price = math.fsum(r.price_sums) / n_readings
        elif n_requests > 0:
            price = math.fsum(p for m in models.values() for p in m.price_sums) / n_requests
        else:
            continue  # not reporting (no reading and no token event this minute)
        allocation = price / _MINUTES_PER_HOUR
        total_tokens = sum(m.tokens for m in models.values())
        # The GPU's host: as its readings say, else as its token events say.
        hosts = r.hosts if r is not None and r.hosts else (tm.hosts if tm is not None else set())
        host = min(hosts)
        period = period_start_minute(minute, granularity)

        for name, m in models.items():
            if model is not None and name != model:
                continue
            group = name if group_by == "model" else gpu_key if group_by == "gpu" else host
            a = acc(group, period)
            a.tokens += m.tokens
            a.requests += m.requests
            a.throughput.extend(m.cost)
            if total_tokens > 0:
                a.cost.append(allocation * m.tokens / total_tokens)
        if total_tokens == 0 and model is None:
            group = IDLE_GROUP if group_by == "model" else gpu_key if group_by == "gpu" else host
            a = acc(group, period)
            a.cost.append(allocation)
            a.idle.append(allocation)

    rows: list[CostRow] = []
    for period, group in sorted(accs):
        a = accs[(period, group)]
        cost = math.fsum(a.cost)
        hist = latency_hist.get((group, period)) if latency_hist is not None else None
        rows.append(
            CostRow(
                group=group,
                period_start_minute=period,
                tokens=a.tokens,
                requests=a.requests,
                cost_usd=cost,
                throughput_cost_usd=math.fsum(a.throughput),
                idle_cost_usd=math.fsum(a.idle),
                cost_per_1k_tokens=cost / a.tokens * 1000 if a.tokens else None,
                p95_latency_ms=percentile_from_buckets(hist, 0.95) if hist else None,
            )
        )
    return rows


# -- latency histograms -------------------------------------------------------------------


def percentile_from_buckets(buckets: Mapping[float, int], q: float) -> float | None:
    """The ``q``-quantile (0 <= q <= 1) of a histogram, as a bucket upper bound.

    Nearest rank: the smallest bucket bound whose cumulative count reaches
    ``ceil(q * total)`` (at least 1). With ``processor.documents.latency_bucket_ms`` buckets
    the result is at or above the exact nearest-rank percentile by less than 5 %. None for an empty
    histogram.
    """
    if not 0 <= q <= 1:
        raise ValueError(f"q must be in [0, 1], got {q!r}")
    total = 0
    for upper, count in buckets.items():
        if count < 0:
            raise ValueError(f"bucket {upper!r} has a negative count {count}")
        total += count
    if total == 0:
        return None
    # round(): 0.95 * 100 is 95.00000000000001 on some paths; ranks are integers.
    rank = max(1, math.ceil(round(q * total, 9)))
    seen = 0
    for upper in sorted(buckets):
        seen += buckets[upper]
        if seen >= rank:
            return upper
    raise AssertionError("unreachable: cumulative count reaches total")  # pragma: no cover
