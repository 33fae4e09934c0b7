"""Rollups from per-minute rows: allocation by token share, idle minutes, buckets, percentiles."""

from __future__ import annotations

import math
import random

import pytest

from processor.documents import latency_bucket_ms
from processor.rollup import (
    IDLE_GROUP,
    CostRow,
    GpuMinute,
    TokenMinute,
    allocate,
    percentile_from_buckets,
    period_start_minute,
)

M0 = 1_440 * 20_255  # an epoch minute on a UTC day (so hour) boundary: 2025-06-16
G1, G2, G3 = "h1/GPU-1", "h1/GPU-2", "h2/GPU-3"


def gm(gpu: str, minute: int, price: float = 3.6, readings: int = 12) -> GpuMinute:
    host = gpu.split("/")[0]
    return GpuMinute(gpu, host, minute, price * readings, readings)


def tm(
    gpu: str,
    minute: int,
    model: str,
    tokens: int,
    requests: int = 1,
    cost: float = 0.0,
    price: float = 3.6,
) -> TokenMinute:
    host = gpu.split("/")[0]
    return TokenMinute(gpu, host, model, minute, tokens, requests, cost, price * requests)


def by_group(rows: list[CostRow]) -> dict[str, CostRow]:
    return {r.group: r for r in rows}


def test_period_start_minute() -> None:
    assert M0 % 1440 == 0
    assert period_start_minute(M0 + 61, "minute") == M0 + 61
    assert period_start_minute(M0 + 61, "hour") == M0 + 60
    assert period_start_minute(M0 + 1439, "day") == M0
    assert period_start_minute(M0 + 1440, "day") == M0 + 1440
    assert period_start_minute(M0 + 1440, "all", origin_minute=M0 - 30) == M0 - 30


def test_granularity_all_is_one_row_per_group_across_midnight() -> None:
    """Minutes on both sides of a UTC midnight (M0): by day two rows, with "all" one row that
    starts at the window's first minute, holding both minutes' 0.06 $."""
    minutes = [gm(G1, M0 - 1), gm(G1, M0)]
    tokens = [tm(G1, M0 - 1, "a", 100), tm(G1, M0, "a", 300)]
    assert len(allocate(minutes, tokens, "model", "day")) == 2
    (row,) = allocate(minutes, tokens, "model", "all", origin_minute=M0 - 5)
    assert (row.period_start_minute, row.tokens) == (M0 - 5, 400)
    assert row.cost_usd == pytest.approx(0.12, rel=1e-12)


def test_allocation_split_by_token_share() -> None:
    rows = allocate(
        [gm(G1, M0, price=3.6)],
        [
            tm(G1, M0, "llama", 750, requests=3, cost=0.5),
            tm(G1, M0, "mistral", 250, requests=1, cost=0.25),
        ],
        "model",
        "minute",
    )
    assert [r.group for r in rows] == ["llama", "mistral"]
    llama, mistral = rows
    minute_cost = 3.6 / 60  # 0.06 $ for a reporting minute
    assert llama.cost_usd == pytest.approx(minute_cost * 0.75, rel=1e-12)
    assert mistral.cost_usd == pytest.approx(minute_cost * 0.25, rel=1e-12)
    assert (llama.tokens, llama.requests, mistral.tokens, mistral.requests) == (750, 3, 250, 1)
    assert llama.throughput_estimate_usd == 0.5
    assert mistral.throughput_estimate_usd == 0.25
    assert llama.idle_cost_usd == mistral.idle_cost_usd == 0.0
    assert llama.cost_per_1m_tokens == pytest.approx(minute_cost * 0.75 / 750 * 1e6, rel=1e-12)
    assert llama.p95_latency_ms is None
    assert llama.period_start_minute == M0


