"""The four-VM deployment, simulated: `scripts/vmsim.py run` must pass every check and leave
nothing behind (no namespace, no process).

Needs root and the Debian tools of `make setup` (ip, nft); it fails, never skips, without them:
a deployment that was not checked must not look green.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
VMSIM = REPO / "scripts" / "vmsim.py"
# Namespace names are global on the machine: VMSIM_PREFIX (default gtc-) keeps this run's apart
# from another checkout's; the same value is handed to vmsim below.
PREFIX = os.environ.get("VMSIM_PREFIX") or "gtc-"
OUR_NAMESPACES = {f"{PREFIX}{name}" for name in ("net", "vm1", "vm2", "vm3", "vm4", "admin")}
# A warm run takes about 40 s; the first one on a machine also fetches Kafka's jars and builds
# FerretDB (stack.py caches both), which can take many minutes.
RUN_TIMEOUT_S = 1500
# After a timeout vmsim gets SIGTERM and this long to tear down (servers stop in seconds).
TEARDOWN_TIMEOUT_S = 180

# Lines that must be there (the brief's negative and positive checks, the smoke test steps).
MUST_PASS = (
    "root-namespace-isolated",
    "open vm3->vm1:9092",
    "open vm3->vm2:27017",
    "open vm4->vm1:9092",
    "open admin->vm3:8080",
    "blocked vm4->vm2:27017",
    "blocked admin->vm1:9092",
    "health",
    "gpu-info",
    "stats-before",
    "produce",
    "stored",
    "costs",
    "steady-producer-vm4",
    "teardown",
)


def namespaces() -> set[str]:
    out = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


@pytest.mark.timeout(RUN_TIMEOUT_S + TEARDOWN_TIMEOUT_S + 60)
def test_four_host_simulation_passes_and_leaves_nothing_behind() -> None:
    if os.geteuid() != 0:
        pytest.fail("scripts/vmsim.py needs root (network namespaces, veth pairs, nftables)")
    missing = [t for t in ("ip", "nft", "java") if shutil.which(t) is None]
    if missing:
        pytest.fail(f"missing tools {missing}: run `make setup` (and `make install`)")
    left = OUR_NAMESPACES & namespaces()
    assert not left, (
        f"namespaces {left} exist already: `VMSIM_PREFIX={PREFIX} scripts/vmsim.py down`"
    )

    proc = subprocess.Popen(
        [sys.executable, str(VMSIM), "run"],
        cwd=REPO,
        env={**os.environ, "VMSIM_PREFIX": PREFIX},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        # SIGTERM, not SIGKILL: vmsim turns it into its teardown (processes, namespaces).
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=TEARDOWN_TIMEOUT_S)
        pytest.fail(f"vmsim run took over {RUN_TIMEOUT_S} s:\n{output}")

    lines = output.splitlines()
    failed = [line for line in lines if line.startswith("FAIL ")]
    passed = [line.removeprefix("PASS ") for line in lines if line.startswith("PASS ")]
    assert proc.returncode == 0, f"vmsim run exited {proc.returncode}:\n{output}"
    assert not failed, output
    for name in MUST_PASS:
        assert any(p == name or p.startswith(f"{name} ") for p in passed), f"{name}:\n{output}"
    assert not OUR_NAMESPACES & namespaces(), f"namespaces left behind:\n{output}"
    assert "no namespace left" in output
