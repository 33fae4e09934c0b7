"""This host's GPUs as ``gpu.metrics.v1`` events: NVML -> nvidia-smi -> (dcgm-exporter) -> seed.

    >>> from gpu_readers import GpuReader, parse_smi_log
    >>> reader = GpuReader(host="inference-01")
    >>> for event in reader.read():              # validated shape, fresh event_id each
    ...     publish(event)
    >>> reader.active_source                     # 'nvml' | 'nvidia-smi' | 'seed'
    >>> events = list(parse_smi_log(log_text, host="inference-01"))   # replay of CSV logs

Used by the producer (to publish) and by the processor's ``/gpu/info``. See docs/gpu-readers.md.
"""

from __future__ import annotations

from .dcgm import SOURCE_DCGM_EXPORTER, parse_dcgm_metrics
from .exceptions import (
    GpuReaderError,
    NoGpuSource,
    SeedFileError,
    SmiLogParseError,
    SourceUnavailable,
)
from .reader import KNOWN_SOURCES, SOURCE_ORDER, GpuReader
from .records import SOURCE_NVIDIA_SMI, SOURCE_NVML, SOURCE_SEED, GpuReading
from .seed import load_seed_file, seed_gpu_uuid
from .smi_log import parse_smi_log

__all__ = [
    "KNOWN_SOURCES",
    "SOURCE_DCGM_EXPORTER",
    "SOURCE_NVIDIA_SMI",
    "SOURCE_NVML",
    "SOURCE_ORDER",
    "SOURCE_SEED",
    "GpuReader",
    "GpuReaderError",
    "GpuReading",
    "NoGpuSource",
    "SeedFileError",
    "SmiLogParseError",
    "SourceUnavailable",
    "load_seed_file",
    "parse_dcgm_metrics",
    "parse_smi_log",
    "seed_gpu_uuid",
]
