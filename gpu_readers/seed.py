"""GPU readings from a seed file: the last resort, for hosts with no usable GPU.

The file keeps the original deployment's format, a JSON list of objects::

    [{"gpu_index": 0, "name": "NVIDIA GeForce RTX 3090", "utilization": 0.62,
      "mem_used_mb": 18432, "mem_total_mb": 24576, "power_w": 285.0,
      "price_per_hour_usd": 0.85}]

``utilization`` is a 0-1 ratio (published as percent); ``mem_*_mb`` are MiB (what the original
deployment meant: 24576 is a 24 GiB card). Optional: ``price_per_hour_usd``, ``temperature_c``,
``clock_sm_mhz``, ``uuid``. Each read jitters the values within fixed bounds around the file's
numbers so dashboards are not flat; a seeded ``random.Random`` makes that deterministic.
"""

from __future__ import annotations

import json
import logging
import math
import random
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final

from .exceptions import SeedFileError, SourceUnavailable
from .records import MAX_GPU_INDEX, SOURCE_SEED, GpuReading

__all__ = [
    "DEFAULT_SEED_RESOURCE",
    "MEMORY_JITTER_FRACTION",
    "POWER_JITTER_FRACTION",
    "UTILIZATION_JITTER_POINTS",
    "SeedGpu",
    "SeedSource",
    "jittered_reading",
    "load_seed_file",
    "parse_seed",
    "seed_gpu_uuid",
]

DEFAULT_SEED_RESOURCE: Final = "gpu_seed.json"

# Jitter bounds: wide enough that a dashboard visibly moves, narrow enough that the numbers stay
# plausible for the card described (a seed GPU at 60 % never reads 5 % or 100 % by chance).
UTILIZATION_JITTER_POINTS: Final = 10.0
MEMORY_JITTER_FRACTION: Final = 0.05
POWER_JITTER_FRACTION: Final = 0.08

# Fixed namespace: the same host, index and name give the same UUID on every start, so a seed
# GPU keeps its Kafka partition and its history across restarts.
_SEED_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "https://gpu-token-cost.dev/seed-gpu")
_REQUIRED_KEYS: Final = (
    "gpu_index",
    "name",
    "utilization",
    "mem_used_mb",
    "mem_total_mb",
    "power_w",
)
_OPTIONAL_KEYS: Final = ("price_per_hour_usd", "temperature_c", "clock_sm_mhz", "uuid")

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SeedGpu:
    """One entry of a seed file, checked; units as in the file (ratio, MiB, W)."""

    gpu_index: int
    name: str
    utilization: float
    mem_used_mib: float
    mem_total_mib: float
    power_w: float
    price_per_hour_usd: float | None = None
    temperature_c: float | None = None
    clock_sm_mhz: float | None = None
    uuid: str | None = None


def seed_gpu_uuid(host: str, gpu_index: int, name: str) -> str:
    """Stable synthetic GPU UUID, shaped like NVML's (``GPU-`` + UUID)."""
    return f"GPU-{uuid.uuid5(_SEED_NAMESPACE, f'{host}/{gpu_index}/{name}')}"


def _number(entry: dict[str, Any], key: str, where: str) -> float:
    value = entry[key]
    # bool is an int in Python; `true` in a seed file is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SeedFileError(f"{where}: {key!r} must be a number, got {value!r}")
    if value < 0:
        raise SeedFileError(f"{where}: {key!r} must not be negative, got {value!r}")
    return value


def _optional_number(entry: dict[str, Any], key: str, where: str) -> float | None:
    return None if entry.get(key) is None else _number(entry, key, where)


def _entry(raw: Any, position: int, source: str) -> SeedGpu:
    where = f"{source}: entry {position}"
    if not isinstance(raw, dict):
        raise SeedFileError(f"{where}: must be an object, got {type(raw).__name__}")
    missing = [key for key in _REQUIRED_KEYS if key not in raw]
    if missing:
        raise SeedFileError(f"{where}: missing {', '.join(repr(key) for key in missing)}")
    unknown = sorted(set(raw) - {*_REQUIRED_KEYS, *_OPTIONAL_KEYS})
    if unknown:
        # The original deployment's files may carry keys we do not use; say so, do not fail.
        _log.warning("seed file keys ignored file=%s entry=%d keys=%s", source, position, unknown)

    index = raw["gpu_index"]
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= MAX_GPU_INDEX:
        raise SeedFileError(
            f"{where}: 'gpu_index' must be an integer 0-{MAX_GPU_INDEX}, got {index!r}"
        )
    name = raw["name"]
    if not isinstance(name, str) or not name.strip():
        raise SeedFileError(f"{where}: 'name' must be a non-empty string, got {name!r}")
    utilization = _number(raw, "utilization", where)
    if utilization > 1:
        raise SeedFileError(
            f"{where}: 'utilization' is a 0-1 ratio (0.85 = 85 %), got {utilization!r}"
        )
    used = _number(raw, "mem_used_mb", where)
    total = _number(raw, "mem_total_mb", where)
    if used > total:
        raise SeedFileError(f"{where}: 'mem_used_mb' {used} exceeds 'mem_total_mb' {total}")
    gpu_uuid = raw.get("uuid")
    if gpu_uuid is not None and (
        not isinstance(gpu_uuid, str) or not gpu_uuid.strip() or len(gpu_uuid.strip()) > 128
    ):
        raise SeedFileError(
            f"{where}: 'uuid' must be a non-empty string of at most 128 characters,"
            f" got {gpu_uuid!r}"
        )
    return SeedGpu(
        gpu_index=index,
        name=name.strip(),
        utilization=utilization,
        mem_used_mib=used,
        mem_total_mib=total,
        power_w=_number(raw, "power_w", where),
        price_per_hour_usd=_optional_number(raw, "price_per_hour_usd", where),
        temperature_c=_optional_number(raw, "temperature_c", where),
        clock_sm_mhz=_optional_number(raw, "clock_sm_mhz", where),
        uuid=None if gpu_uuid is None else gpu_uuid.strip(),
    )


