"""Load the event contracts and check events against them.

    >>> from schemas.contracts import decode
    >>> event = decode(raw_kafka_value)          # dict, or raises ContractViolation
    >>> event["schema"], kafka_key(event)
    ('token.usage.v1', 'host-a/GPU-5f1c...')

The JSON Schema files next to this module are the single source of truth; this module only
compiles them (jsonschema-rs, so validation is cheap enough for the consume hot path) and
turns every failure into a readable reason. Both services call it: the producer before it
sends, the processor before it stores.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import resources
from typing import Any, Final, NamedTuple

import jsonschema_rs
import orjson

__all__ = [
    "GPU_METRICS_V1",
    "INPUT_ALIASES",
    "KNOWN_SCHEMAS",
    "TOKEN_USAGE_V1",
    "ContractError",
    "ContractViolation",
    "Decoded",
    "decode",
    "decode_event",
    "epoch_us",
    "format_ts",
    "from_epoch_us",
    "kafka_key",
    "load_schema",
    "normalize",
    "parse_ts",
    "ts_range",
    "validate",
    "validation_errors",
]

GPU_METRICS_V1: Final = "gpu.metrics.v1"
TOKEN_USAGE_V1: Final = "token.usage.v1"
KNOWN_SCHEMAS: Final = (GPU_METRICS_V1, TOKEN_USAGE_V1)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

# The original deployment's seeds spelt token counts the OpenAI way; we accept those names on
# input and store only the OpenTelemetry GenAI spelling.
INPUT_ALIASES: Final = {"prompt_tokens": "input_tokens", "completion_tokens": "output_tokens"}


class ContractError(Exception):
    """Root of every error this package raises."""


class ContractViolation(ContractError):
    """An event is not valid JSON, names no known contract, or breaks its contract."""

    def __init__(self, reasons: list[str]) -> None:
        self.reasons = tuple(reasons)
        super().__init__("; ".join(self.reasons))


def load_schema(name: str) -> dict[str, Any]:
    """The parsed JSON Schema of contract ``name`` (e.g. ``"token.usage.v1"``)."""
    if name not in KNOWN_SCHEMAS:
        raise ContractError(f"unknown schema {name!r} (known: {', '.join(KNOWN_SCHEMAS)})")
    text = resources.files(__package__).joinpath(f"{name}.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _validator(name: str) -> Any:
    # validate_formats: in 2020-12 "format" is only an annotation unless asked for; we need
    # date-time and uuid enforced, because ts feeds the cost window and event_id becomes _id.
    return jsonschema_rs.validator_for(load_schema(name), validate_formats=True)


@cache
def ts_range() -> tuple[datetime, datetime]:
    """``[earliest, end)`` of an event's ``ts`` in UTC, as both contracts state it.

    JSON Schema's ``date-time`` format accepts any year from 0001 to 9999 with any offset;
    some of those cannot even be converted to UTC, and none outside this range is a real
    clock. The bounds live in the schema files (``x-minimum`` / ``x-exclusiveMaximum`` of
    ``ts``) so every reader of the contract sees the same ones.
    """
    ranges = set()
    for name in KNOWN_SCHEMAS:
        prop = load_schema(name)["properties"]["ts"]
        ranges.add((prop["x-minimum"], prop["x-exclusiveMaximum"]))
    if len(ranges) != 1:
        raise ContractError(f"the contracts disagree on the range of ts: {sorted(ranges)}")
    (low, high) = ranges.pop()
    return _parse_utc(low), _parse_utc(high)


def _parse_utc(value: str) -> datetime:
    # upper(): RFC 3339 allows lower-case 't' and 'z'; fromisoformat does not.
    parsed = datetime.fromisoformat(value.upper())
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp {value!r} has no zone offset")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        # 0001-01-01T00:00:00+01:00 is a valid RFC 3339 string whose UTC time is year 0.
        raise ValueError(f"timestamp {value!r} cannot be converted to UTC") from None


def parse_ts(value: str) -> datetime:
    """RFC 3339 timestamp -> aware UTC datetime inside :func:`ts_range`; ValueError otherwise."""
    utc = _parse_utc(value)
    earliest, end = ts_range()
    if not earliest <= utc < end:
        raise ValueError(
            f"timestamp {value!r} is outside the accepted range "
            f"[{earliest:%Y-%m-%dT%H:%M:%SZ}, {end:%Y-%m-%dT%H:%M:%SZ})"
        )
    return utc


def format_ts(moment: datetime) -> str:
    """``2026-11-23T10:00:00.250000Z``: the contracts' ts, UTC with microseconds.

    A naive datetime is refused: a guessed zone would move events between cost windows.
    """
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {moment!r} has no zone")
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    # isoformat: several times faster than strftime, and producers call this once per event.
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def epoch_us(moment: datetime) -> int:
    """An aware datetime -> integer microseconds since the epoch (exact: window edges are)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_epoch_us(ts_us: int) -> datetime:
    """Integer microseconds since the epoch -> aware UTC datetime."""
    return _EPOCH + timedelta(microseconds=ts_us)


