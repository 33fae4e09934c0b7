"""Run the processor as a real process (python -m processor) and talk to it over HTTP."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def free_port(pair: bool = False) -> int:
    """A TCP port free on 127.0.0.1 right now; with *pair*, port+1 is free too (the local
    stack's Kafka controller listens on the broker port + 1)."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if not pair:
            return port
        with socket.socket() as sock, contextlib.suppress(OSError):
            sock.bind(("127.0.0.1", port + 1))
            return port
    raise RuntimeError("no free port pair found on 127.0.0.1")


def wait_for(
    what: str, probe: Callable[[], T | None], timeout_s: float = 60.0, every_s: float = 0.2
) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what} (last={last!r})")


class ProcessorProcess:
    """One processor replica in its own process, logging to a file."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._env = {
            **os.environ,
            **env,
            "HTTP_HOST": "127.0.0.1",
            "HTTP_PORT": str(self.port),
            "PYTHONUNBUFFERED": "1",
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ProcessorProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "processor"],
            cwd=REPO,
            env=self._env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_for(f"processor on {self.url} to serve HTTP", self._answers, timeout_s=60)
        return self

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"processor exited with {self.proc.returncode}:\n{self.logs()}")
        try:
            httpx.get(f"{self.url}/health", timeout=5)
        except httpx.HTTPError:
            return False
        return True

    def get(self, path: str, **params: Any) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", params=params, timeout=10)

    def health(self) -> tuple[int, dict[str, Any]]:
        """(status, body) of /health; (0, {}) while the process does not answer."""
        try:
            response = self.get("/health")
        except httpx.HTTPError:
            return 0, {}
        return response.status_code, response.json()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def kill(self) -> None:
        """SIGKILL: no flush, no commit, no goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM, then fail unless the processor shut down gracefully: exit 0, the loop's
        own "stopped" line and uvicorn's shutdown line."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise AssertionError(f"processor ignored SIGTERM:\n{self.logs()}") from None
        assert self.proc.returncode == 0, f"exit {self.proc.returncode}:\n{self.logs()}"
        assert "consume loop stopped" in self.logs(), self.logs()
        assert "Application shutdown complete" in self.logs(), self.logs()
