"""Window shorthands of the API (processor/api/times.py), at a fixed now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from processor.api.times import WINDOWS, resolve_range, window_range
from processor.exceptions import InvalidParameters

NOW = datetime(2026, 12, 6, 1, 30, 15, 250_000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("window", "start", "end"),
    [
        ("today", datetime(2026, 12, 6, tzinfo=UTC), NOW),
        ("yesterday", datetime(2026, 12, 5, tzinfo=UTC), datetime(2026, 12, 6, tzinfo=UTC)),
        ("24h", datetime(2026, 12, 5, 1, 30, 15, 250_000, tzinfo=UTC), NOW),
        ("7d", datetime(2026, 11, 29, 1, 30, 15, 250_000, tzinfo=UTC), NOW),
        ("month", datetime(2026, 12, 1, tzinfo=UTC), NOW),
    ],
)
def test_each_window_at_a_fixed_now(window: str, start: datetime, end: datetime) -> None:
    assert window_range(window, NOW) == (start, end)
    assert resolve_range(None, None, timedelta(hours=1), window=window, now=NOW) == (start, end)


def test_every_window_is_tested() -> None:
    assert set(WINDOWS) == {"today", "yesterday", "24h", "7d", "month"}


def test_boundaries_across_a_month_and_a_year() -> None:
    first = datetime(2027, 1, 1, 0, 0, 5, tzinfo=UTC)
    assert window_range("yesterday", first) == (
        datetime(2026, 12, 31, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    assert window_range("month", first) == (datetime(2027, 1, 1, tzinfo=UTC), first)
    march = datetime(2028, 3, 1, 12, tzinfo=UTC)  # 2028 is a leap year
    assert window_range("yesterday", march)[0] == datetime(2028, 2, 29, tzinfo=UTC)


def test_a_now_with_an_offset_is_read_in_utc() -> None:
    # 2026-12-06 00:30 at +02:00 is 2026-12-05 22:30 UTC: "today" is the 5th in UTC.
    local = datetime(2026, 12, 6, 0, 30, tzinfo=timezone(timedelta(hours=2)))
    assert window_range("today", local)[0] == datetime(2026, 12, 5, tzinfo=UTC)


def test_today_at_midnight_is_not_an_empty_range() -> None:
    midnight = datetime(2026, 12, 6, tzinfo=UTC)
    start, end = resolve_range(None, None, timedelta(hours=1), window="today", now=midnight)
    assert start == midnight
    assert end > start


def test_an_unknown_window_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown window 'week'; choose among: today"):
        window_range("week", NOW)
    with pytest.raises(InvalidParameters) as caught:
        resolve_range(None, None, timedelta(hours=1), window="week", now=NOW)
    (param,) = caught.value.params
    assert (param.where, param.name) == ("query", "window")


@pytest.mark.parametrize(
    ("start", "end", "named"),
    [(NOW, None, "start"), (None, NOW, "end"), (NOW - timedelta(hours=1), NOW, "start and end")],
)
def test_a_window_with_start_or_end_is_refused(
    start: datetime | None, end: datetime | None, named: str
) -> None:
    with pytest.raises(InvalidParameters) as caught:
        resolve_range(start, end, timedelta(hours=1), window="24h", now=NOW)
    (param,) = caught.value.params
    assert param.name == "window"
    assert param.reason == f"window cannot be combined with {named}: give one or the other"


def test_without_a_window_start_and_end_rule_as_before() -> None:
    start = NOW - timedelta(hours=3)
    assert resolve_range(start, NOW, timedelta(hours=1)) == (start, NOW)
