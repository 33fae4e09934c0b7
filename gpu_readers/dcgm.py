"""Read GPUs from a dcgm-exporter ``/metrics`` URL (``source: dcgm-exporter``).

    >>> readings = parse_dcgm_metrics(text)       # pure: the exposition text -> GpuReading list
    >>> DcgmExporterSource("http://127.0.0.1:9400/metrics").read()

For hosts where NVIDIA's dcgm-exporter already runs (the GPU Operator installs it): no driver
bindings needed in our process, one HTTP GET. The text is parsed with prometheus_client's
parser; only ``DCGM_FI_DEV_*`` series of the fields below are used.

| contract field | dcgm-exporter series (units as the contract's) |
| --- | --- |
| utilization_gpu_pct | DCGM_FI_DEV_GPU_UTIL (%) |
| memory_used_mib | DCGM_FI_DEV_FB_USED (MiB) |
| memory_total_mib | DCGM_FI_DEV_FB_TOTAL, else FB_USED + FB_FREE + FB_RESERVED (MiB) |
| power_draw_w | DCGM_FI_DEV_POWER_USAGE (W) |
| temperature_gpu_c | DCGM_FI_DEV_GPU_TEMP (C) |
| clock_sm_mhz | DCGM_FI_DEV_SM_CLOCK (MHz) |
| power_limit_w | DCGM_FI_DEV_POWER_MGMT_LIMIT (W), when exported |
| energy_total_mj | DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION (mJ) |

**No value** is null and named in ``unsupported_fields``: a series that is absent (current
exporters skip DCGM's blank values) or a DCGM sentinel printed as a value (older exporters):
``v >= DCGM_FP64_BLANK`` (140737488355328.0) or ``v >= DCGM_INT64_BLANK``
(9223372036854775792), as DCGM's own ``DCGM_*_IS_BLANK`` macros test, or one of the four
INT32 sentinels ``DCGM_INT32_BLANK`` (0x7ffffff0) .. ``+3``, matched exactly because int32
fields are printed as int64 (dcgm-exporter's ``isInt64Blank`` does the same).

**MIG** (a series with ``GPU_I_ID``): one reading per *physical* GPU, because a GPU is what is
priced and what token events are attributed to. A GPU-wide series (no ``GPU_I_ID``) wins when
present; otherwise memory (FB_USED/FREE/RESERVED) is summed over the GPU's instances, device-wide
values (power, temperature, SM clock, energy) are taken from one instance (they are the same
device), and utilization is null: DCGM_FI_DEV_GPU_UTIL is not reported per MIG instance and an
average of instance-relative figures would not be the GPU's.
"""

from __future__ import annotations

import math
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Final

from prometheus_client.parser import text_string_to_metric_families

from .exceptions import SourceUnavailable
from .records import MAX_GPU_INDEX, MAX_UUID_LEN, GpuReading

__all__ = [
    "DCGM_FP64_BLANK",
    "DCGM_INT32_BLANK",
    "DCGM_INT64_BLANK",
    "SOURCE_DCGM_EXPORTER",
    "DcgmExporterSource",
    "is_dcgm_blank",
    "parse_dcgm_metrics",
]

SOURCE_DCGM_EXPORTER: Final = "dcgm-exporter"

# NVIDIA/DCGM dcgmlib/dcgm_structs.h; NOT_FOUND / NOT_SUPPORTED / NOT_PERMISSIONED are +1/+2/+3.
DCGM_INT32_BLANK: Final = 0x7FFFFFF0
DCGM_INT64_BLANK: Final = 0x7FFFFFFFFFFFFFF0
DCGM_FP64_BLANK: Final = 140737488355328.0
_INT32_SENTINELS: Final = frozenset(float(DCGM_INT32_BLANK + i) for i in range(4))

# Contract field -> series; memory_total has its own rule (see the module doc).
_SERIES: Final = {
    "utilization_gpu_pct": "DCGM_FI_DEV_GPU_UTIL",
    "memory_used_mib": "DCGM_FI_DEV_FB_USED",
    "power_draw_w": "DCGM_FI_DEV_POWER_USAGE",
    "temperature_gpu_c": "DCGM_FI_DEV_GPU_TEMP",
    "clock_sm_mhz": "DCGM_FI_DEV_SM_CLOCK",
    "power_limit_w": "DCGM_FI_DEV_POWER_MGMT_LIMIT",
    "energy_total_mj": "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
}
_FB_TOTAL: Final = "DCGM_FI_DEV_FB_TOTAL"
_FB_FREE: Final = "DCGM_FI_DEV_FB_FREE"
_FB_RESERVED: Final = "DCGM_FI_DEV_FB_RESERVED"
# Per-instance slices of one GPU's memory: summed over MIG instances.
_SUMMED: Final = frozenset({"DCGM_FI_DEV_FB_USED", _FB_FREE, _FB_RESERVED, _FB_TOTAL})
# Not meaningful as a sum or a copy over MIG instances.
_GPU_WIDE_ONLY: Final = frozenset({"DCGM_FI_DEV_GPU_UTIL"})
_WANTED: Final = frozenset({*_SERIES.values(), _FB_TOTAL, _FB_FREE, _FB_RESERVED})
# A dcgm-exporter answers in milliseconds; more than this and the host is in trouble anyway.
DEFAULT_TIMEOUT_S: Final = 5.0
# /metrics of a big node is tens of kB; anything past this is not a dcgm-exporter.
_MAX_BYTES: Final = 8 * 1024 * 1024


