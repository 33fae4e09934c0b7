"""The commands a new user types first: help that starts nothing, a taken port said in one line."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60, env=env,
                          check=False)  # fmt: skip


def test_processor_help_prints_usage_and_starts_nothing() -> None:
    # No Kafka or MongoDB answers for this process: had it started, it would log and hang.
    done = run(sys.executable, "-m", "processor", "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m processor")
    assert "docs/configuration.md" in done.stdout
    assert done.stderr == ""


def test_processor_refuses_unknown_arguments() -> None:
    done = run(sys.executable, "-m", "processor", "--port", "1")
    assert done.returncode == 2
    assert "unrecognized arguments: --port 1" in done.stderr


def test_smoke_test_help_prints_its_settings_and_exits_0() -> None:
    done = run("bash", "scripts/smoke-test.sh", "--help")
    assert done.returncode == 0, done.stderr
    assert "PROCESSOR_URL" in done.stdout
    assert "PASS" in done.stdout  # it says what it prints
    assert not done.stdout.startswith("#")
    bad = run("bash", "scripts/smoke-test.sh", "--events")
    assert bad.returncode == 2
    assert "see --help" in bad.stderr


def test_demo_with_its_port_taken_says_so_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run(sys.executable, "scripts/demo.py", "--state-dir", str(tmp_path),
                   "--http-port", str(port))  # fmt: skip
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()  # one line, no traceback
    assert line.startswith(f"demo: port {port} is taken by another program; pick another: ")
    assert line.endswith(" make demo")
    assert "HTTP_PORT=" in line
    assert "local stack" not in done.stdout  # nothing was started
