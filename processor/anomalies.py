"""GPU anomaly flags: readings that depart from their GPU's own recent window (pure, no I/O).

    >>> detector = AnomalyDetector(AnomalyRules())
    >>> flags = detector.observe("h1/GPU-1", Reading.from_event(event, ts_us))
    >>> [f.rule for f in flags]
    ['temperature_outlier']

Rules (docs/anomalies.md), for a reading ``r`` of GPU ``g`` and its **window**: the readings of
``g`` already seen whose ``(ts_us, event_id)`` is below ``r``'s, at most ``N`` of them, the
newest by that key:

* ``temperature_outlier`` / ``power_outlier`` / ``utilization_outlier``, for field ``f``
  (``temperature_gpu_c``, ``power_draw_w``, ``utilization_gpu_pct``): with ``m`` the median and
  ``MAD`` the median absolute deviation of the window's non-null values of ``f`` (at least
  ``min_readings`` of them), ``scale = max(1.4826 x MAD, floor_f / T)`` and
  ``score = |x - m| / scale``; flagged when ``score > T``, i.e. when
  ``|x - m| > max(T x 1.4826 x MAD, floor_f)``. 1.4826 x MAD estimates the standard deviation
  of normal data, so ``score`` is a robust z-score; the floor keeps a flat series (MAD = 0) from
  flagging every small wiggle.
* ``power_throttle``: ``power_draw_w >= power_cap_ratio x power_limit_w`` and the SM clock below
  ``clock_drop_ratio`` x the window's median SM clock (the board is at its power cap and the
  clock gave way). ``score`` is the relative clock drop ``1 - clock / median``.
* ``thermal_throttle``: ``temperature_gpu_c >= thermal_c`` and the same clock drop.

Determinism: the state of a GPU is the ``N`` greatest ``(ts_us, event_id)`` keys of every
reading seen (a set, so a duplicate changes nothing, and an evicted key is below every retained
one, so seeing it again changes nothing either). It depends on which readings came before, not
on batches, replicas or restarts, and a rebuild restores it from the ``N`` newest stored
readings of the GPU before the partition's first offset.
"""

from __future__ import annotations

import math
from bisect import insort
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from statistics import median
from typing import Any, Final

__all__ = [
    "MAD_TO_SIGMA",
    "OUTLIER_FIELDS",
    "RULES",
    "AnomalyDetector",
    "AnomalyRules",
    "Flag",
    "Reading",
    "evaluate",
]

# 1 / Phi^-1(3/4): for normally distributed data, 1.4826 x MAD estimates the standard deviation.
MAD_TO_SIGMA: Final = 1.4826

# field -> its outlier rule
OUTLIER_FIELDS: Final[dict[str, str]] = {
    "temperature_gpu_c": "temperature_outlier",
    "power_draw_w": "power_outlier",
    "utilization_gpu_pct": "utilization_outlier",
}
RULES: Final[tuple[str, ...]] = (*OUTLIER_FIELDS.values(), "power_throttle", "thermal_throttle")


