"""Copy compose's alert rules and Grafana dashboards into the Helm chart (``make chart-sync``).

compose/monitoring/ is the one source of truth; the chart cannot read files outside its own
directory, so it ships copies under files/. ``--check`` changes nothing and exits 1 naming every
file that differs (tests/unit/test_chart_sync.py runs it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parent.parent
MONITORING: Final = REPO / "compose" / "monitoring"
CHART_FILES: Final = REPO / "deploy" / "helm" / "gpu-token-cost" / "files"


def _show(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def expected(monitoring: Path = MONITORING) -> dict[str, bytes]:
    """Chart-relative path -> content, for every file the chart must hold a copy of."""
    files = {"alerts.yml": (monitoring / "alerts.yml").read_bytes()}
    for dashboard in sorted((monitoring / "grafana" / "dashboards").glob("*.json")):
        files[f"dashboards/{dashboard.name}"] = dashboard.read_bytes()
    return files


def differences(monitoring: Path = MONITORING, chart_files: Path = CHART_FILES) -> list[str]:
    """What --check reports: missing, different and stale (no longer in compose) copies."""
    want = expected(monitoring)
    problems = []
    for rel, content in want.items():
        copy = chart_files / rel
        if not copy.is_file():
            problems.append(f"missing  {_show(copy)}")
        elif copy.read_bytes() != content:
            problems.append(f"differs  {_show(copy)}")
    for stale in sorted((chart_files / "dashboards").glob("*.json")):
        if f"dashboards/{stale.name}" not in want:
            problems.append(f"stale    {_show(stale)}")
    return problems


def sync(monitoring: Path = MONITORING, chart_files: Path = CHART_FILES) -> list[str]:
    want = expected(monitoring)
    changed = []
    (chart_files / "dashboards").mkdir(parents=True, exist_ok=True)
    for rel, content in want.items():
        copy = chart_files / rel
        if not copy.is_file() or copy.read_bytes() != content:
            copy.write_bytes(content)
            changed.append(f"copied   {_show(copy)}")
    for stale in sorted((chart_files / "dashboards").glob("*.json")):
        if f"dashboards/{stale.name}" not in want:
            stale.unlink()
            changed.append(f"removed  {_show(stale)}")
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report differences, change nothing")
    args = parser.parse_args(argv)
    if args.check:
        problems = differences()
        for line in problems:
            sys.stderr.write(f"{line}\n")
        if problems:
            sys.stderr.write("the chart's copies differ from compose/monitoring: make chart-sync\n")
        return 1 if problems else 0
    for line in sync() or ["chart files already equal compose/monitoring"]:
        sys.stdout.write(f"{line}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
