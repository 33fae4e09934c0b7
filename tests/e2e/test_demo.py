"""`make demo` works: the README's first command, run on private ports and a private state dir."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import REPO, free_port

pytestmark = pytest.mark.e2e


def test_demo_runs_the_pipeline_and_prints_its_costs(tmp_path: Path) -> None:
    kafka, mongo, http = free_port(pair=True), free_port(), free_port()
    done = subprocess.run(
        [sys.executable, "scripts/demo.py", "--state-dir", str(tmp_path / "state"),
         "--kafka-listen", f"127.0.0.1:{kafka}", "--mongo-listen", f"127.0.0.1:{mongo}",
         "--http-port", str(http), "--events", "500", "--rate", "250", "--stop"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, f"{out[-3000:]}\n{done.stderr[-3000:]}"
    for heading in ("GET /health", "GET /gpu/info", "documents stored", "cost by model"):
        assert heading in out, heading
    assert '"status": "ok"' in out
    assert "source=seed" in out
    assert "$/1k tok" in out
    assert "total" in out
    token_line = next(line for line in out.splitlines() if line.strip().startswith("token_usage"))
    assert int(token_line.split()[-1]) == 500
    # --stop tore everything down: nothing listens on the demo's ports any more.
    for port in (kafka, mongo, http):
        assert subprocess.run(["ss", "-ltn", f"sport = :{port}"], capture_output=True,
                              text=True).stdout.count("LISTEN") == 0, port  # fmt: skip
