"""The cost model: what one token costs on one GPU (pure, no I/O — see docs/cost-model.md).

Per token event ``e`` on GPU ``g`` with a trailing event-time window ``W`` and the output weight
``k`` of e's model (an output token costs ``k`` input tokens)::

    weighted(e)             = input_tokens + k * output_tokens
    weighted_tps(e)         = weighted tokens of g's events, ts in (e.ts - W, e.ts], seen by e / W
    cost_per_input_token(e) = (price_per_hour_usd / 3600) / weighted_tps(e)
    input_cost_usd(e)       = cost_per_input_token(e) * input_tokens
    output_cost_usd(e)      = cost_per_input_token(e) * k * output_tokens
    cost_usd(e)             = cost_per_input_token(e) * weighted(e)

Timestamps are integer microseconds (exact window edges); weighted tokens are Python ints in
thousandths (``k`` has at most three decimals), so window sums are exact; only the last
divisions are floats. State per GPU is bounded by the lateness allowance
``L``: with ``M`` the newest timestamp seen for the GPU, an entry is retained while
``ts > M - W - L`` and a window never reaches below that floor, so results do not depend on
when eviction runs and a state rebuilt from stored documents equals the live one.

    >>> model = CostModel(PriceBook(0.85))
    >>> model.on_gpu_metrics("h1/GPU-1", "NVIDIA A100-SXM4-40GB", 3.6, event_id="r1", ts_us=0).price
    (3.6, 'event')
    >>> model.on_token_usage("h1/GPU-1", "e1", 60_000_000, 6_000).tps
    100.0
    >>> c = model.on_token_usage("h1/GPU-1", "e2", 61_000_000, 100, 50, output_weight=4.0)
    >>> c.weighted_tokens, c.input_cost_usd < c.output_cost_usd
    (300.0, True)
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

__all__ = [
    "CostModel",
    "OutputWeights",
    "PriceBook",
    "ReadingPrice",
    "TokenCost",
    "cost_per_token",
    "weight_milli",
]

US_PER_S: Final = 1_000_000
SECONDS_PER_HOUR: Final = 3600.0
# What a price_source may say: the event's own price, the map by gpu_name, the default.
PRICE_SOURCES: Final[tuple[str, ...]] = ("event", "price_map", "default")

# Compact the per-GPU lists once this many evicted entries sit at their head (and they are
# at least half the list): eviction stays amortised O(1) and memory stays O(retained).
_COMPACT_MIN: Final = 1024


# Output weights have at most this many decimals: weighted tokens are exact integers in 1/1000.
_WEIGHT_SCALE: Final = 1000
MAX_OUTPUT_WEIGHT: Final = 1000.0


@dataclass(frozen=True, slots=True)
class TokenCost:
    """The cost of one token event (throughput model), as stored on its document."""

    tokens: int  # input + output, as counted
    tps: float  # tokens (input + output) per second in the window
    price_per_hour_usd: float
    price_source: str  # "event" | "price_map" | "default"
    cost_per_token: float | None  # cost_usd / tokens; None without tokens or throughput
    cost_usd: float
    input_tokens: int = 0
    output_tokens: int = 0
    output_weight: float = 1.0  # k: one output token costs k input tokens
    weighted_tokens: float = 0.0  # input + k * output
    weighted_tps: float = 0.0  # weighted tokens per second in the window
    cost_per_input_token: float | None = None  # None when weighted_tps == 0
    input_cost_usd: float = 0.0
    output_cost_usd: float = 0.0

    @property
    def cost_per_output_token(self) -> float | None:
        p = self.cost_per_input_token
        return None if p is None else p * self.output_weight


@dataclass(frozen=True, slots=True)
class ReadingPrice:
    """What the cost model made of one gpu.metrics reading."""

    price_per_hour_usd: float
    price_source: str
    # Energy the GPU's counter says it used since its previous reading (joules), and over how
    # long; None unless this reading and the GPU's latest one both carry the counter, this one
    # is newer, and the counter did not go backwards (a driver reset).
    energy_delta_j: float | None = None
    energy_interval_s: float | None = None

    @property
    def price(self) -> tuple[float, str]:
        """``(price_per_hour_usd, price_source)``."""
        return self.price_per_hour_usd, self.price_source


def weight_milli(output_weight: float) -> int:
    """``k`` in thousandths, exactly; ValueError unless 0 < k <= 1000 with <= 3 decimals."""
    if isinstance(output_weight, bool) or not isinstance(output_weight, int | float):
        raise ValueError(f"an output weight must be a number, got {type(output_weight).__name__}")
    if not math.isfinite(output_weight) or not 0 < output_weight <= MAX_OUTPUT_WEIGHT:
        raise ValueError(
            f"an output weight must be in (0, {MAX_OUTPUT_WEIGHT:g}], got {output_weight!r}"
        )
    milli = round(output_weight * _WEIGHT_SCALE)
    if abs(milli - output_weight * _WEIGHT_SCALE) > 1e-6 or milli == 0:
        raise ValueError(f"an output weight has at most 3 decimals, got {output_weight!r}")
    return milli


class OutputWeights:
    """``k`` per model: how many input tokens one output token is worth (docs/cost-model.md)."""

    __slots__ = ("_by_model", "_default")

    def __init__(self, default: float = 1.0, by_model: Mapping[str, float] | None = None) -> None:
        weight_milli(default)
        self._default = float(default)
        self._by_model: dict[str, float] = {}
        for model, k in (by_model or {}).items():
            try:
                weight_milli(k)
            except ValueError as exc:
                raise ValueError(f"model {model!r}: {exc}") from None
            self._by_model[model] = float(k)

    @property
    def default(self) -> float:
        return self._default

    def of(self, model: str) -> float:
        return self._by_model.get(model, self._default)


def _check_price(name: str, value: object) -> float:
    """A price must be a finite real number >= 0 (bool is not a number here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {type(value).__name__}")
    price = float(value)
    if not math.isfinite(price) or price < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return price


def _seconds_to_us(name: str, value: object, *, allow_zero: bool) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number of seconds, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    us = round(value * US_PER_S)
    if allow_zero:
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value!r}")
    elif value <= 0 or us <= 0:
        raise ValueError(f"{name} must be > 0 (at least 1 µs), got {value!r}")
    return us


