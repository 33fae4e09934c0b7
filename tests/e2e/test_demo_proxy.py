"""`make demo-proxy` works: openai-SDK traffic through the proxy, costs by tenant printed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import REPO, free_port

pytestmark = pytest.mark.e2e


def test_demo_proxy_prints_costs_by_tenant_and_stops_everything(tmp_path: Path) -> None:
    kafka, mongo, http = free_port(pair=True), free_port(), free_port()
    done = subprocess.run(
        [sys.executable, "scripts/demo_proxy.py", "--state-dir", str(tmp_path / "state"),
         "--kafka-listen", f"127.0.0.1:{kafka}", "--mongo-listen", f"127.0.0.1:{mongo}",
         "--http-port", str(http), "--requests", "5", "--stop"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, f"{out[-3000:]}\n{done.stderr[-3000:]}"
    assert "0 usage chunk(s) seen by the client" in out
    delivered = re.search(r"events delivered \(usage \+ GPU readings\) (\d+), dropped 0", out)
    assert delivered is not None, out
    assert int(delivered.group(1)) >= 10
    rows = {
        m.group(1): (int(m.group(2)), int(m.group(3)))
        for m in re.finditer(r"^(team-[ab])\s+(\d+)\s+(\d+)\s+[\d.]+\s+\$[\d.,]+ / 1M$", out, re.M)
    }
    # The fake's deterministic counts: team-a 13 prompt words + 64 out; team-b's prompt is the
    # same text three times, glued (two seams join words: 37), + 256 out.
    assert rows == {"team-a": (5, 5 * (13 + 64)), "team-b": (5, 5 * (37 + 256))}
    for port in (kafka, mongo, http):
        assert subprocess.run(["ss", "-ltn", f"sport = :{port}"], capture_output=True,
                              text=True).stdout.count("LISTEN") == 0, port  # fmt: skip