def normalize(event: dict[str, Any]) -> dict[str, Any]:
    """Rename input aliases (``prompt_tokens`` -> ``input_tokens``) in place; returns ``event``."""
    for alias, canonical in INPUT_ALIASES.items():
        if alias in event and canonical not in event:
            event[canonical] = event.pop(alias)
    return event


def _where(path: Any) -> str:
    return ".".join(str(p) for p in path) or "(event)"


def _check(event: Any) -> tuple[list[str], datetime | None]:
    """Every reason ``event`` breaks its contract, and its parsed ts when there is none."""
    if not isinstance(event, Mapping):
        return [f"event must be a JSON object, got {type(event).__name__}"], None
    name = event.get("schema")
    if name not in KNOWN_SCHEMAS:
        return [f"unknown schema {name!r} (known: {', '.join(KNOWN_SCHEMAS)})"], None
    reasons = [
        f"{_where(err.instance_path)}: {err.message}" for err in _validator(name).iter_errors(event)
    ]
    if reasons:
        return reasons, None
    # The schema's date-time check and Python's parser disagree on a few corners (leap second
    # 60, offsets that overflow, the range): the processor must never crash on a ts it accepted.
    try:
        return [], parse_ts(event["ts"])
    except ValueError as exc:
        return [f"ts: {exc}"], None


def validation_errors(event: Any) -> list[str]:
    """Every reason ``event`` breaks its contract; empty when it is valid."""
    return _check(event)[0]


def validate(event: Any) -> dict[str, Any]:
    """Return ``event`` (aliases normalised) if it is valid, else raise ContractViolation."""
    return _validated(event).event


class Decoded(NamedTuple):
    """A valid event and its ts, parsed once: integer µs since the epoch, UTC."""

    event: dict[str, Any]
    ts_us: int


def _validated(event: Any) -> Decoded:
    if isinstance(event, dict):
        normalize(event)
    reasons, ts = _check(event)
    if reasons or ts is None:
        raise ContractViolation(reasons)
    return Decoded(event, epoch_us(ts))


def decode_event(raw: bytes | str | None, *, max_bytes: int | None = None) -> Decoded:
    """Parse one Kafka value and validate it; raise ContractViolation with every reason."""
    if raw is None:
        raise ContractViolation(["empty message (null value)"])
    if max_bytes is not None and len(raw) > max_bytes:
        raise ContractViolation([f"message of {len(raw)} bytes exceeds the {max_bytes}-byte limit"])
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ContractViolation([f"malformed JSON: {exc}"]) from None
    return _validated(event)


def decode(raw: bytes | str | None, *, max_bytes: int | None = None) -> dict[str, Any]:
    """:func:`decode_event` without the parsed ts."""
    return decode_event(raw, max_bytes=max_bytes).event


def kafka_key(event: Mapping[str, Any]) -> str:
    """The partitioning key: all events of one GPU land on one partition, in order."""
    return f"{event['host']}/{event['gpu_uuid']}"