def test_idle_minutes_by_model_gpu_and_host() -> None:
    gpus = [gm(G1, M0), gm(G1, M0 + 1), gm(G1, M0 + 2, price=1.2)]
    tokens = [tm(G1, M0, "llama", 100)]
    by_model = allocate(gpus, tokens, "model", "hour")
    assert [r.group for r in by_model] == [IDLE_GROUP, "llama"]
    idle, llama = by_model
    assert idle.idle_cost_usd == pytest.approx(3.6 / 60 + 1.2 / 60, rel=1e-12)
    assert idle.cost_usd == idle.idle_cost_usd
    assert (idle.tokens, idle.requests, idle.cost_per_1m_tokens) == (0, 0, None)
    assert llama.cost_usd == pytest.approx(3.6 / 60, rel=1e-12)
    assert llama.idle_cost_usd == 0.0

    (gpu_row,) = allocate(gpus, tokens, "gpu", "hour")
    assert gpu_row.group == G1
    assert gpu_row.cost_usd == pytest.approx(2 * 3.6 / 60 + 1.2 / 60, rel=1e-12)
    assert gpu_row.idle_cost_usd == pytest.approx(3.6 / 60 + 1.2 / 60, rel=1e-12)
    assert gpu_row.tokens == 100
    assert gpu_row.cost_per_1m_tokens == pytest.approx(gpu_row.cost_usd * 10_000, rel=1e-12)

    (host_row,) = allocate(gpus, tokens, "host", "hour")
    assert host_row.group == "h1"
    assert host_row.cost_usd == gpu_row.cost_usd
    assert host_row.idle_cost_usd == gpu_row.idle_cost_usd


def test_a_model_filter_keeps_its_share_of_each_gpu_minute_in_every_grouping() -> None:
    # G1 minute 0: llama 300 of 400 tokens at 3.6 $/h; G1 minute 1 idle; G3 minute 0: only
    # mistral at 1.2 $/h. llama's rows: 0.06 $ x 3/4 = 0.045 $, no idle, nothing of G3.
    gpus = [gm(G1, M0), gm(G1, M0 + 1), gm(G3, M0, price=1.2)]
    tokens = [
        tm(G1, M0, "llama", 300, requests=2, cost=0.03),
        tm(G1, M0, "mistral", 100, cost=0.01),
        tm(G3, M0, "mistral", 50, cost=0.02),
    ]
    for group_by, group in (("gpu", G1), ("host", "h1"), ("model", "llama")):
        rows = allocate(gpus, tokens, group_by, "hour", model="llama")  # type: ignore[arg-type]
        assert [(r.group, r.tokens, r.requests) for r in rows] == [(group, 300, 2)], group_by
        assert rows[0].cost_usd == pytest.approx(0.045, rel=1e-12)
        assert rows[0].throughput_estimate_usd == 0.03
        assert rows[0].idle_cost_usd == 0.0
        assert rows[0].cost_per_1m_tokens == pytest.approx(150.0, rel=1e-12)
    assert allocate(gpus, tokens, "gpu", "hour", model="nobody") == []


def test_a_minute_with_only_zero_token_requests_is_idle() -> None:
    rows = allocate([], [tm(G1, M0, "llama", 0, requests=2, price=6.0)], "model", "minute")
    assert [(r.group, r.requests, r.tokens) for r in rows] == [(IDLE_GROUP, 0, 0), ("llama", 2, 0)]
    assert rows[0].idle_cost_usd == pytest.approx(6.0 / 60, rel=1e-12)
    assert rows[1].cost_usd == 0.0
    assert rows[1].cost_per_1m_tokens is None


def test_price_from_readings_else_from_token_events() -> None:
    # Readings win over token events: mean of the readings' prices.
    readings = [GpuMinute(G1, "h1", M0, price_sum=3.0 + 6.0, readings=2)]
    tokens = [tm(G1, M0, "llama", 10, requests=4, price=100.0)]
    (row,) = allocate(readings, tokens, "gpu", "minute")
    assert row.cost_usd == pytest.approx(4.5 / 60, rel=1e-12)
    # No reading that minute: the mean price of its token events, over all models.
    tokens = [
        tm(G1, M0 + 1, "llama", 10, requests=1, price=1.2),
        tm(G1, M0 + 1, "mistral", 30, requests=3, price=2.4),
    ]
    (row,) = allocate([], tokens, "gpu", "minute")
    mean_price = (1.2 + 3 * 2.4) / 4
    assert row.cost_usd == pytest.approx(mean_price / 60, rel=1e-12)
    assert row.tokens == 40
    assert row.requests == 4


