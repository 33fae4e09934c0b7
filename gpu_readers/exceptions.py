"""Exceptions raised by the GPU readers.

GpuReaderError                 root: catch this to handle anything the package raises
├── SourceUnavailable          one source (nvml, nvidia-smi, seed) cannot read; the reader
│                              logs it once and falls back to the next source
├── NoGpuSource                every source failed; lists each source's reason
├── SeedFileError (ValueError) a seed file is missing, empty or malformed
└── SmiLogParseError (ValueError)
                               a line of an nvidia-smi CSV log cannot be parsed
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "GpuReaderError",
    "NoGpuSource",
    "SeedFileError",
    "SmiLogParseError",
    "SourceUnavailable",
]


class GpuReaderError(Exception):
    """Root of every error this package raises."""


class SourceUnavailable(GpuReaderError):
    """A GPU source cannot produce readings; ``reason`` says why in words an operator can act on."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")


class NoGpuSource(GpuReaderError):
    """No source could read this host's GPUs; ``reasons`` maps each source to its failure."""

    def __init__(self, reasons: Mapping[str, str]) -> None:
        self.reasons = dict(reasons)
        listed = "; ".join(f"{source}: {reason}" for source, reason in self.reasons.items())
        super().__init__(f"no GPU source works ({listed})")


class SeedFileError(GpuReaderError, ValueError):
    """A seed file cannot be used: missing, not JSON, empty, or an entry with a wrong field."""


class SmiLogParseError(GpuReaderError, ValueError):
    """A line of an nvidia-smi CSV log cannot be turned into an event; ``line`` is 1-based."""

    def __init__(self, line: int, reason: str) -> None:
        self.line = line
        self.reason = reason
        super().__init__(f"line {line}: {reason}")
