"""The cost model with plain values: formula, window edges, prices, lateness, rebuild.

Only through the public API the consumer uses: a state is observed through the costs it gives.
"""

from __future__ import annotations

import math
import random
import tracemalloc
from dataclasses import dataclass

import pytest

from processor.cost import (
    CostModel,
    OutputWeights,
    PriceBook,
    TokenCost,
    cost_per_token,
    weight_milli,
)

S = 1_000_000  # µs per second
T0 = 1_750_000_000 * S  # an arbitrary epoch timestamp in µs
GPU = "host-a/GPU-0000"
A100 = "NVIDIA A100-SXM4-40GB"


def model(
    default: float = 0.85,
    by_name: dict[str, float] | None = None,
    window_s: float = 60.0,
    lateness_s: float = 300.0,
) -> CostModel:
    return CostModel(PriceBook(default, by_name), window_s=window_s, lateness_s=lateness_s)


# -- the formula --------------------------------------------------------------------------


def test_worked_example() -> None:
    """3.60 $/h, 6,000 tokens in the 60 s up to e -> tps 100 -> 1e-5 $/token -> 0.0025 $."""
    m = model()
    assert m.on_gpu_metrics(GPU, A100, 3.60, event_id="r", ts_us=T0).price == (3.6, "event")
    # 5,750 tokens earlier in the window, then e itself with 250: 6,000 in (e.ts - 60 s, e.ts].
    for i in range(23):
        m.on_token_usage(GPU, f"before-{i}", T0 + i * S, 250)
    cost = m.on_token_usage(GPU, "e", T0 + 30 * S, 250)
    assert cost.tokens == 250
    assert cost.tps == 100.0
    assert cost.price_per_hour_usd == 3.6
    assert cost.price_source == "event"
    assert cost.cost_per_token is not None
    assert cost.cost_per_token == pytest.approx(1e-5, rel=1e-12)
    assert cost.cost_usd == pytest.approx(0.0025, rel=1e-12)
    assert cost.cost_per_token * 1000 == pytest.approx(0.01, rel=1e-12)  # $ per 1k tokens


def test_cost_per_token_standalone() -> None:
    assert cost_per_token(3.6, 100.0) == pytest.approx(1e-5, rel=1e-12)
    assert cost_per_token(3.6, 0.0) is None
    assert cost_per_token(0.0, 5.0) == 0.0
    with pytest.raises(ValueError, match="tps"):
        cost_per_token(1.0, -1.0)
    with pytest.raises(ValueError, match="tps"):
        cost_per_token(1.0, math.nan)


def test_first_event_of_a_gpu_counts_its_own_tokens() -> None:
    m = model()
    cost = m.on_token_usage(GPU, "e1", T0, 600)
    assert cost.tps == 10.0  # 600 / 60 s
    assert cost.price_per_hour_usd == 0.85
    assert cost.price_source == "default"
    assert cost.cost_per_token == pytest.approx((0.85 / 3600) / 10.0, rel=1e-12)
    assert cost.cost_usd == pytest.approx(0.85 / 3600 * 60, rel=1e-12)


def test_zero_tokens_has_no_cost_per_token() -> None:
    m = model()
    cost = m.on_token_usage(GPU, "e1", T0, 0)
    assert cost == TokenCost(
        tokens=0,
        tps=0.0,
        price_per_hour_usd=0.85,
        price_source="default",
        cost_per_token=None,
        cost_usd=0.0,
    )
    # Tokens in the window but none in this event: a price per token, zero cost.
    m.on_token_usage(GPU, "e2", T0 + S, 60)
    cost = m.on_token_usage(GPU, "e3", T0 + 2 * S, 0)
    assert cost.tps == 1.0
    assert cost.cost_per_token is None  # a blend over no tokens
    assert cost.cost_per_input_token == pytest.approx(0.85 / 3600 / 1.0, rel=1e-12)
    assert cost.cost_usd == 0.0


def test_huge_token_counts() -> None:
    m = model(default=3.6)
    tokens = 10_000_000 + 10_000_000
    first = m.on_token_usage(GPU, "big-1", T0, tokens)
    assert first.tps == tokens / 60
    assert first.cost_usd == pytest.approx(3.6 / 60, rel=1e-12)  # a lone event pays the window
    second = m.on_token_usage(GPU, "big-2", T0 + S, tokens)
    assert second.tps == 2 * tokens / 60
    assert second.cost_usd == pytest.approx(3.6 / 120, rel=1e-12)
    # 100k maximal events in one window: the int sum stays exact.
    for i in range(100_000):
        last = m.on_token_usage(GPU, f"many-{i}", T0 + 2 * S, tokens)
    assert last.tps == (100_002 * tokens) / 60
    assert math.isfinite(last.cost_usd)


