"""Cost rollups from per-minute rows (pure, no I/O — see docs/cost-model.md).

The store groups documents in MongoDB/FerretDB with only ``$match``/``$group``/``$sum`` on
the precomputed epoch ``minute`` and hands back plain rows; :func:`allocate` turns them into
cost per any combination of model, tenant, GPU and host, per minute, hour or day:

- a GPU is *reporting* in a minute if it has at least one reading or one token event then;
- that minute costs ``price / 60`` (price in $/h: the mean of its readings' prices, else of
  its token events' prices) — the *allocation*, which adds up to the GPU bill;
- the minute's allocation is split among its usage (model, tenant) by *weighted tokens*
  (``input + k x output``, k = the output weight each event was priced with); the part of a
  usage row from input tokens is ``input_cost_usd``, from output tokens ``output_cost_usd``;
- a reporting minute with zero tokens is *idle*: with a usage dimension (model, tenant) in the
  grouping its cost is a row whose usage values are ``"(idle)"``; grouped by GPU/host only, it
  is the ``idle_cost_usd`` part of that GPU's or host's row;
- energy: the minute's energy (counter deltas when every reading of it has one, else the mean
  power of its readings x 60 s; nothing without a power reading) is split the same way.

Float sums use :func:`math.fsum` (correctly rounded), so a result does not depend on the
order rows come back in; weighted tokens are exact integers (thousandths).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, get_args

from processor.cost import weight_milli

__all__ = [
    "DIMENSIONS",
    "GRANULARITY_MINUTES",
    "GROUP_FIELD",
    "IDLE_GROUP",
    "UNATTRIBUTED",
    "CostRow",
    "Dimension",
    "GpuMinute",
    "Granularity",
    "GroupBy",
    "TokenMinute",
    "allocate",
    "parse_group_by",
    "percentile_from_buckets",
    "period_start_minute",
]

Dimension = Literal["model", "tenant", "gpu", "host"]
DIMENSIONS: Final[tuple[Dimension, ...]] = get_args(Dimension)
# A single dimension, the common case (kept as a name for the API's parameter type).
GroupBy = Dimension
# "all": one bucket for the whole queried window (it starts at the window's first minute).
Granularity = Literal["minute", "hour", "day", "all"]

GRANULARITY_MINUTES: Final[Mapping[str, int]] = {"minute": 1, "hour": 60, "day": 1440}
# The stored document field each grouping reads.
GROUP_FIELD: Final[Mapping[str, str]] = {
    "model": "model", "tenant": "tenant", "gpu": "gpu_key", "host": "host",
}  # fmt: skip
# Usage dimensions describe who used a GPU-minute; idle minutes belong to none of them.
_USAGE: Final = frozenset({"model", "tenant"})
IDLE_GROUP: Final = "(idle)"
# The tenant of token events that carry none (the contract's charset has no parentheses).
UNATTRIBUTED: Final = "(unattributed)"
_MINUTES_PER_HOUR: Final = 60.0
_SECONDS_PER_MINUTE: Final = 60.0
_MILLI: Final = 1000


def parse_group_by(value: str | Sequence[str]) -> tuple[Dimension, ...]:
    """``"tenant,model"`` -> ``("tenant", "model")``; ValueError names a bad or repeated one."""
    names = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
    dims: list[Dimension] = []
    for name in names:
        if name not in DIMENSIONS:
            raise ValueError(
                f"group_by: unknown dimension {name!r}; use one or more of "
                f"{', '.join(DIMENSIONS)} separated by commas"
            )
        if name in dims:
            raise ValueError(f"group_by: {name!r} is given twice")
        dims.append(name)  # checked against DIMENSIONS above
    if not dims:
        raise ValueError("group_by: give at least one of " + ", ".join(DIMENSIONS))
    return tuple(dims)


@dataclass(frozen=True, slots=True)
class GpuMinute:
    """gpu_metrics grouped by (gpu_key, minute)."""

    gpu_key: str
    host: str
    minute: int
    price_sum: float  # sum of the readings' resolved price_per_hour_usd
    readings: int
    power_sum_w: float = 0.0  # sum of the readings' power_draw_w (null ones count 0)
    power_samples: int = 0  # readings with a power_draw_w
    energy_delta_j: float = 0.0  # sum of the readings' energy counter deltas
    energy_deltas: int = 0  # readings with such a delta


@dataclass(frozen=True, slots=True)
class TokenMinute:
    """token_usage grouped by (gpu_key, minute, model, tenant, output weight).

    ``input_tokens`` None: a row without the split (all of ``tokens`` count as input).
    """

    gpu_key: str
    host: str
    model: str
    minute: int
    tokens: int
    requests: int
    cost_usd: float  # sum of the events' (throughput-estimate) cost_usd
    price_sum: float  # sum of the events' price_per_hour_usd
    tenant: str | None = None
    input_tokens: int | None = None
    output_tokens: int = 0
    output_weight: float = 1.0

    @property
    def split(self) -> tuple[int, int]:
        """(input, output) tokens."""
        if self.input_tokens is None:
            return self.tokens, 0
        return self.input_tokens, self.output_tokens

    @property
    def weighted_milli(self) -> int:
        inp, out = self.split
        return inp * _MILLI + out * weight_milli(self.output_weight)


@dataclass(frozen=True, slots=True)
class CostRow:
    group: str  # the values of ``dims``, joined by " / " (one dimension: its value)
    dims: tuple[tuple[str, str], ...]  # ((dimension, value), ...) in group_by order
    period_start_minute: int  # start of the minute/hour/day bucket, as epoch minute
    tokens: int
    input_tokens: int
    output_tokens: int
    requests: int
    cost_usd: float  # allocation: price x reporting time, split by weighted tokens (+ idle)
    input_cost_usd: float  # the part of cost_usd from input tokens
    output_cost_usd: float  # the part of cost_usd from output tokens
    idle_cost_usd: float  # allocation of minutes in which the GPU served no tokens
    throughput_estimate_usd: float  # sum of per-event cost_usd (the live tps estimate)
    energy_j: float  # GPU energy allocated to this row, joules
    p95_latency_ms: float | None  # from latency_hist, None if not given

    @property
    def cost_per_1m_tokens(self) -> float | None:
        return _per_1m(self.cost_usd, self.tokens)

    @property
    def cost_per_1m_input_tokens(self) -> float | None:
        return _per_1m(self.input_cost_usd, self.input_tokens)

    @property
    def cost_per_1m_output_tokens(self) -> float | None:
        return _per_1m(self.output_cost_usd, self.output_tokens)

    @property
    def energy_kwh(self) -> float:
        return self.energy_j / 3.6e6

    @property
    def energy_kwh_per_1m_tokens(self) -> float | None:
        return _per_1m(self.energy_kwh, self.tokens)


def _per_1m(amount: float, tokens: int) -> float | None:
    return amount / tokens * 1_000_000 if tokens else None


def period_start_minute(minute: int, granularity: Granularity, origin_minute: int = 0) -> int:
    """Start of the minute/hour/day (UTC) bucket holding an epoch minute, as epoch minute;
    with ``"all"``, ``origin_minute`` (the window's first minute: one bucket for all)."""
    if granularity == "all":
        return origin_minute
    size = GRANULARITY_MINUTES.get(granularity)
    if size is None:
        raise ValueError(f"granularity must be one of {(*GRANULARITY_MINUTES, 'all')}")
    return minute - minute % size


@dataclass(slots=True)
class _Acc:
    tokens: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0
    cost: list[float] = field(default_factory=list)
    input_cost: list[float] = field(default_factory=list)
    output_cost: list[float] = field(default_factory=list)
    throughput: list[float] = field(default_factory=list)
    idle: list[float] = field(default_factory=list)
    energy: list[float] = field(default_factory=list)


@dataclass(slots=True)
class _Readings:
    hosts: set[str] = field(default_factory=set)
    price_sums: list[float] = field(default_factory=list)
    readings: int = 0
    power_sums: list[float] = field(default_factory=list)
    power_samples: int = 0
    energy_deltas: list[float] = field(default_factory=list)
    energy_delta_count: int = 0

    def energy_j(self) -> float:
        """The minute's energy: counter deltas if every reading has one, else mean power x 60 s."""
        if self.readings > 0 and self.energy_delta_count == self.readings:
            return math.fsum(self.energy_deltas)
        if self.power_samples > 0:
            return math.fsum(self.power_sums) / self.power_samples * _SECONDS_PER_MINUTE
        return 0.0


@dataclass(slots=True)
class _Usage:
    """One (model, tenant) of one GPU-minute."""

    model: str
    tenant: str
    tokens: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    input_milli: int = 0  # weighted input tokens, thousandths
    output_milli: int = 0  # weighted output tokens, thousandths
    requests: int = 0
    cost: list[float] = field(default_factory=list)
    price_sums: list[float] = field(default_factory=list)


@dataclass(slots=True)
class _TokensOfMinute:
    hosts: set[str] = field(default_factory=set)
    usage: dict[tuple[str, str], _Usage] = field(default_factory=dict)


def allocate(
    gpu_minutes: Iterable[GpuMinute],
    token_minutes: Iterable[TokenMinute],
    group_by: Dimension | Sequence[Dimension],
    granularity: Granularity,
    latency_hist: Mapping[tuple[str, int], Mapping[float, int]] | None = None,
    *,
    model: str | None = None,
    tenant: str | None = None,
    origin_minute: int = 0,
) -> list[CostRow]:
    """Cost rows for ``group_by`` (one dimension or several) per ``granularity`` bucket,
    sorted by (period, group).

    In every grouping the ``cost_usd`` of all rows adds up to the allocation of all reporting
    GPU-minutes, and in each row ``cost_usd = input_cost_usd + output_cost_usd +
    idle_cost_usd``. ``latency_hist`` maps ``(group, period_start_minute)`` to a latency
    histogram (``latency_bucket_ms`` of the documents -> count) for ``p95_latency_ms``.
    With ``granularity="all"`` every row's period starts at ``origin_minute``.

    ``model`` / ``tenant``: only that model's (tenant's) usage, in every grouping. Its share
    of a GPU-minute is still its weighted tokens over *all* the GPU's weighted tokens that
    minute (``token_minutes`` must not be filtered), and idle minutes belong to no model or
    tenant, so they are left out: rows carry ``idle_cost_usd == 0`` and no ``"(idle)"`` row.
    """
    dims = parse_group_by([group_by] if isinstance(group_by, str) else group_by)
    period_start_minute(0, granularity)  # ValueError for an unknown granularity
    filtered = model is not None or tenant is not None

    readings: dict[tuple[str, int], _Readings] = {}
    for g in gpu_minutes:
        rd = readings.setdefault((g.gpu_key, g.minute), _Readings())
        rd.hosts.add(g.host)
        rd.price_sums.append(g.price_sum)
        rd.readings += g.readings
        rd.power_sums.append(g.power_sum_w)
        rd.power_samples += g.power_samples
        rd.energy_deltas.append(g.energy_delta_j)
        rd.energy_delta_count += g.energy_deltas

    token_rows: dict[tuple[str, int], _TokensOfMinute] = {}
    for t in token_minutes:
        tk = token_rows.setdefault((t.gpu_key, t.minute), _TokensOfMinute())
        tk.hosts.add(t.host)
        who = (t.model, t.tenant or UNATTRIBUTED)
        u = tk.usage.get(who)
        if u is None:
            u = tk.usage[who] = _Usage(*who)
        inp, out = t.split
        u.tokens += t.tokens
        u.input_tokens += inp
        u.output_tokens += out
        u.input_milli += inp * _MILLI
        u.output_milli += out * weight_milli(t.output_weight)
        u.requests += t.requests
        u.cost.append(t.cost_usd)
        u.price_sums.append(t.price_sum)

    accs: dict[tuple[int, tuple[tuple[str, str], ...]], _Acc] = {}

    def acc(key: tuple[tuple[str, str], ...], period: int) -> _Acc:
        a = accs.get((period, key))
        if a is None:
            a = accs[(period, key)] = _Acc()
        return a

    for key in sorted(readings.keys() | token_rows.keys()):
        gpu_key, minute = key
        r = readings.get(key)
        tm = token_rows.get(key)
        usage = tm.usage if tm is not None else {}
        n_readings = r.readings if r is not None else 0
        n_requests = sum(u.requests for u in usage.values())
        if r is not None and n_readings > 0:
            price = math.fsum(r.price_sums) / n_readings
        elif n_requests > 0:
            price = math.fsum(p for u in usage.values() for p in u.price_sums) / n_requests
        else:
            continue  # not reporting (no reading and no token event this minute)
        allocation = price / _MINUTES_PER_HOUR
        energy = r.energy_j() if r is not None else 0.0
        total_milli = sum(u.input_milli + u.output_milli for u in usage.values())
        # The GPU's host: as its readings say, else as its token events say.
        hosts = r.hosts if r is not None and r.hosts else (tm.hosts if tm is not None else set())
        values = {"gpu": gpu_key, "host": min(hosts)}
        period = period_start_minute(minute, granularity, origin_minute)

        for u in usage.values():
            if (model is not None and u.model != model) or (
                tenant is not None and u.tenant != tenant
            ):
                continue
            values["model"], values["tenant"] = u.model, u.tenant
            a = acc(tuple((d, values[d]) for d in dims), period)
            a.tokens += u.tokens
            a.input_tokens += u.input_tokens
            a.output_tokens += u.output_tokens
            a.requests += u.requests
            a.throughput.extend(u.cost)
            if total_milli > 0:
                a.input_cost.append(allocation * u.input_milli / total_milli)
                a.output_cost.append(allocation * u.output_milli / total_milli)
                a.energy.append(energy * (u.input_milli + u.output_milli) / total_milli)
        if total_milli == 0 and not filtered:
            values["model"] = values["tenant"] = IDLE_GROUP
            a = acc(tuple((d, values[d]) for d in dims), period)
            a.idle.append(allocation)
            a.energy.append(energy)

    rows: list[CostRow] = []
    for period, dim_values in sorted(accs):
        a = accs[(period, dim_values)]
        group = " / ".join(v for _, v in dim_values)
        hist = latency_hist.get((group, period)) if latency_hist is not None else None
        input_cost, output_cost = math.fsum(a.input_cost), math.fsum(a.output_cost)
        idle = math.fsum(a.idle)
        rows.append(
            CostRow(
                group=group,
                dims=dim_values,
                period_start_minute=period,
                tokens=a.tokens,
                input_tokens=a.input_tokens,
                output_tokens=a.output_tokens,
                requests=a.requests,
                cost_usd=math.fsum([*a.input_cost, *a.output_cost, *a.idle]),
                input_cost_usd=input_cost,
                output_cost_usd=output_cost,
                idle_cost_usd=idle,
                throughput_estimate_usd=math.fsum(a.throughput),
                energy_j=math.fsum(a.energy),
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