def test_not_reporting_minutes_cost_nothing() -> None:
    rows = allocate([gm(G1, M0, readings=0)], [tm(G1, M0 + 1, "x", 0, requests=0)], "gpu", "day")
    assert rows == []


def test_hour_and_day_bucketing() -> None:
    gpus = [gm(G1, M0 + m) for m in (0, 59, 60, 1439, 1440)]
    tokens = [tm(G1, M0 + m, "llama", 100, cost=0.001) for m in (0, 59, 60, 1439, 1440)]
    hours = allocate(gpus, tokens, "model", "hour")
    assert [(r.period_start_minute, r.tokens) for r in hours] == [
        (M0, 200),
        (M0 + 60, 100),
        (M0 + 1380, 100),
        (M0 + 1440, 100),
    ]
    assert hours[0].cost_usd == pytest.approx(2 * 3.6 / 60, rel=1e-12)
    assert hours[0].throughput_estimate_usd == pytest.approx(0.002, rel=1e-12)
    days = allocate(gpus, tokens, "model", "day")
    assert [(r.period_start_minute, r.tokens, r.requests) for r in days] == [
        (M0, 400, 4),
        (M0 + 1440, 100, 1),
    ]
    minutes = allocate(gpus, tokens, "model", "minute")
    assert len(minutes) == 5


def test_group_by_model_gpu_host_and_sorting() -> None:
    gpus = [gm(G1, M0), gm(G2, M0, price=1.2), gm(G3, M0, price=2.4), gm(G3, M0 + 1)]
    tokens = [
        tm(G1, M0, "mistral", 100),
        tm(G2, M0, "llama", 300),
        tm(G2, M0, "mistral", 100),
        tm(G3, M0, "llama", 50),
    ]
    by_model = allocate(gpus, tokens, "model", "minute")
    assert [(r.period_start_minute, r.group) for r in by_model] == [
        (M0, "llama"),
        (M0, "mistral"),
        (M0 + 1, IDLE_GROUP),
    ]
    llama, mistral, idle = by_model
    assert llama.cost_usd == pytest.approx(1.2 / 60 * 0.75 + 2.4 / 60, rel=1e-12)
    assert mistral.cost_usd == pytest.approx(3.6 / 60 + 1.2 / 60 * 0.25, rel=1e-12)
    assert (llama.tokens, mistral.tokens) == (350, 200)
    assert idle.cost_usd == pytest.approx(3.6 / 60, rel=1e-12)

    by_gpu = allocate(gpus, tokens, "gpu", "hour")
    assert [r.group for r in by_gpu] == [G1, G2, G3]
    assert by_group(by_gpu)[G3].idle_cost_usd == pytest.approx(3.6 / 60, rel=1e-12)
    assert by_group(by_gpu)[G2].tokens == 400

    by_host = by_group(allocate(gpus, tokens, "host", "hour"))
    assert sorted(by_host) == ["h1", "h2"]
    assert by_host["h1"].cost_usd == pytest.approx(3.6 / 60 + 1.2 / 60, rel=1e-12)
    assert by_host["h2"].cost_usd == pytest.approx(2.4 / 60 + 3.6 / 60, rel=1e-12)
    assert by_host["h2"].idle_cost_usd == pytest.approx(3.6 / 60, rel=1e-12)

    # Every grouping accounts for the same total: all reporting GPU-minutes.
    total = 3.6 / 60 + 1.2 / 60 + 2.4 / 60 + 3.6 / 60
    for group_by in ("model", "gpu", "host"):
        rows = allocate(gpus, tokens, group_by, "day")
        assert math.fsum(r.cost_usd for r in rows) == pytest.approx(total, rel=1e-12)


def test_result_does_not_depend_on_row_order() -> None:
    rng = random.Random(3)
    gpus = [gm(g, M0 + m, price=rng.uniform(0.1, 9)) for g in (G1, G2, G3) for m in range(90)]
    tokens = [
        tm(g, M0 + m, model, rng.randint(0, 10_000), rng.randint(1, 9), rng.uniform(0, 1))
        for g in (G1, G2, G3)
        for m in range(0, 90, 2)
        for model in ("a", "b", "c")
    ]
    expected = allocate(gpus, tokens, "model", "hour")
    for _ in range(3):
        rng.shuffle(gpus)
        rng.shuffle(tokens)
        assert allocate(gpus, tokens, "model", "hour") == expected


