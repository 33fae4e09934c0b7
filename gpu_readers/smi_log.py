"""Turn nvidia-smi CSV logs into ``gpu.metrics.v1`` events (the producer's replay).

    >>> for event in parse_smi_log(Path("gpu.csv").read_text(), host="inference-01"):
    ...     producer.send(event)

Two shapes are accepted:

* with a header, as written by ``nvidia-smi --query-gpu=timestamp,index,uuid,name,...
  --format=csv -l 1``: columns are found by name (``clocks.sm`` is printed as
  ``clocks.current.sm [MHz]``), values may carry units (``45 %``, ``1234 MiB``, ``250.10 W``);
  unknown columns are ignored; a repeated header line is accepted.
* without a header (``--format=csv,noheader,nounits``): a leading timestamp, then the live
  reader's columns in their order (``index,uuid,...,clocks.sm`` and optionally ``power.limit``).

Timestamps (``2026/11/23 10:32:22.123``) are taken as UTC. Parsing is lazy and strict: events
before a bad line are yielded, then ``SmiLogParseError`` (a ValueError) names the line.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Final

from .exceptions import SmiLogParseError
from .records import SOURCE_NVIDIA_SMI, check_host, to_event
from .smi import QUERY_FIELDS, row_to_reading, split_csv_line

__all__ = ["LOG_FIELDS", "parse_smi_log", "replay_event_id"]

# Header-less logs: the live reader's columns with a leading timestamp.
LOG_FIELDS: Final = ("timestamp", *QUERY_FIELDS)
_REQUIRED_COLUMNS: Final = ("timestamp", "index", "uuid", "name")

# Header names nvidia-smi prints (or that users request) -> the reader's column names.
_HEADER_ALIASES: Final = {
    "gpu_uuid": "uuid",
    "gpu_name": "name",
    "clocks.current.sm": "clocks.sm",
    "power.draw.instant": "power.draw",
    "power.draw.average": "power.draw",
    "enforced.power.limit": "power.limit",
}
_UNIT_SUFFIX_RE: Final = re.compile(r"\s*\[[^\]]*\]$")
_TS_FORMATS: Final = ("%Y/%m/%d %H:%M:%S.%f", "%Y/%m/%d %H:%M:%S")

# Replayed events get name-based UUIDs: replaying the same log twice yields the same event_ids,
# which the processor stores as MongoDB _id, so a second replay adds nothing.
_REPLAY_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "https://gpu-token-cost.dev/smi-replay")


def replay_event_id(host: str, gpu_uuid: str, ts: str) -> str:
    """The deterministic event_id of one replayed reading."""
    return str(uuid.uuid5(_REPLAY_NAMESPACE, f"{host}/{gpu_uuid}/{ts}"))


def _column(header_cell: str) -> str | None:
    # lstrip BOM: a log saved by a Windows editor starts with one.
    name = _UNIT_SUFFIX_RE.sub("", header_cell.lstrip("\ufeff").strip()).strip().lower()
    name = _HEADER_ALIASES.get(name, name)
    return name if name in LOG_FIELDS else None


def _parse_header(fields: list[str], line: int) -> tuple[str | None, ...]:
    columns = tuple(_column(cell) for cell in fields)
    missing = [name for name in _REQUIRED_COLUMNS if name not in columns]
    if missing:
        raise SmiLogParseError(line, f"header lacks column(s) {', '.join(missing)}")
    seen = [name for name in columns if name is not None]
    if len(seen) != len(set(seen)):
        raise SmiLogParseError(line, "header names a column twice")
    return columns


def _parse_timestamp(text: str) -> datetime:
    for fmt in _TS_FORMATS:
        try:
            return datetime.strptime(text.strip(), fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"timestamp: not a date and time: {text!r}") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59:59-01:00 is past year 9999 in UTC
        raise ValueError(f"timestamp: cannot be converted to UTC: {text!r}") from None


def parse_smi_log(text: str, host: str) -> Iterator[dict[str, Any]]:
    """One ``gpu.metrics.v1`` event (source ``nvidia-smi``, ts from the row) per log row.

    Raises SmiLogParseError (a ValueError) naming the 1-based line of the first bad row.
    ValueError at once if ``host`` is not a valid host name.
    """
    check_host(host)
    return _events(text, host)


def _events(text: str, host: str) -> Iterator[dict[str, Any]]:
    columns: tuple[str | None, ...] | None = None
    for line, raw_line in enumerate(text.splitlines(), start=1):
        if not raw_line.strip():
            continue
        fields = split_csv_line(raw_line)
        # A header may come first or be repeated; no data cell is the literal word "timestamp".
        if any(_column(cell) == "timestamp" for cell in fields):
            columns = _parse_header(fields, line)
            continue
        if columns is not None:
            row_columns = columns
        elif len(fields) in (len(LOG_FIELDS), len(LOG_FIELDS) - 1):
            row_columns = LOG_FIELDS[: len(fields)]
        else:
            raise SmiLogParseError(
                line,
                f"expected a header or {len(LOG_FIELDS) - 1} or {len(LOG_FIELDS)} fields "
                f"(timestamp,{','.join(QUERY_FIELDS)}), got {len(fields)}",
            )
        if len(fields) != len(row_columns):
            raise SmiLogParseError(
                line, f"expected {len(row_columns)} fields like the header, got {len(fields)}"
            )
        row = {name: value for name, value in zip(row_columns, fields, strict=True) if name}
        try:
            ts = _parse_timestamp(row["timestamp"])
            reading = row_to_reading(row)
        except ValueError as exc:
            raise SmiLogParseError(line, str(exc)) from None
        event = to_event(reading, source=SOURCE_NVIDIA_SMI, host=host, ts=ts, event_id="")
        event["event_id"] = replay_event_id(host, reading.gpu_uuid, event["ts"])
        yield event
