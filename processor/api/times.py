"""Time parameters of the API: inside the range events may carry, start before end.

start_utc, end_utc = resolve_range(start, end, timedelta(hours=1))
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from processor.exceptions import BadParameter, InvalidParameters
from schemas.contracts import ts_range

__all__ = ["resolve_range"]


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


def resolve_range(
    start: datetime | None, end: datetime | None, default: timedelta
) -> tuple[datetime, datetime]:
    """Defaults (the last ``default`` up to now) and sanity checks, as 422s with a reason."""
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
