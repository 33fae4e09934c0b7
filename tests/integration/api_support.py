"""Helpers of the HTTP API tests: a GPU reader whose answer is known, the app served by uvicorn."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI

from gpu_readers import NoGpuSource
from tests.support.processes import free_port, wait_for

# Long enough for the lifespan to join the consumer group's first metadata round trip.
_START_TIMEOUT_S = 30.0


class KnownReader:
    """A ``LocalGpuReader`` that answers what it was given, whatever GPUs this host has."""

    def __init__(self, events: list[dict[str, Any]], source: str = "nvml") -> None:
        self.events = events
        self.source = source
        self.failures: dict[str, str] = {}

    def fail(self, reasons: Mapping[str, str]) -> None:
        """From now on every source fails with these reasons, as on a host without any."""
        self.failures = dict(reasons)

    @property
    def active_source(self) -> str | None:
        return None if self.failures else self.source

    @property
    def skipped_sources(self) -> dict[str, str]:
        return dict(self.failures)

    def read(self) -> list[dict[str, Any]]:
        if self.failures:
            raise NoGpuSource(self.failures)
        return [dict(e) for e in self.events]


@contextmanager
def served(app: FastAPI) -> Iterator[str]:
    """``app`` served by uvicorn on a free 127.0.0.1 port (lifespan included); yields its URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    try:
        wait_for("uvicorn to start", lambda: server.started or not thread.is_alive(),
                 _START_TIMEOUT_S)  # fmt: skip
        assert server.started, "uvicorn stopped before it started (see the log above)"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(_START_TIMEOUT_S)