# -- the window ---------------------------------------------------------------------------


def test_event_exactly_w_earlier_is_excluded() -> None:
    m = model()
    m.on_token_usage(GPU, "old", T0, 1_000)
    cost = m.on_token_usage(GPU, "e", T0 + 60 * S, 60)
    assert cost.tps == 1.0  # only its own 60 tokens: ts = e.ts - W is outside (e.ts - W, e.ts]


def test_event_one_microsecond_inside_is_included() -> None:
    m = model()
    m.on_token_usage(GPU, "old", T0 + 1, 1_000)
    cost = m.on_token_usage(GPU, "e", T0 + 60 * S, 60)
    assert cost.tps == 1_060 / 60


def test_window_is_per_gpu() -> None:
    m = model()
    m.on_token_usage("host-a/GPU-1", "a", T0, 6_000)
    cost = m.on_token_usage("host-a/GPU-2", "b", T0, 60)
    assert cost.tps == 1.0
    assert m.on_token_usage("host-a/GPU-1", "c", T0, 60).tps == 6_060 / 60


def test_custom_window() -> None:
    m = model(window_s=10.0)
    m.on_token_usage(GPU, "a", T0, 100)
    assert m.on_token_usage(GPU, "b", T0 + 9 * S, 100).tps == 20.0
    assert m.on_token_usage(GPU, "c", T0 + 10 * S, 100).tps == 20.0  # "a" fell out


def test_fractional_window_seconds_are_exact_microseconds() -> None:
    m = model(window_s=0.5)
    assert m.window_us == 500_000
    m.on_token_usage(GPU, "a", T0, 10)
    assert m.on_token_usage(GPU, "b", T0 + 499_999, 10).tps == 40.0
    assert m.on_token_usage(GPU, "c", T0 + 500_000, 10).tps == 40.0  # a out, b in


# -- prices -------------------------------------------------------------------------------


