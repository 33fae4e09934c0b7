"""One record shape for every source, and its conversion to a ``gpu.metrics.v1`` event.

Sources (NVML, nvidia-smi, the seed file, the nvidia-smi log parser) each build a
``GpuReading``: values already in contract units (percent, MiB, W, °C, MHz, mJ), ``None``
for what the device could not report. ``to_event`` is the only place that knows the event's
field names, so the sources cannot drift apart.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, Final, Protocol

from schemas.contracts import GPU_METRICS_V1, format_ts, load_schema

__all__ = [
    "MAX_GPU_INDEX",
    "MAX_UUID_LEN",
    "METRIC_FIELDS",
    "OPTIONAL_METRIC_FIELDS",
    "SOURCE_NVIDIA_SMI",
    "SOURCE_NVML",
    "SOURCE_SEED",
    "GpuReading",
    "GpuSource",
    "check_host",
    "to_event",
]

SOURCE_NVML: Final = "nvml"
SOURCE_NVIDIA_SMI: Final = "nvidia-smi"
SOURCE_SEED: Final = "seed"

# Always present in an event (null when unsupported), in the contract's order.
METRIC_FIELDS: Final = (
    "utilization_gpu_pct",
    "memory_used_mib",
    "memory_total_mib",
    "power_draw_w",
    "temperature_gpu_c",
    "clock_sm_mhz",
)
# Present only when the source asked the device for them.
OPTIONAL_METRIC_FIELDS: Final = ("power_limit_w", "energy_total_mj")

# Same rule as the contract's `host` pattern: the Kafka key is "{host}/{gpu_uuid}".
_HOST_RE: Final = re.compile(r"^[^/\s]{1,253}$")
# Limits read from the contract itself, so a bound changed there is enforced by every reader.
_PROPS: Final = load_schema(GPU_METRICS_V1)["properties"]
MAX_GPU_INDEX: Final[int] = _PROPS["gpu_index"]["maximum"]
MAX_UUID_LEN: Final[int] = _PROPS["gpu_uuid"]["maxLength"]
# A longer product string is truncated, not fatal.
_MAX_NAME_LEN: Final[int] = _PROPS["gpu_name"]["maxLength"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One GPU's values in contract units; ``None`` means the device could not report it."""

    gpu_index: int
    gpu_uuid: str
    gpu_name: str
    utilization_gpu_pct: float | None
    memory_used_mib: float | None
    memory_total_mib: float | None
    power_draw_w: float | None
    temperature_gpu_c: float | None
    clock_sm_mhz: float | None
    # Optional metrics: None and not named in unsupported_fields -> the key is left out.
    power_limit_w: float | None = None
    energy_total_mj: float | None = None
    # Only the seed file sets a price; readings from real devices leave it to the price map.
    price_per_hour_usd: float | None = None
    unsupported_fields: tuple[str, ...] = ()


class GpuSource(Protocol):
    """What the reader needs from a source: a name, a way to read, a way to let go."""

    @property
    def name(self) -> str: ...

    def read(self) -> list[GpuReading]:
        """This host's GPUs, or raise SourceUnavailable with a specific reason."""
        ...

    def close(self) -> None:
        """Release what the source holds (NVML handle); safe to call more than once."""
        ...


def check_host(host: str) -> str:
    """Return ``host`` if the contract accepts it; ValueError otherwise (fail at start-up)."""
    if not isinstance(host, str) or not _HOST_RE.fullmatch(host):
        raise ValueError(f"host {host!r} must be 1-253 characters with no '/' or whitespace")
    return host


@cache
def _bounds() -> dict[str, tuple[float | None, float | None]]:
    # Read from the contract itself so a bound changed there is enforced here too.
    props = load_schema(GPU_METRICS_V1)["properties"]
    return {
        field: (props[field].get("minimum"), props[field].get("maximum"))
        for field in (*METRIC_FIELDS, *OPTIONAL_METRIC_FIELDS, "price_per_hour_usd")
    }


# A device that keeps reporting nonsense must not fill the log: warn once per GPU and field.
_warned_out_of_range: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()
_MAX_WARNED: Final = 4096


def _checked(reading: GpuReading, field: str, value: float | None) -> float | None:
    """``value`` if it is a finite number inside the contract's bounds, else None (logged)."""
    if value is None:
        return None
    low, high = _bounds()[field]
    ok = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (low is None or value >= low)
        and (high is None or value <= high)
    )
    if ok:
        return value
    key = (reading.gpu_uuid, field)
    with _warned_lock:
        first = key not in _warned_out_of_range
        if first:
            if len(_warned_out_of_range) >= _MAX_WARNED:
                _warned_out_of_range.clear()
            _warned_out_of_range.add(key)
    if first:
        _log.warning(
            "gpu value out of range, reported as null gpu=%s field=%s value=%r",
            reading.gpu_uuid,
            field,
            value,
        )
    return None


def to_event(
    reading: GpuReading, *, source: str, host: str, ts: datetime, event_id: str
) -> dict[str, Any]:
    """The complete ``gpu.metrics.v1`` event for ``reading``.

    Every null metric is named in ``unsupported_fields`` (the contract's promise), including
    values dropped because they fall outside the contract's bounds.
    """
    unsupported = list(dict.fromkeys(reading.unsupported_fields))
    event: dict[str, Any] = {
        "schema": GPU_METRICS_V1,
        "event_id": event_id,
        "ts": format_ts(ts),
        "host": host,
        "gpu_uuid": reading.gpu_uuid,
        "gpu_index": reading.gpu_index,
        "source": source,
        "gpu_name": reading.gpu_name[:_MAX_NAME_LEN],
    }
    for field in METRIC_FIELDS:
        value = _checked(reading, field, getattr(reading, field))
        event[field] = value
        if value is None and field not in unsupported:
            unsupported.append(field)
    for field in OPTIONAL_METRIC_FIELDS:
        raw = getattr(reading, field)
        if raw is None and field not in unsupported:
            continue  # not asked for by this source: leave the key out
        value = _checked(reading, field, raw)
        event[field] = value
        if value is None and field not in unsupported:
            unsupported.append(field)
    price = _checked(reading, "price_per_hour_usd", reading.price_per_hour_usd)
    if price is not None:
        event["price_per_hour_usd"] = price
    order = {name: i for i, name in enumerate((*METRIC_FIELDS, *OPTIONAL_METRIC_FIELDS))}
    event["unsupported_fields"] = sorted(unsupported, key=lambda name: order.get(name, len(order)))
    return event