def cost_per_token(price_per_hour_usd: float, tps: float) -> float | None:
    """``(price_per_hour_usd / 3600) / tps``; None when ``tps == 0`` (no throughput, no price).

    >>> cost_per_token(3.6, 100.0)  # 0.001 $/s over 100 tokens/s
    1e-05
    """
    if tps < 0 or not math.isfinite(tps):
        raise ValueError(f"tps must be a finite number >= 0, got {tps!r}")
    if tps == 0:
        return None
    return (price_per_hour_usd / SECONDS_PER_HOUR) / tps


class PriceBook:
    """Resolves a GPU's price: the event's own price, else the map by ``gpu_name``, else default.

    ``gpu_name`` is matched exactly (it is the key of the processor's price map).
    """

    __slots__ = ("_by_name", "_default")

    def __init__(self, default_usd: float, by_gpu_name: Mapping[str, float] | None = None) -> None:
        self._default = _check_price("default_usd", default_usd)
        self._by_name: dict[str, float] = {}
        for gpu_name, price in (by_gpu_name or {}).items():
            if not isinstance(gpu_name, str):
                raise ValueError(f"by_gpu_name keys must be str, got {gpu_name!r}")
            self._by_name[gpu_name] = _check_price(f"by_gpu_name[{gpu_name!r}]", price)

    @property
    def default_usd(self) -> float:
        return self._default

    def resolve(self, event_price: float | None, gpu_name: str | None) -> tuple[float, str]:
        """``(price_per_hour_usd, price_source)`` with source ``event|price_map|default``."""
        if event_price is not None:
            return _check_price("event_price", event_price), "event"
        if gpu_name is not None:
            mapped = self._by_name.get(gpu_name)
            if mapped is not None:
                return mapped, "price_map"
        return self._default, "default"