def test_price_change_mid_stream() -> None:
    m = model()
    assert m.on_token_usage(GPU, "t0", T0, 60).price_source == "default"
    m.on_gpu_metrics(GPU, A100, 3.6, event_id="r1", ts_us=T0 + S // 2)
    first = m.on_token_usage(GPU, "t1", T0 + S, 60)
    assert (first.price_per_hour_usd, first.price_source) == (3.6, "event")
    assert first.cost_per_token == pytest.approx((3.6 / 3600) / 2.0, rel=1e-12)
    m.on_gpu_metrics(GPU, A100, 7.2, event_id="r2", ts_us=T0 + 3 * S // 2)
    second = m.on_token_usage(GPU, "t2", T0 + 2 * S, 60)
    assert (second.price_per_hour_usd, second.price_source) == (7.2, "event")
    assert second.cost_per_token == pytest.approx((7.2 / 3600) / 3.0, rel=1e-12)
    # A later reading without a price of its own falls back to the map / default again.
    assert m.on_gpu_metrics(GPU, A100, None, event_id="r3", ts_us=T0 + 5 * S // 2).price == (
        0.85,
        "default",
    )
    assert m.on_token_usage(GPU, "t3", T0 + 3 * S, 60).price_per_hour_usd == 0.85


def test_a_redelivered_reading_does_not_change_the_price() -> None:
    """Readings A (1.0 $/h), B (2.0 $/h), then A again with the same bytes: B's price stays,
    as a rebuild from the stored readings (A and B once each) would have it."""
    m = model()
    m.on_gpu_metrics(GPU, A100, 1.0, event_id="A", ts_us=T0)
    assert m.on_token_usage(GPU, "t1", T0 + S, 60).price_per_hour_usd == 1.0
    m.on_gpu_metrics(GPU, A100, 2.0, event_id="B", ts_us=T0 + 2 * S)
    assert m.on_token_usage(GPU, "t2", T0 + 3 * S, 60).price_per_hour_usd == 2.0
    # The redelivered reading still reports its own resolved price (for its document) ...
    assert m.on_gpu_metrics(GPU, A100, 1.0, event_id="A", ts_us=T0).price == (1.0, "event")
    # ... but the GPU keeps the latest one's: 2.0 $/h over 180 tokens in 60 s.
    last = m.on_token_usage(GPU, "t3", T0 + 4 * S, 60)
    assert last.price_per_hour_usd == 2.0
    assert last.cost_per_token == pytest.approx((2.0 / 3600) / 3.0, rel=1e-12)
    # A late, new reading (older ts than B) does not win either; a newer one does; an equal
    # ts is settled by event_id, so the order of arrival never matters.
    m.on_gpu_metrics(GPU, A100, 9.0, event_id="C", ts_us=T0 + S)
    assert m.on_token_usage(GPU, "t4", T0 + 5 * S, 0).price_per_hour_usd == 2.0
    m.on_gpu_metrics(GPU, A100, 3.0, event_id="Z", ts_us=T0 + 2 * S)
    assert m.on_token_usage(GPU, "t5", T0 + 5 * S, 0).price_per_hour_usd == 3.0
    m.on_gpu_metrics(GPU, A100, 4.0, event_id="D", ts_us=T0 + 2 * S)
    assert m.on_token_usage(GPU, "t6", T0 + 5 * S, 0).price_per_hour_usd == 3.0


def test_a_token_event_under_a_retained_id_leaves_the_state_alone() -> None:
    m = model()
    m.on_token_usage(GPU, "a", T0, 600)
    # Same id, a later ts: it must not move the GPU's newest ts (and with it the floor).
    again = m.on_token_usage(GPU, "a", T0 + 1_000 * S, 60)
    assert again.tps == 0.0  # its own window holds nothing: "a" at T0 is far below it
    # Had the newest ts moved to T0 + 1,000 s, this event (and "a") would be below the floor.
    assert m.on_token_usage(GPU, "b", T0 + S, 60).tps == (600 + 60) / 60


def test_price_map_by_gpu_name_and_default() -> None:
    m = model(default=0.85, by_name={A100: 3.2, "NVIDIA H100 80GB HBM3": 0.0})
    assert m.on_gpu_metrics("h/g1", A100, None, event_id="r", ts_us=T0).price == (3.2, "price_map")
    assert m.on_gpu_metrics("h/g2", "NVIDIA L4", None, event_id="r", ts_us=T0).price == (
        0.85,
        "default",
    )
    assert m.on_gpu_metrics("h/g3", None, None, event_id="r", ts_us=T0).price == (0.85, "default")
    assert m.on_gpu_metrics(
        "h/g4", "NVIDIA H100 80GB HBM3", None, event_id="r", ts_us=T0
    ).price == (
        0.0,
        "price_map",
    )
    assert m.on_gpu_metrics("h/g5", A100, 1.5, event_id="r", ts_us=T0).price == (
        1.5,
        "event",
    )  # the event wins
    c1 = m.on_token_usage("h/g1", "a", T0, 60)
    assert (c1.price_per_hour_usd, c1.price_source) == (3.2, "price_map")
    c2 = m.on_token_usage("h/g2", "b", T0, 60)
    assert (c2.price_per_hour_usd, c2.price_source) == (0.85, "default")
    c4 = m.on_token_usage("h/g4", "c", T0, 60)
    assert (c4.cost_per_token, c4.cost_usd, c4.price_source) == (0.0, 0.0, "price_map")
    c6 = m.on_token_usage("h/g6", "d", T0, 60)  # never reported gpu.metrics
    assert (c6.price_per_hour_usd, c6.price_source) == (0.85, "default")


def test_price_book_resolve_and_validation() -> None:
    book = PriceBook(0.85, {A100: 3})
    assert book.resolve(None, A100) == (3.0, "price_map")
    assert book.resolve(2, A100) == (2.0, "event")
    assert book.resolve(None, A100.lower()) == (0.85, "default")  # exact names
    assert book.default_usd == 0.85
    with pytest.raises(ValueError, match="default_usd"):
        PriceBook(-0.01)
    with pytest.raises(ValueError, match="default_usd"):
        PriceBook(math.inf)
    with pytest.raises(ValueError, match="by_gpu_name"):
        PriceBook(0.85, {A100: -1.0})
    with pytest.raises(ValueError, match="event_price"):
        book.resolve(math.nan, None)


def test_constructor_validation_names_the_argument() -> None:
    book = PriceBook(0.85)
    for bad in (0.0, -1.0, math.nan, math.inf, 1e-9):
        with pytest.raises(ValueError, match="window_s"):
            CostModel(book, window_s=bad)
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="lateness_s"):
            CostModel(book, lateness_s=bad)
    assert CostModel(book, lateness_s=0).lateness_us == 0


def test_event_argument_validation() -> None:
    m = model()
    with pytest.raises(ValueError, match="tokens"):
        m.on_token_usage(GPU, "a", T0, -1)
    with pytest.raises(TypeError, match="ts_us"):
        m.on_token_usage(GPU, "a", 1.5, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="tokens"):
        m.on_token_usage(GPU, "a", T0, 1.0)  # type: ignore[arg-type]


# -- order, lateness, duplicates ----------------------------------------------------------


def test_out_of_order_counts_only_earlier_seen_events_in_its_window() -> None:
    m = model()
    m.on_token_usage(GPU, "a", T0 + 10 * S, 100)
    m.on_token_usage(GPU, "b", T0 + 50 * S, 200)  # seen before, but later ts than the late one
    late = m.on_token_usage(GPU, "late", T0 + 20 * S, 300)
    assert late.tps == (100 + 300) / 60  # "b" (ts 50 s > 20 s) is excluded
    # An event that arrives after "late" sees it.
    after = m.on_token_usage(GPU, "c", T0 + 55 * S, 400)
    assert after.tps == (100 + 200 + 300 + 400) / 60
    # Events seen after "late" do not change its (already returned) cost; a later event
    # with an earlier window counts only what was seen before it.
    later = m.on_token_usage(GPU, "d", T0 + 15 * S, 50)
    assert later.tps == (100 + 50) / 60


def test_equal_timestamps_all_count() -> None:
    m = model()
    m.on_token_usage(GPU, "a", T0, 10)
    m.on_token_usage(GPU, "b", T0, 20)
    assert m.on_token_usage(GPU, "c", T0, 30).tps == 1.0


def test_lateness_eviction() -> None:
    m = model(window_s=60, lateness_s=300)
    m.on_token_usage(GPU, "old", T0, 6_000)
    # The GPU's newest event moves to T0 + 361 s: floor M - W - L = T0 + 1 s evicts "old".
    newest = m.on_token_usage(GPU, "new", T0 + 361 * S, 60)
    assert newest.tps == 1.0
    # A late event whose window reaches below the floor sees only the retained part:
    # window (T0 - 60 s + 30 s, T0 + 30 s] clipped to (T0 + 1 s, T0 + 30 s].
    late = m.on_token_usage(GPU, "late", T0 + 30 * S, 120)
    assert late.tps == 2.0  # its own tokens; "old" (at T0) is gone
    # More than W + L behind the newest event: nothing of its window is retained, itself
    # included, so it has no throughput: cost_per_token None, cost 0.
    very_late = m.on_token_usage(GPU, "very-late", T0 + S, 600)
    assert very_late.tps == 0.0
    assert very_late.cost_per_token is None
    assert very_late.cost_usd == 0.0
    # "late" was kept: a later event whose window covers it counts it.
    assert m.on_token_usage(GPU, "probe", T0 + 40 * S, 60).tps == (120 + 60) / 60


def test_window_never_reaches_below_the_retention_floor() -> None:
    """The floor M - W - L clips every window, so eviction timing cannot change a result."""
    m = model(window_s=60, lateness_s=0)
    m.on_token_usage(GPU, "a", T0, 100)
    m.on_token_usage(GPU, "b", T0 + 30 * S, 100)
    m.on_token_usage(GPU, "c", T0 + 90 * S, 100)  # M = 90 s, floor = 30 s: "a", "b" out
    # d's plain window (10 s, 70 s] would hold "b"; clipped to (30 s, 70 s] it holds d only.
    late = m.on_token_usage(GPU, "d", T0 + 70 * S, 100)
    assert late.tps == 100 / 60
    # "d" is retained although it arrived after newer "c": (30 s, 90 s] holds d, c and e.
    assert m.on_token_usage(GPU, "e", T0 + 90 * S, 100).tps == 300 / 60


def test_duplicate_event_id_is_not_double_counted() -> None:
    m = model()
    first = m.on_token_usage(GPU, "dup", T0, 600)
    again = m.on_token_usage(GPU, "dup", T0, 600)  # Kafka redelivery
    assert again == first
    assert m.on_token_usage(GPU, "other", T0 + S, 600).tps == 20.0  # 600 + 600, not 1,800
    # A redelivery after other events still returns a cost (the caller drops it).
    redelivered = m.on_token_usage(GPU, "dup", T0, 600)
    assert redelivered.tps == 10.0
    assert m.on_token_usage(GPU, "probe", T0 + 2 * S, 0).tps == 20.0  # still counted once


def test_duplicate_of_an_evicted_event_is_not_added_again() -> None:
    m = model(window_s=60, lateness_s=0)
    m.on_token_usage(GPU, "a", T0, 600)
    m.on_token_usage(GPU, "b", T0 + 120 * S, 60)  # floor T0 + 60 s: "a" evicted
    assert m.on_token_usage(GPU, "a", T0, 600).tps == 0.0


def test_forget_drops_state() -> None:
    m = model()
    m.on_gpu_metrics(GPU, A100, 3.6, event_id="r", ts_us=T0)
    m.on_token_usage(GPU, "a", T0, 600)
    m.on_token_usage("other/GPU", "b", T0, 600)
    m.forget([GPU, "never-seen"])
    cost = m.on_token_usage(GPU, "c", T0, 600)  # as if never seen: own tokens, default price
    assert (cost.tps, cost.price_source) == (10.0, "default")
    assert m.on_token_usage("other/GPU", "d", T0, 600).tps == 20.0  # the other GPU kept its


def test_state_stays_bounded_by_the_lateness_allowance() -> None:
    """Evicted events are dropped for good: memory follows W + L, not the stream's length."""
    m = model(window_s=1, lateness_s=1)

    def feed(start: int, n: int) -> None:
        for i in range(start, start + n):
            m.on_token_usage(GPU, f"event-{i:09d}", T0 + i * S // 10, 7)

    feed(0, 5_000)  # past the first compaction
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        feed(5_000, 50_000)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # Kept without eviction, 50,000 more events would take megabytes (an id string, two ints
    # and a set entry each: ~8 MB with compaction disabled); retained are ~20 plus at most one
    # compaction's backlog (~0.1 MB measured).
    assert grown < 500_000, grown


def test_many_out_of_order_inserts_keep_sums_exact() -> None:
    """The sorted prefix-sum structure against a brute-force window over many shuffles."""
    rng = random.Random(7)
    m = model(window_s=5, lateness_s=20)
    seen: list[tuple[int, int]] = []
    newest = 0
    for i in range(3_000):
        ts = T0 + i * 100_000 + rng.randint(-3 * S, 3 * S)
        tokens = rng.randint(0, 1_000)
        newest = max(newest, ts)
        floor = newest - 25 * S
        if ts > floor:
            seen.append((ts, tokens))
        lo = max(ts - 5 * S, floor)
        expected = sum(t for s, t in seen if lo < s <= ts)
        assert m.on_token_usage(GPU, f"e{i}", ts, tokens).tps == expected / 5


# -- determinism of a rebuild -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    offset: int
    kind: str  # "gpu" | "token"
    gpu_key: str
    event_id: str
    ts_us: int = 0
    tokens: int = 0
    gpu_name: str | None = None
    price: float | None = None


def seeded_stream(n: int = 5_000, seed: int = 20_240_601) -> list[Event]:
    """One partition, three GPUs: jitter, late and very late events, redeliveries, prices."""
    rng = random.Random(seed)
    gpus = ["h1/GPU-a", "h1/GPU-b", "h2/GPU-c"]
    names = [A100, "NVIDIA L4", None]
    clock = dict.fromkeys(gpus, T0)
    events: list[Event] = []
    tokens_sent: list[Event] = []
    readings_sent: list[Event] = []
    for offset in range(n):
        gpu = rng.choice(gpus)
        roll = rng.random()
        if roll < 0.05:
            price = rng.choice([None, 1.25, 3.6, 0.0])
            name = rng.choice(names)
            at = clock[gpu] + rng.randint(-5 * S, S)  # readings arrive out of order too
            reading = Event(offset, "gpu", gpu, f"m{offset}", at, gpu_name=name, price=price)
            events.append(reading)
            readings_sent.append(reading)
            continue
        if roll < 0.06 and readings_sent:  # a reading delivered again, after newer ones
            old = rng.choice(readings_sent[-20:])
            events.append(Event(offset, "gpu", old.gpu_key, old.event_id, old.ts_us,
                                gpu_name=old.gpu_name, price=old.price))  # fmt: skip
            continue
        if roll < 0.09 and tokens_sent:  # Kafka redelivery / producer duplicate
            old = rng.choice(tokens_sent[-400:])
            events.append(Event(offset, "token", old.gpu_key, old.event_id, old.ts_us, old.tokens))
            continue
        clock[gpu] += rng.randint(0, 900_000)  # ~0.45 s apart per GPU: spans > W + L
        jitter = rng.randint(-3 * S, 2 * S)
        if roll > 0.98:
            jitter = -rng.randint(100 * S, 500 * S)  # late, sometimes beyond W + L
        tokens = rng.choice([0, rng.randint(1, 4_000), rng.randint(1, 20_000_000)])
        event = Event(offset, "token", gpu, f"t{offset}", clock[gpu] + jitter, tokens)
        events.append(event)
        tokens_sent.append(event)
    return events


def apply(m: CostModel, e: Event) -> TokenCost | tuple[float, str]:
    if e.kind == "gpu":
        return m.on_gpu_metrics(
            e.gpu_key, e.gpu_name, e.price, event_id=e.event_id, ts_us=e.ts_us
        ).price
    return m.on_token_usage(e.gpu_key, e.event_id, e.ts_us, e.tokens)


def rebuild(events: list[Event], resume: int, window_s: float, lateness_s: float) -> CostModel:
    """What the consumer does on assignment: reload from the store, replay in offset order."""
    fresh = model(by_name={A100: 3.2}, window_s=window_s, lateness_s=lateness_s)
    # The store: documents of offsets before the resume point, first copy per event_id.
    stored: dict[str, Event] = {}
    for e in events[:resume]:
        stored.setdefault(e.event_id, e)
    docs = sorted(stored.values(), key=lambda e: e.offset)
    newest: dict[str, int] = {}
    for d in docs:
        if d.kind == "token":
            newest[d.gpu_key] = max(newest.get(d.gpu_key, d.ts_us), d.ts_us)
    behind = fresh.window_us + fresh.lateness_us  # the consumer's floor is M - W - L
    for d in docs:
        if d.kind == "token" and d.ts_us > newest[d.gpu_key] - behind:
            apply(fresh, d)
    # MongoStore.partition_history: each GPU's latest stored reading by (ts_us, event_id).
    latest: dict[str, Event] = {}
    for d in docs:
        if d.kind == "gpu" and (d.gpu_key not in latest or (d.ts_us, d.event_id) > (
            latest[d.gpu_key].ts_us, latest[d.gpu_key].event_id)):  # fmt: skip
            latest[d.gpu_key] = d
    for d in latest.values():
        apply(fresh, d)
    return fresh


@pytest.mark.parametrize(("window_s", "lateness_s"), [(60.0, 300.0), (10.0, 0.0), (30.0, 45.5)])
def test_rebuild_equals_uninterrupted_run(window_s: float, lateness_s: float) -> None:
    events = seeded_stream()
    live = model(by_name={A100: 3.2}, window_s=window_s, lateness_s=lateness_s)
    results = [apply(live, e) for e in events]
    assert any(isinstance(r, TokenCost) and r.cost_per_token is None for r in results)

    # The rebuilt state is observed through every cost after the cut: each GPU's window,
    # retained events, newest timestamp and price take part in them.
    for cut in [1, 250, 1_234, 2_500, 3_777, 4_999]:
        fresh = rebuild(events, cut, window_s, lateness_s)
        for e in events[cut:]:
            assert apply(fresh, e) == results[e.offset], (cut, e)


# -- output weight (k): one output token costs k input tokens -------------------------------


def test_output_weight_worked_example() -> None:
    """By hand: price 3.60 $/h = 0.001 $/s, k = 4, W = 60 s.

    Event a: 1,000 input + 500 output -> weighted 1,000 + 4 x 500 = 3,000.
    Event b (10 s later): 200 input + 100 output -> weighted 600; window = 3,600 weighted
    tokens -> weighted_tps = 60 -> one input token costs 0.001 / 60 = 1/60,000 $, an output
    token 4/60,000 $. b: input 200/60,000 = 0.00333... $, output 400/60,000 = 0.00666... $,
    total 0.01 $ over 300 tokens -> blended 1/30,000 $ per token. Plain tps = 1,800 / 60 = 30.
    """
    m = model(default=3.6)
    m.on_token_usage(GPU, "a", T0, 1_000, 500, output_weight=4.0)
    b = m.on_token_usage(GPU, "b", T0 + 10 * S, 200, 100, output_weight=4.0)
    assert b.weighted_tokens == 600.0
    assert b.weighted_tps == 60.0
    assert b.tps == 30.0
    assert b.cost_per_input_token == pytest.approx(1 / 60_000, rel=1e-12)
    assert b.cost_per_output_token == pytest.approx(4 / 60_000, rel=1e-12)
    assert b.input_cost_usd == pytest.approx(200 / 60_000, rel=1e-12)
    assert b.output_cost_usd == pytest.approx(400 / 60_000, rel=1e-12)
    assert b.cost_usd == pytest.approx(0.01, rel=1e-12)
    assert b.cost_per_token == pytest.approx(1 / 30_000, rel=1e-12)
    assert b.output_weight == 4.0


def test_weight_one_is_the_plain_token_model() -> None:
    """k = 1: weighted tokens are tokens, so the cost is that of the round-1 model."""
    plain, weighted = model(default=3.6), model(default=3.6)
    a = plain.on_token_usage(GPU, "a", T0, 6_000)
    b = weighted.on_token_usage(GPU, "a", T0, 2_000, 4_000, output_weight=1.0)
    assert (a.tps, a.cost_usd, a.cost_per_token) == (b.tps, b.cost_usd, b.cost_per_token)
    assert a.cost_per_token == pytest.approx(0.001 / 100)


def test_fractional_weights_are_exact_in_the_window() -> None:
    """k = 2.5 (thousandths are exact ints): 3 x (1 + 2.5 x 1) = 10.5 weighted tokens."""
    m = model(default=3.6, window_s=1.0)
    for i in range(3):
        last = m.on_token_usage(GPU, f"e{i}", T0 + i, 1, 1, output_weight=2.5)
    assert last.weighted_tps == 10.5


@pytest.mark.parametrize("bad", [0, -1.0, 1000.5, math.nan, math.inf, 1.0001, True, "4"])
def test_bad_output_weights_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="output weight"):
        weight_milli(bad)  # type: ignore[arg-type]


def test_output_weights_per_model_override_the_default() -> None:
    weights = OutputWeights(4.0, {"llama-3.1-70b-instruct": 6.0})
    assert weights.of("llama-3.1-70b-instruct") == 6.0
    assert weights.of("anything-else") == 4.0
    with pytest.raises(ValueError, match="'m': an output weight"):
        OutputWeights(4.0, {"m": 0.0})


# -- energy counter deltas --------------------------------------------------------------------


def test_energy_delta_between_consecutive_readings() -> None:
    """By hand: counter 1,000,000 mJ then 1,700,000 mJ 2 s later -> 700 J over 2 s (350 W)."""
    m = model()
    first = m.on_gpu_metrics(GPU, A100, None, event_id="r1", ts_us=T0, energy_total_mj=1_000_000)
    assert first.energy_delta_j is None  # nothing to measure against yet
    second = m.on_gpu_metrics(
        GPU, A100, None, event_id="r2", ts_us=T0 + 2 * S, energy_total_mj=1_700_000
    )
    assert (second.energy_delta_j, second.energy_interval_s) == (700.0, 2.0)
    # Late (older) and redelivered readings measure nothing and move nothing.
    late = m.on_gpu_metrics(GPU, A100, None, event_id="r0", ts_us=T0 + S, energy_total_mj=1_300_000)
    assert late.energy_delta_j is None
    again = m.on_gpu_metrics(
        GPU, A100, None, event_id="r2", ts_us=T0 + 2 * S, energy_total_mj=1_700_000
    )
    assert again.energy_delta_j is None
    third = m.on_gpu_metrics(
        GPU, A100, None, event_id="r3", ts_us=T0 + 3 * S, energy_total_mj=1_900_000
    )
    assert third.energy_delta_j == 200.0
    # A counter that went backwards (driver reset) gives no delta; the next one counts again.
    reset = m.on_gpu_metrics(GPU, A100, None, event_id="r4", ts_us=T0 + 4 * S, energy_total_mj=5)
    assert reset.energy_delta_j is None
    after = m.on_gpu_metrics(GPU, A100, None, event_id="r5", ts_us=T0 + 5 * S, energy_total_mj=505)
    assert after.energy_delta_j == 0.5
