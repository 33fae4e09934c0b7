"""Pacing math: deadline-based rate, GPU ticker, replay speed and offsets."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from producers.pacing import Pacer, Ticker, parse_speed, replay_offsets


def test_pacer_schedules_events_on_a_fixed_grid() -> None:
    pacer = Pacer(rate=10.0, start=100.0)
    assert pacer.delay(100.0) == 0.0
    pacer.sent()
    assert pacer.delay(100.0) == pytest.approx(0.1)
    assert pacer.delay(100.04) == pytest.approx(0.06)
    pacer.sent()
    assert pacer.due() == pytest.approx(100.2)


def test_pacer_does_not_drift_when_wakeups_are_late() -> None:
    # Every wake-up is 3 ms late; the deadlines stay on start + n/rate, so 1000 events at
    # 100/s take 10 s, not 10 s + 1000 x 3 ms.
    rate, now = 100.0, 0.0
    pacer = Pacer(rate, start=0.0)
    for _ in range(1000):
        wait = pacer.delay(now)
        if wait > 0:
            now += wait + 0.003
        pacer.sent()
    assert now == pytest.approx(999 / rate + 0.003, abs=1e-6)


def test_pacer_catches_up_a_short_lag_by_bursting() -> None:
    pacer = Pacer(rate=10.0, start=0.0)
    now = 0.5  # woke late: events 0..5 are due
    sent = 0
    while pacer.delay(now) <= 0:
        pacer.sent()
        sent += 1
    assert sent == 6


def test_pacer_forgives_lag_beyond_max_lag() -> None:
    pacer = Pacer(rate=10.0, start=0.0, max_lag_s=1.0)
    now = 60.0  # a minute-long stall
    burst = 0
    while pacer.delay(now) <= 0:
        pacer.sent()
        burst += 1
    assert burst == 11  # at most max_lag_s x rate (+ the one due now), not 600
    assert pacer.delay(now) == pytest.approx(0.1)


def test_rate_zero_means_no_waiting() -> None:
    pacer = Pacer(rate=0.0, start=0.0)
    for _ in range(1000):
        assert pacer.delay(0.0) == 0.0
        pacer.sent()


def test_pacer_rejects_negative_rate() -> None:
    with pytest.raises(ValueError, match="rate"):
        Pacer(rate=-1.0, start=0.0)


def test_ticker_fires_at_start_then_every_interval() -> None:
    ticker = Ticker(2.0, start=10.0)
    assert ticker.fire(10.0)
    assert not ticker.fire(11.9)
    assert ticker.delay(11.0) == pytest.approx(1.0)
    assert ticker.fire(12.05)
    assert ticker.next_at == pytest.approx(14.0)  # on the grid, not 14.05


def test_ticker_collapses_missed_ticks() -> None:
    ticker = Ticker(1.0, start=0.0)
    assert ticker.fire(0.0)
    assert ticker.fire(5.5)
    assert not ticker.fire(5.9)
    assert ticker.next_at == pytest.approx(6.0)


def test_ticker_needs_a_positive_interval() -> None:
    with pytest.raises(ValueError, match="interval"):
        Ticker(0.0, start=0.0)


@pytest.mark.parametrize(
    ("text", "speed"),
    [
        ("1x", 1.0),
        ("10x", 10.0),
        ("10X", 10.0),
        ("0.5x", 0.5),
        ("2", 2.0),
        (" 3x ", 3.0),
        ("max", math.inf),
        ("MAX", math.inf),
        ("0", math.inf),
    ],
)
def test_parse_speed(text: str, speed: float) -> None:
    assert parse_speed(text) == speed


@pytest.mark.parametrize("text", ["", "x", "fast", "-1x", "nanx", "1xx"])
def test_parse_speed_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="speed"):
        parse_speed(text)


def test_replay_offsets_follow_ts_gaps_and_never_go_back() -> None:
    t0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    stamps = [t0 + timedelta(seconds=s) for s in (0, 0.5, 0.5, 2.0, 1.0, 3.0)]
    assert replay_offsets(stamps) == [0.0, 0.5, 0.5, 2.0, 2.0, 3.0]
    assert replay_offsets([]) == []