@dataclass(frozen=True, slots=True)
class _Usage:
    input_tokens: int
    output_tokens: int
    k_milli: int

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def weighted_milli(self) -> int:
        return self.input_tokens * _WEIGHT_SCALE + self.output_tokens * self.k_milli


class _GpuState:
    """Retained token events of one GPU, sorted by ts, with running (prefix) sums of tokens.

    Physical layout: parallel lists ``ts``/``ids``/``cum``/``raw`` sorted by ``(ts, arrival)``;
    ``cum[i]`` is ``base`` plus the weighted tokens (in thousandths) of entries ``0..i``, ``raw[i]``
    ``raw_base`` plus their plain token counts. Entries before ``head`` are
    evicted (they stay until compaction; sums are differences of ``cum`` so they cancel).

    - in-order append: O(1); window sum: two bisections, O(log n);
    - out-of-order insert: O(log n + k), k = retained entries with a later ts (small for jitter);
    - eviction: amortised O(1) per event.
    """

    __slots__ = (
        "base", "cum", "energy_mj", "head", "id_set", "ids", "max_ts", "price", "price_source",
        "raw", "raw_base", "reading", "ts",
    )  # fmt: skip

    def __init__(self, price: float, price_source: str) -> None:
        self.ts: list[int] = []
        self.ids: list[str] = []
        self.cum: list[int] = []
        self.raw: list[int] = []
        self.base = 0
        self.raw_base = 0
        # Energy counter (mJ) of the latest reading; None if it had none.
        self.energy_mj: int | None = None
        self.head = 0
        self.id_set: set[str] = set()
        self.max_ts: int | None = None
        self.price = price
        self.price_source = price_source
        # (ts_us, event_id) of the reading the price comes from; None: no reading yet.
        self.reading: tuple[int, str] | None = None

    def evict_through(self, floor: int) -> None:
        """Drop entries with ``ts <= floor`` (they are sorted, so a prefix)."""
        ts, ids, head, n = self.ts, self.ids, self.head, len(self.ts)
        while head < n and ts[head] <= floor:
            self.id_set.discard(ids[head])
            head += 1
        self.head = head
        if head >= _COMPACT_MIN and head * 2 >= n:
            self.base = self.cum[head - 1]
            self.raw_base = self.raw[head - 1]
            del self.ts[:head], self.ids[:head], self.cum[:head], self.raw[:head]
            self.head = 0

    def insert(self, ts_us: int, event_id: str, weighted: int, tokens: int) -> None:
        ts, cum, raw = self.ts, self.cum, self.raw
        if not ts or ts[-1] <= ts_us:  # in order: the common case
            ts.append(ts_us)
            self.ids.append(event_id)
            cum.append((cum[-1] if cum else self.base) + weighted)
            raw.append((raw[-1] if raw else self.raw_base) + tokens)
        else:  # late: after every retained entry with ts <= ts_us (arrival order on ties)
            pos = bisect_right(ts, ts_us, self.head)
            ts.insert(pos, ts_us)
            self.ids.insert(pos, event_id)
            cum.insert(pos, (cum[pos - 1] if pos > 0 else self.base) + weighted)
            raw.insert(pos, (raw[pos - 1] if pos > 0 else self.raw_base) + tokens)
            if weighted:
                cum[pos + 1 :] = [c + weighted for c in cum[pos + 1 :]]
            if tokens:
                raw[pos + 1 :] = [c + tokens for c in raw[pos + 1 :]]
        self.id_set.add(event_id)

    def sum_between(self, lo_excl: int, hi_incl: int) -> tuple[int, int]:
        """(weighted thousandths, tokens) of retained entries with ``lo_excl < ts <= hi_incl``."""
        if hi_incl <= lo_excl:
            return 0, 0
        i = bisect_right(self.ts, lo_excl, self.head)
        j = bisect_right(self.ts, hi_incl, i)
        if j <= i:
            return 0, 0
        weighted = self.cum[j - 1] - (self.cum[i - 1] if i > 0 else self.base)
        tokens = self.raw[j - 1] - (self.raw[i - 1] if i > 0 else self.raw_base)
        return weighted, tokens


