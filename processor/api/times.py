"""Time parameters of the API: RFC 3339 only, inside the range events may carry; or a window.

    start: Annotated[Rfc3339 | None, Query(description="...")] = None
    window: WindowQuery = None
    start_utc, end_utc = resolve_range(start, end, timedelta(hours=1), window=window)

Window shorthands (UTC, ``[start, end)``), for a given ``now``:

* ``today``: from today 00:00 to now;      ``yesterday``: from yesterday 00:00 to today 00:00;
* ``24h``: from now - 24 h to now;          ``7d``: from now - 7 days to now;
* ``month``: from the 1st of this month 00:00 to now.

A window excludes ``start`` and ``end`` (one or the other, never both).

Pydantic alone would also take ``0.5`` or ``1700000000`` (seconds since the epoch), a bare
date or a time without seconds; none of them is RFC 3339, and a client sending them would get
a range it did not mean without knowing. Two leniencies remain on purpose, because clients
already rely on them: a time without a zone offset is read as UTC, and a space may stand for
the ``T`` (what ``str(datetime)`` prints).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Final, Literal, get_args

from fastapi import Query
from pydantic import BeforeValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from processor.exceptions import BadParameter, InvalidParameters
from schemas.contracts import ts_range

__all__ = [
    "WINDOWS",
    "EndQuery",
    "HostFilter",
    "Rfc3339",
    "Start24hQuery",
    "Window",
    "WindowQuery",
    "resolve_range",
    "window_range",
]

Window = Literal["today", "yesterday", "24h", "7d", "month"]
WINDOWS: Final[tuple[str, ...]] = get_args(Window)
WindowQuery = Annotated[
    Window | None,
    Query(
        description="A shorthand instead of start/end (UTC): today (since 00:00), yesterday "
        "(00:00 to 00:00), 24h, 7d (up to now), month (since the 1st, 00:00). Not with start "
        "or end."
    ),
]

_RFC3339: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})?", re.ASCII
)


def _rfc3339(value: object) -> object:
    if isinstance(value, str) and not _RFC3339.fullmatch(value):
        # PydanticCustomError rather than ValueError: the reason reads without "Value error, ".
        raise PydanticCustomError(
            "rfc3339", "must be an RFC 3339 date-time such as 2026-11-23T10:00:00Z"
        )
    # Upper case: RFC 3339 allows 't' and 'z', pydantic's parser wants 'T' and 'Z'.
    return value.upper() if isinstance(value, str) else value


Rfc3339 = Annotated[
    datetime,
    BeforeValidator(_rfc3339),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
# The range parameters the report routes share (the GPU readings route defaults to 1 h).
Start24hQuery = Annotated[
    Rfc3339 | None, Query(description="Inclusive, RFC 3339; default end - 24h.")
]
EndQuery = Annotated[Rfc3339 | None, Query(description="Exclusive, RFC 3339; default now.")]
# The contract's bounds for a host: a longer value can match no stored event.
HostFilter = Annotated[
    str | None,
    Query(min_length=1, max_length=253, pattern=r"^[^/\s]+$", description="Only this host."),
]


def _utc(value: datetime) -> datetime:
    # A time without a zone is read as UTC, like every ts the pipeline stores.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _in_range(name: str, value: datetime) -> datetime:
    """``value`` in UTC if it lies in the contracts' ts range, else a 422 naming ``name``."""
    earliest, latest = ts_range()
    try:
        utc = _utc(value)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-01:00 is past year 9999 in UTC
        utc = None
    if utc is None or not earliest <= utc <= latest:
        raise InvalidParameters(BadParameter(
            "query", name, f"{value.isoformat()} must lie between {earliest:%Y-%m-%dT%H:%M:%SZ} "
                           f"and {latest:%Y-%m-%dT%H:%M:%SZ}, the range events may carry",
        ))  # fmt: skip
    return utc


def window_range(window: str, now: datetime) -> tuple[datetime, datetime]:
    """``[start, end)`` of a window shorthand at ``now`` (UTC); ValueError for an unknown one.

    >>> window_range("month", datetime(2026, 12, 6, 1, 30, tzinfo=UTC))[0].isoformat()
    '2026-12-01T00:00:00+00:00'
    """
    now = _utc(now)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if window == "today":
        return midnight, now
    if window == "yesterday":
        return midnight - timedelta(days=1), midnight
    if window == "24h":
        return now - timedelta(hours=24), now
    if window == "7d":
        return now - timedelta(days=7), now
    if window == "month":
        return midnight.replace(day=1), now
    raise ValueError(f"unknown window {window!r}; choose among: {', '.join(WINDOWS)}")


def resolve_range(
    start: datetime | None,
    end: datetime | None,
    default: timedelta,
    *,
    window: str | None = None,
    now: datetime | None = None,
) -> tuple[datetime, datetime]:
    """Defaults (the last ``default`` up to now), a window, sanity checks; 422s with a reason."""
    if window is not None:
        if start is not None or end is not None:
            given = " and ".join(n for n, v in (("start", start), ("end", end)) if v is not None)
            raise InvalidParameters(BadParameter(
                "query", "window", f"window cannot be combined with {given}: give one or the other"
            ))  # fmt: skip
        try:
            start_utc, end_utc = window_range(window, now or datetime.now(UTC))
        except ValueError as exc:
            raise InvalidParameters(BadParameter("query", "window", str(exc))) from None
        if start_utc >= end_utc:  # "today" at exactly 00:00:00.000000
            end_utc = start_utc + timedelta(microseconds=1)
        return start_utc, end_utc
    end_utc = _in_range("end", end) if end is not None else datetime.now(UTC)
    if start is not None:
        start_utc = _in_range("start", start)
    else:
        # The default never reaches below what any event can carry.
        start_utc = max(end_utc - default, ts_range()[0])
    if start_utc >= end_utc:
        raise InvalidParameters(BadParameter(
            "query", "start", f"{start_utc.isoformat()} must be before end ({end_utc.isoformat()})"
        ))  # fmt: skip
    return start_utc, end_utc
