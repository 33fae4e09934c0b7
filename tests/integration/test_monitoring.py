"""Monitoring as files: alert rules proven by `promtool test rules`, runbooks that exist.

No Prometheus server is needed: promtool (Debian's `prometheus` package, installed by
scripts/setup-debian.sh) evaluates the rules over the synthetic series of
compose/monitoring/tests/*.yml. A missing promtool fails the test, it never skips.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML is in the lock (schemathesis); no stubs

from processor import metrics, product_metrics
from tests.integration.test_compose import compose

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


# --------------------------------------------------------------------------- compose + Grafana

GRAFANA = MONITORING / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "dashboards.yml"
# Grafana's own variables, given a representative value so promtool can parse the query.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}


def rendered_with_monitoring(file: str) -> dict[str, Any]:
    done = compose(file, "--profile", "monitoring", "config")
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


@pytest.mark.parametrize("file", ["single-host.yml", "admin-monitoring.yml"])
def test_monitoring_services_render_with_pinned_images(file: str) -> None:
    services = rendered_with_monitoring(file)["services"]
    images = {name: services[name]["image"] for name in ("prometheus", "grafana")}
    assert re.fullmatch(r"prom/prometheus:v\d+\.\d+\.\d+", images["prometheus"]), images
    assert re.fullmatch(r"grafana/grafana-oss:\d+\.\d+\.\d+", images["grafana"]), images
    for name in ("prometheus", "grafana"):
        assert "healthcheck" in services[name], name
    # docker-compose 1.29 renders short volume syntax: SOURCE:TARGET[:MODE].
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["grafana"]["volumes"]}
    assert mounts["/var/lib/grafana/dashboards"].endswith("compose/monitoring/grafana/dashboards")
    assert mounts["/etc/grafana/provisioning"].endswith("compose/monitoring/grafana/provisioning")
    config = next(a for a in services["prometheus"]["command"] if a.startswith("--config.file="))
    config_file = MONITORING / Path(config.partition("=")[2]).name
    assert config_file.is_file(), config
    out = run_promtool("check", "config", str(config_file))
    assert "1 rule files found" in out  # alerts.yml loaded


def test_single_host_monitoring_is_an_opt_in_profile() -> None:
    done = compose("single-host.yml", "config")
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"], name
    assert "profiles" not in services["processor"]


def test_single_host_prometheus_scrapes_every_processor_replica() -> None:
    config = load(MONITORING / "prometheus-single-host.yml")
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "processor")
    # DNS service discovery: one target per container of the `processor` service.
    assert job["dns_sd_configs"] == [
        {"names": ["processor"], "type": "A", "port": 8080, "refresh_interval": "30s"}
    ]
    assert config["rule_files"] == ["alerts.yml"]


def datasource_uid() -> str:
    (source,) = load(DATASOURCES)["datasources"]
    assert source["type"] == "prometheus"
    uid: str = source["uid"]
    return uid


def panels() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, panel)
        for path in DASHBOARDS
        for panel in json.loads(path.read_text("utf-8"))["panels"]
    ]


def test_dashboards_provider_loads_the_mounted_directory() -> None:
    (provider,) = load(PROVIDERS)["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_two_dashboards_with_the_panels_asked_for() -> None:
    by_title = {json.loads(p.read_text("utf-8"))["title"]: p for p in DASHBOARDS}
    assert set(by_title) == {"Token cost", "Pipeline health"}
    wanted = {
        "Token cost": ["$ per 1M tokens by model", "Cost by tenant", "Cost by model", "Idle share",
                       "Energy per 1M tokens", "GPU utilisation", "GPU power", "GPU temperature"],
        "Pipeline health": ["Consume rate", "Consumer lag across replicas", "End-to-end latency",
                            "write latency", "Dead letters", "Store up", "rebuilds"],
    }  # fmt: skip
    for title, parts in wanted.items():
        titles = [p["title"] for p in json.loads(by_title[title].read_text("utf-8"))["panels"]]
        for part in parts:
            assert any(part.lower() in t.lower() for t in titles), f"{title}: no {part!r} panel"


def test_dashboards_are_structurally_sound() -> None:
    uid = datasource_uid()
    uids = set()
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text("utf-8"))
        uids.add(dashboard["uid"])
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
    assert len(uids) == len(DASHBOARDS), "dashboard uids must differ"
    for name, panel in panels():
        where = f"{name}: panel {panel['id']} {panel['title']!r}"
        assert panel["datasource"]["uid"] == uid, where
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{where}: no unit"
        assert panel["targets"], f"{where}: no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid, where
            assert target["expr"].strip(), where


def dashboard_expressions() -> list[str]:
    return [target["expr"] for _, panel in panels() for target in panel["targets"]]


def test_every_promql_expression_parses(tmp_path: Path) -> None:
    """Dashboards' and rules' queries written as recording rules: promtool parses each one."""
    exprs = dashboard_expressions() + [rule["expr"] for rule in alert_rules()]
    rules = []
    for n, expr in enumerate(exprs):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr.replace("$labels", "").replace("$value", ""), expr
        rules.append({"record": f"check:expression_{n}", "expr": expr})
    generated = tmp_path / "expressions.yml"
    generated.write_text(json.dumps({"groups": [{"name": "expressions", "rules": rules}]}))
    out = run_promtool("check", "rules", str(generated), cwd=tmp_path)
    assert f"SUCCESS: {len(rules)} rules found" in out


def test_dashboards_use_metrics_the_processor_exports() -> None:
    used = set()
    for expr in dashboard_expressions():
        used |= set(re.findall(r"\b(?:pipeline_|tokencost_|DCGM_)\w+", expr))
    assert used, "the dashboards query no processor metric"
    assert used <= exported_metric_names(), sorted(used - exported_metric_names())