@dataclass(frozen=True, slots=True)
class AnomalyRules:
    """The parameters of every rule (settings ANOMALY_*; defaults argued in docs/anomalies.md)."""

    window: int = 30  # N: readings of the same GPU in the window
    min_readings: int = 10  # fewer non-null values in the window: no verdict
    threshold: float = 5.0  # T, in robust standard deviations
    floor_temperature_c: float = 5.0
    floor_power_w: float = 50.0
    floor_utilization_pct: float = 30.0
    power_cap_ratio: float = 0.98
    thermal_c: float = 85.0
    clock_drop_ratio: float = 0.85

    def __post_init__(self) -> None:
        if not 1 <= self.min_readings <= self.window:
            raise ValueError(
                f"min_readings must be in [1, window={self.window}], got {self.min_readings}"
            )
        positive = ("threshold", "floor_temperature_c", "floor_power_w", "floor_utilization_pct")
        for name in positive:
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        for name in ("power_cap_ratio", "clock_drop_ratio"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {value!r}")

    def floor(self, field: str) -> float:
        return {
            "temperature_gpu_c": self.floor_temperature_c,
            "power_draw_w": self.floor_power_w,
            "utilization_gpu_pct": self.floor_utilization_pct,
        }[field]


@dataclass(frozen=True, slots=True)
class Flag:
    """One rule that fired on a reading; stored as a sub-document of the reading."""

    rule: str
    field: str
    value: float
    median: float
    score: float

    def as_doc(self) -> dict[str, Any]:
        return {"rule": self.rule, "field": self.field, "value": self.value,
                "median": self.median, "score": self.score}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Reading:
    """What the rules read of one gpu.metrics reading (None: the device did not report it)."""

    ts_us: int
    event_id: str
    temperature_gpu_c: float | None = None
    power_draw_w: float | None = None
    utilization_gpu_pct: float | None = None
    clock_sm_mhz: float | None = None
    power_limit_w: float | None = None

    @property
    def key(self) -> tuple[int, str]:
        return self.ts_us, self.event_id

    @classmethod
    def from_event(cls, event: Mapping[str, Any], ts_us: int, event_id: str) -> Reading:
        """From a validated event, or from a stored document (the same field names)."""
        return cls(
            ts_us=ts_us,
            event_id=event_id,
            **{f: _number(event.get(f)) for f in _READ_FIELDS},
        )

    def get(self, field: str) -> float | None:
        value: float | None = getattr(self, field)
        return value


_READ_FIELDS: Final = (
    "temperature_gpu_c", "power_draw_w", "utilization_gpu_pct", "clock_sm_mhz", "power_limit_w",
)  # fmt: skip


def _number(value: object) -> float | None:
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _values(window: Sequence[Reading], field: str) -> list[float]:
    return [v for r in window if (v := r.get(field)) is not None]


def evaluate(reading: Reading, window: Sequence[Reading], rules: AnomalyRules) -> list[Flag]:
    """The flags of ``reading`` against its window (the GPU's earlier readings), rule order."""
    flags: list[Flag] = []
    for field, rule in OUTLIER_FIELDS.items():
        x = reading.get(field)
        values = _values(window, field)
        if x is None or len(values) < rules.min_readings:
            continue
        m = median(values)
        mad = median([abs(v - m) for v in values])
        scale = max(MAD_TO_SIGMA * mad, rules.floor(field) / rules.threshold)
        score = abs(x - m) / scale
        if score > rules.threshold:
            flags.append(Flag(rule, field, x, m, score))
    clock = reading.clock_sm_mhz
    clocks = _values(window, "clock_sm_mhz")
    if clock is None or len(clocks) < rules.min_readings:
        return flags
    clock_median = median(clocks)
    if clock_median <= 0 or clock >= rules.clock_drop_ratio * clock_median:
        return flags
    drop = 1.0 - clock / clock_median
    power, limit = reading.power_draw_w, reading.power_limit_w
    if power is not None and limit and power >= rules.power_cap_ratio * limit:
        flags.append(Flag("power_throttle", "clock_sm_mhz", clock, clock_median, drop))
    temperature = reading.temperature_gpu_c
    if temperature is not None and temperature >= rules.thermal_c:
        flags.append(Flag("thermal_throttle", "clock_sm_mhz", clock, clock_median, drop))
    return flags


class _GpuWindow:
    """The ``N`` greatest-keyed readings seen of one GPU, sorted by key."""

    __slots__ = ("ids", "keys", "readings")

    def __init__(self) -> None:
        self.keys: list[tuple[int, str]] = []
        self.readings: dict[tuple[int, str], Reading] = {}
        self.ids: set[str] = set()

    def before(self, key: tuple[int, str]) -> list[Reading]:
        return [self.readings[k] for k in self.keys if k < key]

    def add(self, reading: Reading, size: int) -> None:
        if reading.event_id in self.ids:
            return  # a duplicate: the set of readings seen is unchanged
        insort(self.keys, reading.key)
        self.readings[reading.key] = reading
        self.ids.add(reading.event_id)
        while len(self.keys) > size:
            gone = self.keys.pop(0)
            self.ids.discard(self.readings.pop(gone).event_id)


class AnomalyDetector:
    """Per-GPU windows of the partitions one replica owns. Not thread-safe (the loop owns it)."""

    __slots__ = ("_gpus", "rules")

    def __init__(self, rules: AnomalyRules | None = None) -> None:
        self.rules = rules or AnomalyRules()
        self._gpus: dict[str, _GpuWindow] = {}

    def observe(self, gpu_key: str, reading: Reading) -> list[Flag]:
        """Flag ``reading`` against its GPU's window, then add it to the window."""
        state = self._gpus.setdefault(gpu_key, _GpuWindow())
        flags = evaluate(reading, state.before(reading.key), self.rules)
        state.add(reading, self.rules.window)
        return flags

    def restore(self, gpu_key: str, readings: Iterable[Reading]) -> None:
        """Rebuild: add stored readings (any order) without flagging them again."""
        state = self._gpus.setdefault(gpu_key, _GpuWindow())
        for reading in readings:
            state.add(reading, self.rules.window)

    def forget(self, gpu_keys: Iterable[str]) -> None:
        for key in gpu_keys:
            self._gpus.pop(key, None)
