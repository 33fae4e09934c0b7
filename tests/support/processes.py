"""Run the processor as a real process (python -m processor) and talk to it over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from devtools import processes
from devtools.ports import free_port
from devtools.waiting import wait_for

# free_port and wait_for live in the dev toolkit; importable from here for older tests.
__all__ = ["REPO", "ProcessorProcess", "free_port", "wait_for"]

REPO = Path(__file__).resolve().parents[2]


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
        self.started: processes.Spawned | None = None

    def start(self) -> ProcessorProcess:
        # Same session as pytest: a Ctrl-C of the test run reaches the replica too.
        started = processes.spawn(
            [sys.executable, "-m", "processor"],
            log=self.log_path,
            cwd=REPO,
            env=self._env,
            new_session=False,
        )
        self.started = started
        wait_for(f"processor on {self.url} to serve HTTP", self._answers, timeout_s=60)
        return self

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        assert self.started is not None, "start() first"
        return self.started.popen

    def _answers(self) -> bool:
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
        if self.started is not None:
            processes.kill(self.started.id)
            self.proc.wait(10)

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM, then fail unless the processor shut down gracefully: exit 0, the loop's
        own "stopped" line and uvicorn's shutdown line."""
        assert self.started is not None, "start() first"
        how = processes.stop(self.started.id, grace_s=timeout_s)
        self.proc.wait(10)
        if how.startswith("killed"):
            raise AssertionError(f"processor ignored SIGTERM:\n{self.logs()}")
        assert self.proc.returncode == 0, f"exit {self.proc.returncode}:\n{self.logs()}"
        assert "consume loop stopped" in self.logs(), self.logs()
        assert "Application shutdown complete" in self.logs(), self.logs()