def test_latency_histogram_fills_p95() -> None:
    buckets = {latency_bucket_ms(100.0): 95, latency_bucket_ms(900.0): 5}
    rows = allocate(
        [gm(G1, M0)],
        [tm(G1, M0, "llama", 10), tm(G1, M0, "mistral", 10)],
        "model",
        "hour",
        latency_hist={("llama", M0): buckets, ("mistral", M0 + 60): {1.0: 1}},
    )
    assert by_group(rows)["llama"].p95_latency_ms == latency_bucket_ms(100.0)
    assert by_group(rows)["mistral"].p95_latency_ms is None  # other period


def test_rejects_unknown_grouping() -> None:
    with pytest.raises(ValueError, match="group_by"):
        allocate([], [], "region", "hour")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="granularity"):
        allocate([], [], "gpu", "week")  # type: ignore[arg-type]


# -- latency buckets and percentiles ------------------------------------------------------


def test_latency_bucket_zero_and_exact_bounds() -> None:
    assert latency_bucket_ms(0) == 0.0
    assert latency_bucket_ms(1.0) == 1.0
    bound = latency_bucket_ms(250.0)
    assert latency_bucket_ms(bound) == bound  # a bound is its own bucket
    assert latency_bucket_ms(math.nextafter(bound, math.inf)) > bound
    assert latency_bucket_ms(86_400_000) >= 86_400_000


def test_latency_bucket_monotonic_with_at_most_5_percent_width() -> None:
    rng = random.Random(11)
    samples = sorted(
        [rng.uniform(0.001, 10.0) for _ in range(2_000)]
        + [10 ** rng.uniform(-3, 7.9) for _ in range(5_000)]
        + [0.001, 0.5, 1.0, 5.0, 1_000.0, 86_400_000.0]
    )
    buckets = [latency_bucket_ms(x) for x in samples]
    assert buckets == sorted(buckets)  # monotonic
    for x, upper in zip(samples, buckets, strict=True):
        assert x <= upper < x * 1.05  # reported bound overstates by < 5 %
        assert upper == float(f"{upper:.6g}")  # stable 6-significant-digit key
    # Every bound maps to itself; the next float above it to the next bound, < 5 % higher.
    for upper in set(buckets):
        assert latency_bucket_ms(upper) == upper
        following = latency_bucket_ms(math.nextafter(upper, math.inf))
        assert upper < following < upper * 1.05


def test_latency_bucket_rejects_bad_values() -> None:
    for bad in (-1.0, math.nan, math.inf, 1e13):
        with pytest.raises(ValueError, match="latency_ms"):
            latency_bucket_ms(bad)


def test_percentile_from_buckets() -> None:
    hist = {10.0: 50, 20.0: 45, 40.0: 4, 80.0: 1}
    assert percentile_from_buckets(hist, 0.5) == 10.0
    assert percentile_from_buckets(hist, 0.95) == 20.0  # cumulative 95 reaches rank 95
    assert percentile_from_buckets(hist, 0.96) == 40.0
    assert percentile_from_buckets(hist, 1.0) == 80.0
    assert percentile_from_buckets(hist, 0.0) == 10.0
    assert percentile_from_buckets({}, 0.95) is None
    assert percentile_from_buckets({5.0: 0}, 0.95) is None
    assert percentile_from_buckets({80.0: 1, 0.0: 3}, 0.5) == 0.0  # unsorted keys
    with pytest.raises(ValueError, match="q"):
        percentile_from_buckets(hist, 1.5)


def test_percentile_error_is_under_5_percent() -> None:
    rng = random.Random(5)
    latencies = [rng.lognormvariate(5, 1.2) for _ in range(10_000)]
    hist: dict[float, int] = {}
    for x in latencies:
        b = latency_bucket_ms(x)
        hist[b] = hist.get(b, 0) + 1
    exact = sorted(latencies)
    for q in (0.5, 0.9, 0.95, 0.99):
        true = exact[math.ceil(q * len(exact)) - 1]  # nearest rank
        estimate = percentile_from_buckets(hist, q)
        assert estimate is not None
        assert true <= estimate < true * 1.05


