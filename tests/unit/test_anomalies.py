"""GPU anomaly rules (processor/anomalies.py): worked examples computed by hand, per rule."""

from __future__ import annotations

import random
from typing import Any

import pytest

from processor.anomalies import RULES, AnomalyDetector, AnomalyRules, Flag, Reading, evaluate

# Small enough to write out by hand: N = 10 readings, a verdict from 5 values on, T = 5.
RULES_10 = AnomalyRules(window=10, min_readings=5, threshold=5.0, floor_temperature_c=5.0,
                        floor_power_w=50.0, floor_utilization_pct=30.0, power_cap_ratio=0.98,
                        thermal_c=85.0, clock_drop_ratio=0.85)  # fmt: skip


def reading(i: int, **values: float | None) -> Reading:
    return Reading(ts_us=i * 2_000_000, event_id=f"e{i:04d}", **values)


def window(n: int = 10, **values: Any) -> list[Reading]:
    """``n`` readings; a list value gives each reading its own, a scalar is shared."""
    out = []
    for i in range(n):
        fields = {k: (v[i] if isinstance(v, list) else v) for k, v in values.items()}
        out.append(reading(i, **fields))
    return out


def test_temperature_outlier_by_hand() -> None:
    past = window(temperature_gpu_c=[60, 61, 62, 60, 61, 62, 60, 61, 62, 61])
    # Sorted: 60 60 60 61 61 61 61 62 62 62 -> median 61. Deviations: 1 1 1 0 0 0 0 1 1 1,
    # sorted 0 0 0 0 1 1 1 1 1 1 -> MAD 1. Scale = max(1.4826 x 1, 5 / 5) = 1.4826.
    # 69 is 8 away: 8 / 1.4826 = 5.396 > 5, flagged. 68 is 7 away: 4.721, not.
    (flag,) = evaluate(reading(10, temperature_gpu_c=69.0), past, RULES_10)
    assert flag == Flag("temperature_outlier", "temperature_gpu_c", 69.0, 61.0, 8 / 1.4826)
    assert flag.score == pytest.approx(5.3959, abs=1e-4)
    assert evaluate(reading(10, temperature_gpu_c=68.0), past, RULES_10) == []
    # Below the median counts as much as above: 53 is 8 away too.
    assert [f.rule for f in evaluate(reading(10, temperature_gpu_c=53.0), past, RULES_10)] == [
        "temperature_outlier"
    ]


def test_power_outlier_on_a_flat_series_uses_the_floor() -> None:
    past = window(power_draw_w=300.0)
    # Median 300, MAD 0: the scale is the floor over T, 50 / 5 = 10 W. 360 W is 60 away,
    # score 6 > 5: flagged. 345 W is 45 away, score 4.5: not (a flat series does not make every
    # wiggle an anomaly).
    (flag,) = evaluate(reading(10, power_draw_w=360.0), past, RULES_10)
    assert flag == Flag("power_outlier", "power_draw_w", 360.0, 300.0, 6.0)
    assert evaluate(reading(10, power_draw_w=345.0), past, RULES_10) == []
    assert evaluate(reading(10, power_draw_w=350.0), past, RULES_10) == []  # 5.0 is not > 5


def test_utilization_outlier_by_hand() -> None:
    past = window(utilization_gpu_pct=[80, 82, 78, 80, 80, 81, 79, 80, 80, 80])
    # Median 80; deviations 0 2 2 0 0 1 1 0 0 0 -> sorted 0 0 0 0 0 0 1 1 2 2 -> MAD 0.
    # Scale = max(0, 30 / 5) = 6 points. 20 % is 60 away: score 10, flagged; 55 % is 25 away:
    # score 4.17, not.
    (flag,) = evaluate(reading(10, utilization_gpu_pct=20.0), past, RULES_10)
    assert flag == Flag("utilization_outlier", "utilization_gpu_pct", 20.0, 80.0, 10.0)
    assert evaluate(reading(10, utilization_gpu_pct=55.0), past, RULES_10) == []


