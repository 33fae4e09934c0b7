"""The chart's copies of compose's alerts and dashboards (scripts/chart_sync.py)."""

from __future__ import annotations

from pathlib import Path

from scripts import chart_sync


def test_the_chart_holds_exactly_what_compose_has() -> None:
    """Fails when compose/monitoring changed without `make chart-sync`."""
    assert chart_sync.differences() == []
    copies = sorted(p.name for p in (chart_sync.CHART_FILES / "dashboards").glob("*.json"))
    sources = chart_sync.MONITORING / "grafana" / "dashboards"
    assert copies == sorted(p.name for p in sources.glob("*.json"))


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    monitoring = tmp_path / "monitoring"
    (monitoring / "grafana" / "dashboards").mkdir(parents=True)
    (monitoring / "alerts.yml").write_text("groups: []\n")
    return monitoring, tmp_path / "chart-files"


def test_check_names_missing_differing_and_stale_copies(tmp_path: Path) -> None:
    monitoring, chart_files = _tree(tmp_path)
    assert chart_sync.differences(monitoring, chart_files) == [
        f"missing  {chart_files / 'alerts.yml'}"
    ]
    assert chart_sync.sync(monitoring, chart_files)
    assert chart_sync.differences(monitoring, chart_files) == []

    (monitoring / "grafana" / "dashboards" / "costs.json").write_text("{}\n")
    (monitoring / "alerts.yml").write_text("groups: [{name: x, rules: []}]\n")
    (chart_files / "dashboards" / "old.json").write_text("{}\n")
    problems = chart_sync.differences(monitoring, chart_files)
    assert [p.split()[0] for p in problems] == ["differs", "missing", "stale"]

    chart_sync.sync(monitoring, chart_files)
    assert chart_sync.differences(monitoring, chart_files) == []
    assert not (chart_files / "dashboards" / "old.json").exists()
    assert (chart_files / "dashboards" / "costs.json").read_text() == "{}\n"


def test_no_dashboards_yet_is_fine(tmp_path: Path) -> None:
    monitoring, chart_files = _tree(tmp_path)
    (monitoring / "grafana" / "dashboards").rmdir()
    chart_sync.sync(monitoring, chart_files)
    assert chart_sync.differences(monitoring, chart_files) == []