# -- weighted tokens, tenants, energy: worked examples computed by hand ----------------------


def tok(
    gpu: str,
    minute: int,
    model: str,
    inp: int,
    out: int,
    *,
    tenant: str | None = None,
    k: float = 4.0,
    price: float = 3.6,
) -> TokenMinute:
    host = gpu.split("/")[0]
    return TokenMinute(
        gpu, host, model, minute, inp + out, 1, 0.0, price,
        tenant=tenant, input_tokens=inp, output_tokens=out, output_weight=k,
    )  # fmt: skip


def test_output_weight_splits_the_minute_by_weighted_tokens() -> None:
    """3.60 $/h -> 0.06 $ for the minute. k = 4: a = 1,000 in + 500 out = 3,000 weighted;
    b = 1,000 in + 0 out = 1,000. a gets 0.06 x 3/4 = 0.045 $: input 0.06 x 1,000/4,000 =
    0.015 $, output 0.06 x 2,000/4,000 = 0.03 $. One input token costs 0.06 / 4,000 $ =
    $15 / 1M, one output token $60 / 1M; b pays 0.015 $ for 1,000 input tokens: $15 / 1M."""
    rows = by_group(
        allocate(
            [gm(G1, M0)],
            [tok(G1, M0, "a", 1000, 500), tok(G1, M0, "b", 1000, 0)],
            "model",
            "minute",
        )
    )
    a, b = rows["a"], rows["b"]
    assert a.cost_usd == pytest.approx(0.045, rel=1e-12)
    assert a.input_cost_usd == pytest.approx(0.015, rel=1e-12)
    assert a.output_cost_usd == pytest.approx(0.03, rel=1e-12)
    assert a.cost_per_1m_input_tokens == pytest.approx(15.0, rel=1e-12)
    assert a.cost_per_1m_output_tokens == pytest.approx(60.0, rel=1e-12)
    assert a.cost_per_1m_tokens == pytest.approx(0.045 / 1500 * 1e6, rel=1e-12)  # $30 / 1M
    assert b.cost_usd == pytest.approx(0.015, rel=1e-12)
    assert b.cost_per_1m_input_tokens == pytest.approx(15.0, rel=1e-12)
    assert b.cost_per_1m_output_tokens is None  # no output tokens


def test_each_row_keeps_its_own_k() -> None:
    """k = 2 for a, k = 1 for b: a = 100 + 2 x 100 = 300, b = 100 + 100 = 200 of 500."""
    rows = by_group(
        allocate(
            [gm(G1, M0)],
            [tok(G1, M0, "a", 100, 100, k=2), tok(G1, M0, "b", 100, 100, k=1)],
            "model",
            "minute",
        )
    )
    assert rows["a"].cost_usd == pytest.approx(0.06 * 300 / 500, rel=1e-12)
    assert rows["b"].cost_usd == pytest.approx(0.06 * 200 / 500, rel=1e-12)


