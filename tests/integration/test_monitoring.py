"""Monitoring as files: alert rules proven by `promtool test rules`, runbooks that exist.

No Prometheus server is needed: promtool (Debian's `prometheus` package, installed by
scripts/setup-debian.sh) evaluates the rules over the synthetic series of
compose/monitoring/tests/*.yml. A missing promtool fails the test, it never skips.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML is in the lock (schemathesis); no stubs

from processor import metrics, product_metrics

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "compose" / "monitoring"
ALERTS = MONITORING / "alerts.yml"
RULE_TESTS = sorted((MONITORING / "tests").glob("*.yml"))
OPERATIONS = REPO / "docs" / "operations.md"
SETUP_HINT = "run `make setup` (scripts/setup-debian.sh installs Debian's prometheus package)"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(f"`promtool` is not installed: {SETUP_HINT}")
    return path


def run_promtool(*args: str, cwd: Path = MONITORING) -> str:
    done = subprocess.run(
        [promtool(), *args], capture_output=True, text=True, check=False, timeout=120, cwd=cwd
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text("utf-8"))


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load(ALERTS)["groups"] for rule in group["rules"] if "alert" in rule]


def exported_metric_names() -> set[str]:
    """Every series name the processor serves (counters with _total, histogram parts)."""
    names: set[str] = set()
    for module in (metrics, product_metrics):
        for value in vars(module).values():
            # product_metrics.DCGM maps a name to (gauge, event field).
            candidates = (
                [v[0] for v in value.values() if isinstance(v, tuple)]
                if isinstance(value, dict)
                else [value]
            )
            for metric in candidates:
                base, typ = getattr(metric, "_name", None), getattr(metric, "_type", None)
                if not isinstance(base, str):
                    continue
                names |= {f"{base}_total"} if typ == "counter" else {base}
                if typ == "histogram":
                    names |= {f"{base}_bucket", f"{base}_sum", f"{base}_count"}
    return names


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub derives from headings: lower case, punctuation dropped, - for spaces."""
    anchors = set()
    for line in markdown.splitlines():
        if m := re.match(r"#+\s+(.*)", line):
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors


def test_alert_unit_tests_pass() -> None:
    assert RULE_TESTS, "no promtool rule tests under compose/monitoring/tests"
    out = run_promtool("test", "rules", *(str(p.relative_to(MONITORING)) for p in RULE_TESTS))
    assert "SUCCESS" in out


def test_every_alert_fires_in_a_test_and_stays_silent_in_another() -> None:
    fires: set[str] = set()
    silent: set[str] = set()
    for path in RULE_TESTS:
        for case in load(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - fires == set(), "alerts never expected to fire in a promtool test"
    assert names - silent == set(), "alerts never expected to stay silent in a promtool test"


REQUIRED_ALERTS = {
    "EventsDeadLettered", "ConsumerLagGrowing", "ConsumeLoopStuck", "NoConsumptionWhileTopicGrows",
    "WriteLatencyHigh", "EndToEndLatencyOverSLO", "MongoStoreDown", "TenantOverBudget",
    "ProcessorDown",
}  # fmt: skip


def test_alerts_are_complete_and_documented() -> None:
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} >= REQUIRED_ALERTS
    anchors = github_anchors(OPERATIONS.read_text("utf-8"))
    for rule in rules:
        notes = rule.get("annotations", {})
        assert {"summary", "description", "runbook_url"} <= notes.keys(), rule["alert"]
        doc, _, anchor = notes["runbook_url"].partition("#")
        assert doc == "docs/operations.md", rule["alert"]
        assert anchor in anchors, f"{rule['alert']}: no heading for #{anchor} in operations.md"


def test_alert_rules_use_metrics_the_processor_exports() -> None:
    used = set(re.findall(r"\b(?:pipeline_|tokencost_|DCGM_)\w+", ALERTS.read_text("utf-8")))
    assert used, "alerts.yml names no processor metric"
    assert used <= exported_metric_names(), sorted(used - exported_metric_names())


def test_alert_rules_check() -> None:
    run_promtool("check", "rules", str(ALERTS))