class CostModel:
    """State for the GPUs of the partitions one replica owns.

    Not thread-safe: one consumer loop owns it. ``gpu_key`` is ``"{host}/{gpu_uuid}"``.

    Rules (docs/cost-model.md):

    - window of ``e``: retained entries with ``max(e.ts - W, M - W - L) < ts <= e.ts``, where
      ``M`` is the newest ts seen for the GPU including ``e``; ``e`` itself is added first
      (unless its ``event_id`` is already retained, or ``e.ts <= M - W - L``);
    - retained: entries with ``ts > M - W - L`` (so results do not depend on when eviction runs);
    - price: resolved from the GPU's latest gpu.metrics event by ``(ts, event_id)``, default
      before any.
    """

    __slots__ = ("_gpus", "_lateness_us", "_prices", "_window_s", "_window_us")

    def __init__(
        self, prices: PriceBook, window_s: float = 60.0, lateness_s: float = 300.0
    ) -> None:
        if not isinstance(prices, PriceBook):
            raise ValueError(f"prices must be a PriceBook, got {type(prices).__name__}")
        self._prices = prices
        self._window_us = _seconds_to_us("window_s", window_s, allow_zero=False)
        self._lateness_us = _seconds_to_us("lateness_s", lateness_s, allow_zero=True)
        # The W of tps = tokens / W, from the exact µs value so the edge and divisor agree.
        self._window_s = self._window_us / US_PER_S
        self._gpus: dict[str, _GpuState] = {}

    # -- configuration ------------------------------------------------------------------

    @property
    def window_us(self) -> int:
        return self._window_us

    @property
    def lateness_us(self) -> int:
        return self._lateness_us

    # -- events -------------------------------------------------------------------------

    def _state(self, gpu_key: str) -> _GpuState:
        state = self._gpus.get(gpu_key)
        if state is None:
            state = _GpuState(self._prices.default_usd, "default")
            self._gpus[gpu_key] = state
        return state

    def on_gpu_metrics(
        self,
        gpu_key: str,
        gpu_name: str | None,
        price_per_hour_usd: float | None,
        *,
        event_id: str,
        ts_us: int,
        energy_total_mj: int | None = None,
    ) -> ReadingPrice:
        """Record a gpu.metrics event; returns the reading's resolved price (and energy delta).

        Pass the price *the event carried* (None if it had none), also on a rebuild. The GPU's
        price is that of its latest reading by ``(ts_us, event_id)``, not the last one to
        arrive: a maximum does not move when a reading is delivered again, so a redelivery
        cannot change a price, and a rebuild that replays the stored readings (first copies)
        in any order ends where the uninterrupted run did.

        The energy delta is measured against the latest reading only when this one is newer:
        a late or redelivered reading gets none, so a rebuild (which restores the latest
        reading) yields the same deltas as a run straight through.
        """
        price, source = self._prices.resolve(price_per_hour_usd, gpu_name)
        state = self._state(gpu_key)
        key = (ts_us, event_id)
        delta_j: float | None = None
        interval_s: float | None = None
        if state.reading is None or key > state.reading:
            previous, previous_energy = state.reading, state.energy_mj
            if (
                previous is not None
                and ts_us > previous[0]
                and energy_total_mj is not None
                and previous_energy is not None
                and energy_total_mj >= previous_energy
            ):
                delta_j = (energy_total_mj - previous_energy) / 1000.0
                interval_s = (ts_us - previous[0]) / US_PER_S
            state.reading = key
            state.price, state.price_source = price, source
            state.energy_mj = energy_total_mj
        return ReadingPrice(price, source, delta_j, interval_s)

    def on_token_usage(
        self,
        gpu_key: str,
        event_id: str,
        ts_us: int,
        input_tokens: int,
        output_tokens: int = 0,
        *,
        output_weight: float = 1.0,
    ) -> TokenCost:
        """Add a token event to its GPU's window and cost it.

        ``output_weight`` is k of the event's model (:class:`OutputWeights`); on a rebuild,
        pass the k stored on the document, not today's setting.
        A redelivered ``event_id`` that is still retained is not added again; its cost is
        still returned (the store keeps the first copy and drops this one).
        """
        if isinstance(ts_us, bool) or not isinstance(ts_us, int):
            raise TypeError(f"ts_us must be int microseconds, got {type(ts_us).__name__}")
        for name, count in (("input_tokens", input_tokens), ("output_tokens", output_tokens)):
            if isinstance(count, bool) or not isinstance(count, int):
                raise TypeError(f"{name} must be int, got {type(count).__name__}")
            if count < 0:
                raise ValueError(f"{name} must be >= 0, got {count}")
        k_milli = weight_milli(output_weight)
        usage = _Usage(input_tokens, output_tokens, k_milli)

        state = self._state(gpu_key)
        if event_id in state.id_set:
            # A redelivery (or another event under a retained id, which the store will refuse):
            # cost it, but leave the state as it is, or a later rebuild would differ from it.
            return self._cost(state, ts_us, usage, floor=self._floor(state))
        newest = ts_us if state.max_ts is None or ts_us > state.max_ts else state.max_ts
        state.max_ts = newest
        floor = newest - self._window_us - self._lateness_us
        state.evict_through(floor)
        if ts_us > floor:
            state.insert(ts_us, event_id, usage.weighted_milli, usage.tokens)
        return self._cost(state, ts_us, usage, floor=floor)

    def _floor(self, state: _GpuState) -> int:
        assert state.max_ts is not None, "a GPU with a retained id has a newest timestamp"
        return state.max_ts - self._window_us - self._lateness_us

    def _cost(self, state: _GpuState, ts_us: int, usage: _Usage, *, floor: int) -> TokenCost:
        weighted_milli, raw = state.sum_between(max(ts_us - self._window_us, floor), ts_us)
        weighted_tps = weighted_milli / _WEIGHT_SCALE / self._window_s
        per_input = cost_per_token(state.price, weighted_tps)
        k = usage.k_milli / _WEIGHT_SCALE
        weighted = usage.weighted_milli / _WEIGHT_SCALE
        if per_input is None:
            input_cost = output_cost = cost = 0.0
        else:
            input_cost = per_input * usage.input_tokens
            output_cost = per_input * (usage.output_tokens * usage.k_milli / _WEIGHT_SCALE)
            cost = per_input * weighted
        return TokenCost(
            tokens=usage.tokens,
            tps=raw / self._window_s,
            price_per_hour_usd=state.price,
            price_source=state.price_source,
            cost_per_token=cost / usage.tokens if per_input is not None and usage.tokens else None,
            cost_usd=cost,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            output_weight=k,
            weighted_tokens=weighted,
            weighted_tps=weighted_tps,
            cost_per_input_token=per_input,
            input_cost_usd=input_cost,
            output_cost_usd=output_cost,
        )

    # -- partitions ---------------------------------------------------------------------

    def forget(self, gpu_keys: Iterable[str]) -> None:
        """Drop the state of these GPUs (their partition was revoked). Unknown keys are fine."""
        for key in gpu_keys:
            self._gpus.pop(key, None)