def test_power_throttle_by_hand() -> None:
    past = window(clock_sm_mhz=1410.0, power_draw_w=380.0, power_limit_w=400.0,
                  temperature_gpu_c=70.0)  # fmt: skip
    # At the cap: 396 >= 0.98 x 400 = 392 W. Clock 1100 < 0.85 x 1410 = 1198.5 MHz.
    # Score = 1 - 1100 / 1410 = 310 / 1410. Power 396 is 16 W from 380 (scale 10): 1.6, no
    # power outlier; 72 °C is 2 from 70 (scale 1): no temperature outlier.
    at_cap = dict(clock_sm_mhz=1100.0, power_draw_w=396.0, power_limit_w=400.0,
                  temperature_gpu_c=72.0)  # fmt: skip
    (flag,) = evaluate(reading(10, **at_cap), past, RULES_10)
    assert (flag.rule, flag.field, flag.value, flag.median) == (
        "power_throttle", "clock_sm_mhz", 1100.0, 1410.0,
    )  # fmt: skip
    assert flag.score == pytest.approx(310 / 1410)
    # Below the cap (390 < 392), or the clock held (1200 >= 1198.5), or no limit: nothing.
    for change in ({"power_draw_w": 390.0}, {"clock_sm_mhz": 1200.0}, {"power_limit_w": None}):
        assert evaluate(reading(10, **{**at_cap, **change}), past, RULES_10) == [], change


def test_thermal_throttle_by_hand() -> None:
    past = window(clock_sm_mhz=1410.0, temperature_gpu_c=84.0, power_draw_w=250.0)
    # 87 °C >= 85, clock 1000 < 1198.5: score 1 - 1000 / 1410 = 410 / 1410. 87 is 3 from the
    # median 84 (MAD 0, scale 5 / 5 = 1): score 3, no temperature outlier. No power limit: no
    # power throttle.
    hot = dict(clock_sm_mhz=1000.0, temperature_gpu_c=87.0, power_draw_w=250.0)
    (flag,) = evaluate(reading(10, **hot), past, RULES_10)
    assert (flag.rule, flag.field, flag.value, flag.median) == (
        "thermal_throttle", "clock_sm_mhz", 1000.0, 1410.0,
    )  # fmt: skip
    assert flag.score == pytest.approx(410 / 1410)
    assert evaluate(reading(10, **{**hot, "temperature_gpu_c": 84.9}), past, RULES_10) == []


def test_several_rules_fire_on_one_reading_in_rule_order() -> None:
    past = window(clock_sm_mhz=1410.0, temperature_gpu_c=60.0, power_draw_w=300.0,
                  power_limit_w=400.0)  # fmt: skip
    # 90 °C is 30 from 60 (scale 1): score 30; 395 W is 95 from 300 (scale 10): 9.5; at the
    # cap (395 >= 392) with 1000 MHz (< 1198.5); 90 >= 85: thermal too.
    flags = evaluate(reading(10, clock_sm_mhz=1000.0, temperature_gpu_c=90.0,
                             power_draw_w=395.0, power_limit_w=400.0), past, RULES_10)  # fmt: skip
    assert [(f.rule, f.score) for f in flags] == [
        ("temperature_outlier", 30.0), ("power_outlier", 9.5),
        ("power_throttle", pytest.approx(410 / 1410)),
        ("thermal_throttle", pytest.approx(410 / 1410)),
    ]  # fmt: skip
    assert {f.rule for f in flags} <= set(RULES)


def test_no_verdict_before_min_readings_and_nulls_are_skipped() -> None:
    past = window(4, temperature_gpu_c=60.0)
    assert evaluate(reading(10, temperature_gpu_c=99.0), past, RULES_10) == []
    # Ten readings but only four with a temperature (a device that reports it now and then).
    sparse = window(temperature_gpu_c=[60, None, 60, None, 60, None, 60, None, None, None])
    assert evaluate(reading(10, temperature_gpu_c=99.0), sparse, RULES_10) == []
    # A null value in the reading itself is judged by no rule.
    assert evaluate(reading(10, temperature_gpu_c=None), window(temperature_gpu_c=60.0),
                    RULES_10) == []  # fmt: skip