def is_dcgm_blank(value: float) -> bool:
    """True when ``value`` is one of DCGM's "no value" sentinels (or not a number at all)."""
    if not math.isfinite(value):
        return True
    return value >= DCGM_FP64_BLANK or value in _INT32_SENTINELS


@dataclass(slots=True)
class _Gpu:
    index: int
    uuid: str
    name: str = ""
    whole: dict[str, float | None] = field(default_factory=dict)
    # series -> GPU_I_ID -> value
    instances: dict[str, dict[str, float | None]] = field(default_factory=lambda: defaultdict(dict))


def _value(gpu: _Gpu, series: str) -> float | None:
    """The GPU's value of ``series`` (MIG rule in the module doc); None = no value."""
    if series in gpu.whole:
        return gpu.whole[series]
    per_instance = gpu.instances.get(series)
    if not per_instance or series in _GPU_WIDE_ONLY:
        return None
    values = list(per_instance.values())
    if any(v is None for v in values):
        return None
    numbers = [v for v in values if v is not None]
    if series in _SUMMED:
        return float(sum(numbers))
    return numbers[0]


def parse_dcgm_metrics(text: str) -> list[GpuReading]:
    """One reading per physical GPU in dcgm-exporter's exposition ``text``, by gpu index.

    ValueError when the text is not Prometheus exposition format or carries no GPU series.
    """
    gpus: dict[int, _Gpu] = {}
    for family in text_string_to_metric_families(text):
        # The parser names a counter's samples NAME_total (OpenMetrics style) even when the
        # text says NAME, as dcgm-exporter prints its counters: match on the family's name.
        series = family.name
        if series not in _WANTED:
            continue
        for sample in family.samples:
            if sample.name not in (series, f"{series}_total"):
                continue  # _created and the like
            labels = sample.labels
            index_text = labels.get("gpu", "")
            uuid = labels.get("UUID") or labels.get("uuid") or ""
            if not index_text.isdigit() or not uuid:
                continue  # not a GPU series (NVSwitch, CPU) or a label set we do not know
            index = int(index_text)
            if index > MAX_GPU_INDEX or len(uuid) > MAX_UUID_LEN:
                continue
            gpu = gpus.setdefault(index, _Gpu(index, uuid))
            gpu.name = gpu.name or labels.get("modelName") or labels.get("model_name") or ""
            value: float | None = None if is_dcgm_blank(sample.value) else float(sample.value)
            instance = labels.get("GPU_I_ID")
            if instance:
                gpu.instances[series][instance] = value
            else:
                gpu.whole[series] = value
    if not gpus:
        raise ValueError("no DCGM_FI_DEV_* series with gpu and UUID labels")
    return [_reading(gpus[i]) for i in sorted(gpus)]


def _reading(gpu: _Gpu) -> GpuReading:
    values = {name: _value(gpu, series) for name, series in _SERIES.items()}
    total = _value(gpu, _FB_TOTAL)
    if total is None:
        parts = [_value(gpu, s) for s in ("DCGM_FI_DEV_FB_USED", _FB_FREE)]
        reserved = _value(gpu, _FB_RESERVED)
        if all(p is not None for p in parts):
            total = sum(p for p in parts if p is not None) + (reserved or 0.0)
    unsupported = [name for name in _SERIES if values[name] is None]
    if total is None:
        unsupported.append("memory_total_mib")  # to_event puts it in the contract's order
    if "power_limit_w" in unsupported and not _exported(gpu, _SERIES["power_limit_w"]):
        # Not in dcgm-exporter's default counters: absent means "not asked for", not
        # "unsupported", exactly like a source that never queries it.
        unsupported.remove("power_limit_w")
    return GpuReading(
        gpu_index=gpu.index,
        gpu_uuid=gpu.uuid,
        gpu_name=gpu.name or "unknown",
        utilization_gpu_pct=values["utilization_gpu_pct"],
        memory_used_mib=values["memory_used_mib"],
        memory_total_mib=total,
        power_draw_w=values["power_draw_w"],
        temperature_gpu_c=values["temperature_gpu_c"],
        clock_sm_mhz=values["clock_sm_mhz"],
        power_limit_w=values["power_limit_w"],
        energy_total_mj=values["energy_total_mj"],
        unsupported_fields=tuple(unsupported),
    )


def _exported(gpu: _Gpu, series: str) -> bool:
    return series in gpu.whole or series in gpu.instances


class DcgmExporterSource:
    """GPUs from a dcgm-exporter URL; SourceUnavailable names the URL and the problem."""

    def __init__(self, url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.url = url
        self.timeout_s = timeout_s

    @property
    def name(self) -> str:
        return SOURCE_DCGM_EXPORTER

    def read(self) -> list[GpuReading]:
        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout_s) as response:
                body = response.read(_MAX_BYTES + 1)
        except urllib.error.HTTPError as exc:
            raise SourceUnavailable(self.name, f"{self.url} answered HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise SourceUnavailable(self.name, f"cannot read {self.url} ({reason})") from None
        if len(body) > _MAX_BYTES:
            raise SourceUnavailable(self.name, f"{self.url} answered more than {_MAX_BYTES} bytes")
        try:
            return parse_dcgm_metrics(body.decode("utf-8", errors="replace"))
        except ValueError as exc:
            raise SourceUnavailable(self.name, f"{self.url}: {exc}") from None

    def close(self) -> None:
        return None