def parse_seed(text: str, source: str = "seed file") -> list[SeedGpu]:
    """Check a seed file's text; SeedFileError (naming ``source`` and the entry) if unusable."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SeedFileError(
            f"{source}: not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})"
        ) from None
    if not isinstance(data, list):
        raise SeedFileError(
            f"{source}: must be a JSON list of GPU objects, got {type(data).__name__}"
        )
    if not data:
        raise SeedFileError(f"{source}: the list is empty (no GPUs)")
    entries = [_entry(raw, position, source) for position, raw in enumerate(data, start=1)]
    indexes = [entry.gpu_index for entry in entries]
    duplicates = sorted({index for index in indexes if indexes.count(index) > 1})
    if duplicates:
        raise SeedFileError(f"{source}: gpu_index listed more than once: {duplicates}")
    return entries


def load_seed_file(path: Path | None = None) -> list[SeedGpu]:
    """Read and check ``path``, or the package's ``gpu_seed.json`` when None."""
    if path is None:
        label = f"built-in {DEFAULT_SEED_RESOURCE}"
        resource = resources.files(__package__).joinpath(DEFAULT_SEED_RESOURCE)
        return parse_seed(resource.read_text(encoding="utf-8"), label)
    label = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SeedFileError(f"{label}: seed file not found") from None
    except UnicodeDecodeError:
        raise SeedFileError(f"{label}: seed file is not UTF-8 text") from None
    except OSError as exc:
        raise SeedFileError(f"{label}: cannot read seed file: {exc.strerror or exc}") from None
    return parse_seed(text, label)


def jittered_reading(entry: SeedGpu, host: str, rng: random.Random) -> GpuReading:
    """One reading of ``entry``: bounded jitter around its values, clamped to what is possible.

    Draws exactly three numbers from ``rng`` (utilization, memory, power), in that order.
    """
    utilization = entry.utilization * 100 + rng.uniform(
        -UTILIZATION_JITTER_POINTS, UTILIZATION_JITTER_POINTS
    )
    memory = entry.mem_used_mib * (1 + rng.uniform(-MEMORY_JITTER_FRACTION, MEMORY_JITTER_FRACTION))
    power = entry.power_w * (1 + rng.uniform(-POWER_JITTER_FRACTION, POWER_JITTER_FRACTION))
    unsupported = tuple(
        field
        for field, value in (
            ("temperature_gpu_c", entry.temperature_c),
            ("clock_sm_mhz", entry.clock_sm_mhz),
        )
        if value is None
    )
    return GpuReading(
        gpu_index=entry.gpu_index,
        gpu_uuid=entry.uuid or seed_gpu_uuid(host, entry.gpu_index, entry.name),
        gpu_name=entry.name,
        utilization_gpu_pct=round(min(100.0, max(0.0, utilization)), 1),
        # Whole MiB, as nvidia-smi reports it; never more than the card has.
        memory_used_mib=min(entry.mem_total_mib, max(0, round(memory))),
        memory_total_mib=entry.mem_total_mib,
        power_draw_w=round(max(0.0, power), 2),
        temperature_gpu_c=entry.temperature_c,
        clock_sm_mhz=entry.clock_sm_mhz,
        price_per_hour_usd=entry.price_per_hour_usd,
        unsupported_fields=unsupported,
    )


class SeedSource:
    """Readings from a seed file, loaded once, with fresh jitter on every read."""

    def __init__(self, host: str, path: Path | None = None, rng: random.Random | None = None):
        self._host = host
        self._path = path
        self._rng = rng if rng is not None else random.Random()
        self._entries: list[SeedGpu] | None = None

    @property
    def name(self) -> str:
        return SOURCE_SEED

    def read(self) -> list[GpuReading]:
        if self._entries is None:
            try:
                self._entries = load_seed_file(self._path)
            except SeedFileError as exc:
                raise SourceUnavailable(self.name, str(exc)) from exc
        return [jittered_reading(entry, self._host, self._rng) for entry in self._entries]

    def close(self) -> None:
        """Nothing held between reads."""