def test_the_window_is_the_n_previous_readings_by_ts_then_event_id() -> None:
    detector = AnomalyDetector(RULES_10)
    # Ten readings at 60 °C, then ten at 90 °C: the 90s are outliers until they fill half of
    # the window (the median moves), and once the window is all 90s, 60 is the outlier.
    flagged = []
    for i in range(20):
        flags = detector.observe("h/G", reading(i, temperature_gpu_c=60.0 if i < 10 else 90.0))
        flagged.append(bool(flags))
    # i = 10..14: the window holds >= 6 readings at 60 of 10, median 60 -> flagged.
    # i = 15: 5 at 60 and 5 at 90, median 75, MAD 15: scale 22.2, 15 away: not flagged.
    assert flagged == [False] * 10 + [True] * 5 + [False] * 5
    assert detector.observe("h/G", reading(20, temperature_gpu_c=60.0))[0].median == 90.0
    # A late reading (older ts) is compared with the readings older than itself only.
    late = reading(9, temperature_gpu_c=60.0)
    late = Reading(ts_us=late.ts_us + 1, event_id="late", temperature_gpu_c=60.0)
    assert detector.observe("h/G", late) == []  # nothing older is retained: no verdict


def test_a_duplicate_does_not_change_the_state() -> None:
    once, twice = AnomalyDetector(RULES_10), AnomalyDetector(RULES_10)
    readings = [reading(i, power_draw_w=300.0 + (i % 3)) for i in range(30)]
    for r in readings:
        once.observe("h/G", r)
        twice.observe("h/G", r)
        twice.observe("h/G", r)  # redelivered at once
        twice.observe("h/G", readings[0])  # and the oldest, long evicted, again
    probe = reading(99, power_draw_w=400.0)
    assert once.observe("h/G", probe) == twice.observe("h/G", probe) != []


def _log(seed: int) -> list[tuple[str, Reading]]:
    rng = random.Random(seed)
    out = []
    for i in range(600):
        gpu = f"h/G{rng.randrange(3)}"
        ts = i * 1_000_000 + rng.randrange(-4_000_000, 4_000_000)  # out of order by up to 8 s
        spike = rng.random() < 0.05
        r = Reading(ts_us=max(ts, 0), event_id=f"e{i}",
                    temperature_gpu_c=rng.gauss(65, 1.5) + (25 if spike else 0),
                    power_draw_w=rng.gauss(300, 15), utilization_gpu_pct=rng.uniform(70, 95),
                    clock_sm_mhz=900.0 if spike else 1410.0, power_limit_w=400.0)  # fmt: skip
        out.append((gpu, r))
        if rng.random() < 0.05:
            out.append((gpu, r))  # a redelivery
    return out


def test_a_rebuild_from_the_newest_n_stored_readings_gives_the_same_flags() -> None:
    log = _log(3)
    straight = AnomalyDetector(RULES_10)
    expected = [straight.observe(g, r) for g, r in log]
    assert sum(map(bool, expected)) > 10, "the log must exercise the rules"
    for cut in (1, 57, 300, len(log) - 1):
        # A replica that stops after `cut` records; its successor rebuilds from the store (the
        # first copy of each event_id), the N newest by (ts, event_id) per GPU, in any order.
        stored: dict[str, tuple[str, Reading]] = {}
        for g, r in log[:cut]:
            stored.setdefault(r.event_id, (g, r))
        successor = AnomalyDetector(RULES_10)
        for gpu in {g for g, _ in stored.values()}:
            mine = sorted((r for g, r in stored.values() if g == gpu), key=lambda r: r.key)
            newest = mine[-RULES_10.window :]
            random.Random(cut).shuffle(newest)
            successor.restore(gpu, newest)
        got = [successor.observe(g, r) for g, r in log[cut:]]
        # Compare the first copies only: a redelivered copy's document is never stored.
        seen = {r.event_id for _, r in log[:cut]}
        for (g, r), want, have in zip(log[cut:], expected[cut:], got, strict=True):
            if r.event_id not in seen:
                assert have == want, (cut, g, r)
            seen.add(r.event_id)


def test_rules_refuse_inconsistent_parameters() -> None:
    with pytest.raises(ValueError, match="min_readings"):
        AnomalyRules(window=5, min_readings=6)
    with pytest.raises(ValueError, match="threshold"):
        AnomalyRules(threshold=0.0)
    with pytest.raises(ValueError, match="clock_drop_ratio"):
        AnomalyRules(clock_drop_ratio=1.5)


def test_the_api_model_names_every_rule() -> None:
    from typing import get_args

    from processor.api.readings import AnomalyFlag

    assert set(get_args(AnomalyFlag.model_fields["rule"].annotation)) == set(RULES)
