"""``GpuReader``: this host's GPUs as ``gpu.metrics.v1`` events, from the best source that works.

    >>> reader = GpuReader(host="inference-01")
    >>> events = reader.read()            # list of complete, contract-valid events
    >>> reader.active_source, reader.skipped_sources
    ('nvidia-smi', {'nvml': 'NVML shared library not found (libnvidia-ml.so.1)'})

Sources are tried in order NVML -> nvidia-smi -> seed file; with a dcgm-exporter URL the order
is NVML -> nvidia-smi -> dcgm-exporter -> seed, and ``sources`` sets any order. A source that
fails is logged once with its reason and not tried again (until ``reset()``); the first that
works stays in use until it fails too. Every read is one timestamp for all GPUs and a fresh
event_id per event.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, Final, Self

from .dcgm import SOURCE_DCGM_EXPORTER, DcgmExporterSource
from .exceptions import NoGpuSource, SourceUnavailable
from .nvml import NvmlSource
from .records import GpuSource, check_host, to_event
from .seed import SeedSource
from .smi import SmiSource

__all__ = ["KNOWN_SOURCES", "SOURCE_ORDER", "GpuReader"]

# The default order without a dcgm-exporter URL.
SOURCE_ORDER: Final = ("nvml", "nvidia-smi", "seed")
KNOWN_SOURCES: Final = ("nvml", "nvidia-smi", SOURCE_DCGM_EXPORTER, "seed")

_log = logging.getLogger(__name__)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class GpuReader:
    """Reads this host's GPUs from NVML, else nvidia-smi, else a seed file.

    Thread-safe: one lock serialises reads, so the processor's request threads and a sampling
    loop can share an instance (NVML itself is process-global anyway).
    """

    def __init__(
        self,
        host: str,
        seed_file: Path | None = None,
        rng: random.Random | None = None,
        nvidia_smi: str = "nvidia-smi",
        smi_timeout_s: float = 5.0,
        pynvml_module: ModuleType | None = None,
        clock: Callable[[], datetime] | None = None,
        dcgm_url: str | None = None,
        sources: Sequence[str] | None = None,
    ) -> None:
        self._host = check_host(host)
        self._clock = clock if clock is not None else _utc_now
        if sources is None:
            sources = KNOWN_SOURCES if dcgm_url else SOURCE_ORDER
        unknown = [name for name in sources if name not in KNOWN_SOURCES]
        if unknown or not sources or len(set(sources)) != len(sources):
            raise ValueError(
                f"GPU sources {list(sources)!r}: list each of {', '.join(KNOWN_SOURCES)} "
                "at most once, at least one"
            )
        if SOURCE_DCGM_EXPORTER in sources and not dcgm_url:
            raise ValueError("the dcgm-exporter source needs a URL (its /metrics address)")
        build: dict[str, Callable[[], GpuSource]] = {
            "nvml": lambda: NvmlSource(pynvml_module),
            "nvidia-smi": lambda: SmiSource(nvidia_smi, smi_timeout_s),
            SOURCE_DCGM_EXPORTER: lambda: DcgmExporterSource(str(dcgm_url), smi_timeout_s),
            "seed": lambda: SeedSource(host, seed_file, rng),
        }
        self._sources: tuple[GpuSource, ...] = tuple(build[name]() for name in sources)
        self._skipped: dict[str, str] = {}
        self._active: str | None = None
        self._lock = threading.Lock()

    @property
    def host(self) -> str:
        """The host name every event carries."""
        return self._host

    @property
    def active_source(self) -> str | None:
        """``nvml``, ``nvidia-smi``, ``dcgm-exporter`` or ``seed``: the last successful read's."""
        return self._active

    @property
    def skipped_sources(self) -> dict[str, str]:
        """Sources that failed, in the order tried, each with its reason (a copy)."""
        with self._lock:
            return dict(self._skipped)

    def read(self) -> list[dict[str, Any]]:
        """This host's GPUs as complete ``gpu.metrics.v1`` events.

        Raises NoGpuSource (listing every source's reason) when no source works.
        """
        with self._lock:
            for source in self._sources:
                if source.name in self._skipped:
                    continue
                try:
                    readings = source.read()
                except SourceUnavailable as exc:
                    self._skip(source, exc.reason)
                    continue
                except Exception as exc:
                    # A bug in bindings or a driver oddity we did not foresee: telemetry must
                    # fall back rather than take the producer down; the traceback is logged once.
                    self._skip(source, f"unexpected {type(exc).__name__}: {exc}", exc)
                    continue
                if self._active != source.name:
                    _log.info("gpu source active source=%s gpus=%d", source.name, len(readings))
                    self._active = source.name
                ts = self._clock()
                return [
                    to_event(
                        reading,
                        source=source.name,
                        host=self._host,
                        ts=ts,
                        event_id=str(uuid.uuid4()),
                    )
                    for reading in readings
                ]
            self._active = None
            raise NoGpuSource(self._skipped)

    def _skip(self, source: GpuSource, reason: str, error: BaseException | None = None) -> None:
        # Logged here and only here, once per source: a failed source is not retried, so a
        # host without a GPU says so at start-up instead of on every sample.
        was_active = self._active == source.name
        self._skipped[source.name] = reason
        if was_active:
            self._active = None
        _log.warning(
            "gpu source skipped source=%s reason=%s was_active=%s",
            source.name,
            json.dumps(reason, ensure_ascii=False),
            "true" if was_active else "false",
            exc_info=error,
        )
        source.close()

    def reset(self) -> None:
        """Forget failures: the next read tries NVML again (e.g. after a driver reload)."""
        with self._lock:
            for source in self._sources:
                source.close()
            self._skipped.clear()
            self._active = None

    def close(self) -> None:
        """Release NVML; the reader can still be used (it re-initialises on the next read)."""
        with self._lock:
            for source in self._sources:
                source.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