def test_tenant_split_with_idle_minutes() -> None:
    """Minute 0 (3.60 $/h, 0.06 $): acme 600 in + 100 out = 1,000 weighted, beta 200 + 50 =
    400, no tenant 100 + 25 = 200; of 1,600. Minute 1: reported, no tokens: idle 0.06 $.
    acme 0.06 x 1,000/1,600 = 0.0375 $, beta 0.015 $, (unattributed) 0.0075 $, (idle) 0.06 $."""
    gpus = [gm(G1, M0), gm(G1, M0 + 1)]
    tokens = [
        tok(G1, M0, "llama", 600, 100, tenant="acme"),
        tok(G1, M0, "llama", 200, 50, tenant="beta"),
        tok(G1, M0, "mistral", 100, 25),
    ]
    rows = by_group(allocate(gpus, tokens, "tenant", "hour"))
    assert set(rows) == {"acme", "beta", "(unattributed)", IDLE_GROUP}
    assert rows["acme"].cost_usd == pytest.approx(0.0375, rel=1e-12)
    assert rows["beta"].cost_usd == pytest.approx(0.015, rel=1e-12)
    assert rows["(unattributed)"].cost_usd == pytest.approx(0.0075, rel=1e-12)
    assert rows[IDLE_GROUP].cost_usd == rows[IDLE_GROUP].idle_cost_usd == pytest.approx(0.06)
    assert rows["acme"].idle_cost_usd == 0.0
    assert math.fsum(r.cost_usd for r in rows.values()) == pytest.approx(0.12, rel=1e-12)

    combo = allocate(gpus, tokens, ("tenant", "model"), "hour")
    assert [(r.group, dict(r.dims)) for r in combo] == [
        ("(idle) / (idle)", {"tenant": "(idle)", "model": "(idle)"}),
        ("(unattributed) / mistral", {"tenant": "(unattributed)", "model": "mistral"}),
        ("acme / llama", {"tenant": "acme", "model": "llama"}),
        ("beta / llama", {"tenant": "beta", "model": "llama"}),
    ]
    (gpu_row,) = allocate(gpus, tokens, ("host", "gpu"), "hour")
    assert dict(gpu_row.dims) == {"host": "h1", "gpu": G1}
    assert gpu_row.idle_cost_usd == pytest.approx(0.06, rel=1e-12)
    only_acme = allocate(gpus, tokens, "model", "hour", tenant="acme")
    assert [(r.group, r.tokens) for r in only_acme] == [("llama", 700)]
    assert only_acme[0].cost_usd == pytest.approx(0.0375, rel=1e-12)


def test_energy_from_sparse_power_readings() -> None:
    """Mean power x 60 s. Minute 0: two readings of 300 W and 100 W -> 200 W x 60 s =
    12,000 J, split like the cost (a 3,000 of 4,000 weighted -> 9,000 J). Minute 1: one
    reading of 400 W, idle -> 24,000 J to (idle). Minute 2: a reading without power -> none."""
    gpus = [
        GpuMinute(G1, "h1", M0, 7.2, 2, power_sum_w=400.0, power_samples=2),
        GpuMinute(G1, "h1", M0 + 1, 3.6, 1, power_sum_w=400.0, power_samples=1),
        GpuMinute(G1, "h1", M0 + 2, 3.6, 1, power_sum_w=0.0, power_samples=0),
    ]
    tokens = [tok(G1, M0, "a", 1000, 500), tok(G1, M0, "b", 1000, 0)]
    rows = by_group(allocate(gpus, tokens, "model", "hour"))
    assert rows["a"].energy_j == pytest.approx(9_000.0, rel=1e-12)
    assert rows["b"].energy_j == pytest.approx(3_000.0, rel=1e-12)
    assert rows[IDLE_GROUP].energy_j == pytest.approx(24_000.0, rel=1e-12)
    assert rows["a"].energy_kwh == pytest.approx(9_000 / 3.6e6, rel=1e-12)
    # 9,000 J = 0.0025 kWh over 1,500 tokens -> 1.6667 kWh per 1M tokens.
    assert rows["a"].energy_kwh_per_1m_tokens == pytest.approx(0.0025 / 1500 * 1e6, rel=1e-12)


def test_energy_counter_deltas_win_when_every_reading_has_one() -> None:
    """Minute 0: 2 readings, both with counter deltas (700 J + 500 J) -> 1,200 J (not mean
    power 250 W x 60 = 15,000 J). Minute 1: 2 readings but only one delta -> mean power."""
    gpus = [
        GpuMinute(G1, "h1", M0, 7.2, 2, power_sum_w=500.0, power_samples=2,
                  energy_delta_j=1_200.0, energy_deltas=2),
        GpuMinute(G1, "h1", M0 + 1, 7.2, 2, power_sum_w=500.0, power_samples=2,
                  energy_delta_j=700.0, energy_deltas=1),
    ]  # fmt: skip
    (row,) = allocate(gpus, [], "gpu", "minute")[:1]
    assert row.energy_j == pytest.approx(1_200.0, rel=1e-12)
    second = allocate(gpus, [], "gpu", "minute")[1]
    assert second.energy_j == pytest.approx(250.0 * 60, rel=1e-12)
