"""``python -m producers proxy`` as a real process, in front of an upstream URL."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from devtools import processes
from devtools.ports import free_port
from devtools.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]


class ProxyProcess:
    def __init__(self, upstream: str, env: Mapping[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._env = {
            **os.environ,
            **env,
            "PROXY_UPSTREAM": upstream,
            "PROXY_LISTEN": f"127.0.0.1:{self.port}",
            "PYTHONUNBUFFERED": "1",
        }
        self.started: processes.Spawned | None = None

    def start(self) -> ProxyProcess:
        self.started = processes.spawn(
            [sys.executable, "-m", "producers", "proxy"],
            log=self.log_path,
            cwd=REPO,
            env=self._env,
            new_session=False,
        )
        wait_for(f"proxy on {self.url}", self._answers, timeout_s=30)
        return self

    def _answers(self) -> bool:
        assert self.started is not None
        if self.started.popen.poll() is not None:
            raise AssertionError(f"proxy exited {self.started.popen.returncode}:\n{self.logs()}")
        try:
            httpx.get(f"{self.url}/_proxy/health", timeout=2)
        except httpx.HTTPError:
            return False
        return True

    def health(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(f"{self.url}/_proxy/health", timeout=5).json()
        return body

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/_proxy/metrics", timeout=5).text

    def stop(self, timeout_s: float = 20.0) -> str:
        assert self.started is not None
        how = processes.stop(self.started.id, grace_s=timeout_s)
        self.started.popen.wait(10)
        return how

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]
