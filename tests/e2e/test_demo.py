"""`make demo` works: the README's first command, run on private ports and a private state dir."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import REPO, free_port

pytestmark = pytest.mark.e2e


def test_demo_replays_the_real_hour_and_prints_costs_a_person_can_read(tmp_path: Path) -> None:
    kafka, mongo, http = free_port(pair=True), free_port(), free_port()
    done = subprocess.run(
        [sys.executable, "scripts/demo.py", "--state-dir", str(tmp_path / "state"),
         "--kafka-listen", f"127.0.0.1:{kafka}", "--mongo-listen", f"127.0.0.1:{mongo}",
         "--http-port", str(http), "--stop"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, f"{out[-3000:]}\n{done.stderr[-3000:]}"
    for heading in (
        "replaying one real hour",
        "the fleet",
        "by model",
        "by tenant",
        "JSON and CSV",
    ):
        assert heading in out, heading
    # Every one of the trace's 19,366 requests is counted once, tensor-parallel ones included.
    fleet = [line for line in out.splitlines() if line.strip().startswith("fleet (idle included)")]
    assert len(fleet) == 2  # the model table and the tenant table
    assert all(line.split()[3] == "19,366" for line in fleet), fleet
    table = [line.split() for line in out.splitlines()]
    rows = {c[0]: c for c in table if len(c) == 11 and c[1].replace(",", "").isdigit()}
    # $/1M all (8th column) per model: the 70B on H100 pairs costs far more than the small ones.
    per_1m = {m: float(c[7].lstrip("$")) for m, c in rows.items() if m.endswith("-instruct")}
    assert len(per_1m) == 3, rows
    assert per_1m["llama-3.1-70b-instruct"] > 10 * per_1m["llama-3.1-8b-instruct"]
    assert not re.search(r"\d[eE][-+]\d", out)  # no scientific notation where a person reads
    assert "(idle: GPUs serving nothing)" in out  # the spare GPU's time has its own row
    assert "format=csv" in out
    assert "Accept: text/csv" in out
    # Measured $/1M relative to the cheapest model within 15 % of price / capacity.
    checks = [c for c in table if len(c) == 5 and c[1] == "predicted" and c[3] == "measured"]
    assert len(checks) == 3
    for c in checks:
        predicted, measured = float(c[2].rstrip("x")), float(c[4].rstrip("x"))
        assert measured == pytest.approx(predicted, rel=0.15), c
    # --stop tore everything down: nothing listens on the demo's ports any more.
    for port in (kafka, mongo, http):
        assert subprocess.run(["ss", "-ltn", f"sport = :{port}"], capture_output=True,
                              text=True).stdout.count("LISTEN") == 0, port  # fmt: skip
