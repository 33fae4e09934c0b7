"""Load a replay file: JSON Lines of v1 events, or an nvidia-smi CSV log.

    >>> replay = load_replay(Path("events.jsonl"), host="inference-01")
    >>> replay.events[0]["schema"], replay.offsets[:3]
    ('token.usage.v1', [0.0, 0.25, 0.25])

The whole file is read and validated before anything is sent: a file with a bad line is
rejected as a whole (ReplayFileError listing every bad JSON line with its number and reasons;
nvidia-smi logs are parsed strictly, so the first bad row is named). Replaying half a file and
then stopping would leave the pipeline with a hole that is hard to see.

Formats (``fmt="auto"`` sniffs the first non-blank line: ``{`` means JSON Lines):

* ``jsonl`` — one gpu.metrics.v1 or token.usage.v1 event per line, blank lines ignored;
  input aliases (``prompt_tokens``) are normalised; event_ids are kept as they are.
* ``smi-csv`` — ``nvidia-smi --query-gpu=timestamp,... --format=csv`` output, parsed by
  ``gpu_readers.parse_smi_log`` into gpu.metrics.v1 events for ``host`` (event_ids derived
  from host, GPU and timestamp, so replaying the same log twice adds nothing downstream).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, cast

import orjson

from gpu_readers import parse_smi_log
from producers.exceptions import ReplayFileError
from producers.pacing import replay_offsets
from schemas.contracts import normalize, parse_ts, validation_errors

__all__ = ["FORMATS", "ReplayFile", "detect_format", "load_replay", "parse_jsonl", "parse_smi_csv"]

Format = Literal["jsonl", "smi-csv"]
FORMATS: Final = ("auto", "jsonl", "smi-csv")
# A file of garbage should not print a million lines; the count of the rest is still given.
MAX_LISTED_ERRORS: Final = 1000


@dataclass(frozen=True, slots=True)
class ReplayFile:
    """A validated replay file: its events in file order and when each is due at 1x."""

    name: str
    format: Format
    events: list[dict[str, Any]]
    offsets: list[float]
    prelude: tuple[dict[str, Any], ...] = ()  # nothing to send before the events

    def items(self) -> Iterator[tuple[dict[str, Any], float]]:
        """Every event with the seconds after the first at which it is due at 1x."""
        return zip(self.events, self.offsets, strict=True)


def detect_format(text: str) -> Format:
    """``jsonl`` if the first non-blank line starts with ``{``, else ``smi-csv``."""
    for line in text.splitlines():
        stripped = line.lstrip("\ufeff").strip()
        if stripped:
            return "jsonl" if stripped.startswith("{") else "smi-csv"
    return "jsonl"


def _fail(name: str, errors: list[str]) -> ReplayFileError:
    listed = errors[:MAX_LISTED_ERRORS]
    if len(errors) > len(listed):
        listed.append(f"... and {len(errors) - len(listed)} more bad line(s)")
    head = f"{name}: {len(errors)} invalid line(s), nothing was sent:"
    return ReplayFileError("\n".join([head, *(f"  {line}" for line in listed)]))


def parse_jsonl(text: str, name: str = "<jsonl>") -> list[dict[str, Any]]:
    """Every event of a JSON Lines text, validated; ReplayFileError lists every bad line."""
    events: list[dict[str, Any]] = []
    errors: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            errors.append(f"line {number}: malformed JSON: {exc}")
            continue
        if isinstance(event, dict):
            normalize(event)  # aliases -> canonical names, as validate() does
        reasons = validation_errors(event)
        if reasons:
            errors.append(f"line {number}: {'; '.join(reasons)}")
            continue
        events.append(event)
    if errors:
        raise _fail(name, errors)
    if not events:
        raise ReplayFileError(f"{name}: no events in the file")
    return events


def parse_smi_csv(text: str, host: str, name: str = "<csv>") -> list[dict[str, Any]]:
    """gpu.metrics.v1 events of an nvidia-smi CSV log for ``host``, validated."""
    try:
        events = list(parse_smi_log(text, host))
    except ValueError as exc:  # SmiLogParseError names the line; a bad host is a ValueError too
        raise ReplayFileError(f"{name}: {exc}; nothing was sent") from None
    errors = [
        f"row {i}: {'; '.join(reasons)}"
        for i, event in enumerate(events, start=1)
        if (reasons := validation_errors(event))
    ]
    if errors:
        raise _fail(name, errors)
    if not events:
        raise ReplayFileError(f"{name}: no readings in the log")
    return events


def _read_text(path: Path) -> str:
    try:
        data = sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
    except OSError as exc:
        raise ReplayFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ReplayFileError(
            f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None


def load_replay(path: Path, *, host: str, fmt: str = "auto") -> ReplayFile:
    """Read, parse and validate a replay file (``-`` = standard input)."""
    if fmt not in FORMATS:
        raise ReplayFileError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    text = _read_text(path)
    name = "<stdin>" if str(path) == "-" else str(path)
    chosen = detect_format(text) if fmt == "auto" else cast(Format, fmt)
    events = parse_jsonl(text, name) if chosen == "jsonl" else parse_smi_csv(text, host, name)
    offsets = replay_offsets([parse_ts(e["ts"]) for e in events])
    return ReplayFile(name=name, format=chosen, events=events, offsets=offsets)
