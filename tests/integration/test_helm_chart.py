"""The Helm chart, validated offline: lint, render every variant, check every manifest.

Built-in kinds are checked against the Kubernetes API schemas that `kubernetes-validate` ships
(strict: an unknown field fails); the custom resources (ScaledObject, ServiceMonitor,
PrometheusRule, KafkaTopic) against the openAPIV3Schema of their operators' CRDs, vendored at
pinned releases under tests/data/crds (SOURCES.md). Helm is built from source into the cache on
first use (devtools/helm.py). No cluster is involved: nothing here is applied anywhere.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import cache
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]

from devtools.helm import CHART_DIR, install_helm
from devtools.stack.config import REPO, default_cache_dir

# A cold Go build of helm takes minutes on two shared cores (the first test pays for it).
pytestmark = pytest.mark.timeout(1800)

CI_VALUES = CHART_DIR / "ci"
CRD_DIR = REPO / "tests" / "data" / "crds"
CONFIG_DOC = REPO / "docs" / "configuration.md"
# The oldest minor the chart declares (kubeVersion >=1.27 has long left support; 1.31 is the
# oldest still maintained upstream) and the newest kubernetes-validate ships.
KUBE_VERSIONS = ("1.31.0", "1.37.0")
PROMETHEUS_OPERATOR = "prometheus-operator-v0.93.0"
CRD_FILES = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda-v2.20.2-scaledobjects.yaml",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): f"{PROMETHEUS_OPERATOR}-servicemonitors.yaml",
    ("monitoring.coreos.com/v1", "PrometheusRule"): f"{PROMETHEUS_OPERATOR}-prometheusrules.yaml",
    ("kafka.strimzi.io/v1", "KafkaTopic"): "strimzi-1.2.0-kafkatopics.yaml",
}

COMMON = {"ServiceAccount", "Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"}
VARIANTS: dict[str, set[str]] = {
    "default": COMMON | {"Job"},
    "gpu": COMMON | {"Job", "DaemonSet"},
    "dcgm": COMMON | {"Job", "DaemonSet"},
    # ConfigMap: one per Grafana dashboard of compose/monitoring (the sidecar's).
    "keda": COMMON | {"Job", "ScaledObject", "ServiceMonitor", "PrometheusRule", "ConfigMap"},
    "hpa": COMMON | {"Job", "HorizontalPodAutoscaler"},
    "strimzi": COMMON | {"KafkaTopic"},
    "proxy": COMMON | {"Job"},
}


@pytest.fixture(scope="session")
def helm() -> Path:
    return install_helm(default_cache_dir())


def _helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm), *args], capture_output=True, text=True, timeout=120, check=False
    )


def render(helm: Path, *args: str) -> list[dict[str, Any]]:
    done = _helm(helm, "template", "gtc", str(CHART_DIR), "--namespace", "gpu-cost", *args)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def render_variant(helm: Path, variant: str, *extra: str) -> list[dict[str, Any]]:
    return render(helm, "-f", str(CI_VALUES / f"{variant}-values.yaml"), *extra)


def render_fails(helm: Path, *args: str) -> str:
    done = _helm(helm, "template", "gtc", str(CHART_DIR), *args)
    assert done.returncode != 0, f"rendered although it should not:\n{done.stdout[:2000]}"
    return done.stderr


def find(docs: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    hits = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    assert len(hits) == 1, f"{len(hits)} {kind} named *{name_suffix}"
    return hits[0]


def container_env(workload: dict[str, Any]) -> dict[str, str]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", "<from>") for e in container["env"]}


@cache
def crd_schema(api_version: str, kind: str) -> dict[str, Any]:
    crd = yaml.safe_load((CRD_DIR / CRD_FILES[(api_version, kind)]).read_text())
    group, version = api_version.split("/")
    assert crd["spec"]["group"] == group
    assert crd["spec"]["names"]["kind"] == kind
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version and v["served"]]
    schema: dict[str, Any] = served["schema"]["openAPIV3Schema"]
    return schema


def validate(doc: dict[str, Any]) -> None:
    key = (doc["apiVersion"], doc["kind"])
    if key in CRD_FILES:
        # A structural OpenAPI v3 schema reads as draft 7 (x-kubernetes-* keys are ignored).
        # Not check_schema(): its patterns are Go regexps, e.g. "^(?i)(abort|warn)?$".
        jsonschema.Draft7Validator(crd_schema(*key)).validate(doc)
        return
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(doc, version, strict=True)


def test_lint_every_variant(helm: Path) -> None:
    for variant in VARIANTS:
        done = _helm(
            helm,
            "lint",
            "--strict",
            str(CHART_DIR),
            "-f",
            str(CI_VALUES / f"{variant}-values.yaml"),
        )
        assert done.returncode == 0, f"{variant}:\n{done.stdout}\n{done.stderr}"


def test_every_ci_values_file_is_a_tested_variant() -> None:
    files = {p.name.removesuffix("-values.yaml") for p in CI_VALUES.glob("*-values.yaml")}
    assert files == set(VARIANTS)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_renders_valid_manifests(helm: Path, variant: str) -> None:
    docs = render_variant(helm, variant)
    assert {d["kind"] for d in docs} == VARIANTS[variant]
    for doc in docs:
        try:
            validate(doc)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
            pytest.fail(f"{variant}: {doc['kind']}/{doc['metadata']['name']}: {exc}")


def test_validation_rejects_what_the_cluster_would() -> None:
    """The validators are not no-ops: a wrong field fails each kind of check."""
    bad_deploy = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
                  "spec": {"replicas": "two", "selector": {}, "template": {}}}  # fmt: skip
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(bad_deploy)
    bad_scaled = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                  "metadata": {"name": "x"}, "spec": {"maxReplicaCount": 12}}  # fmt: skip
    with pytest.raises(jsonschema.ValidationError, match="scaleTargetRef"):
        validate(bad_scaled)


def test_processor_hardening_probes_and_pdb(helm: Path) -> None:
    docs = render_variant(helm, "default")
    deploy = find(docs, "Deployment", "-processor")
    pod = deploy["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["limits"]
    assert container["resources"]["requests"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["livenessProbe"]["exec"]["command"][:2] == ["python", "-c"]
    assert deploy["spec"]["replicas"] == 2
    env = container_env(deploy)
    assert env["MONGO_URL_FILE"] == "/run/secrets/gtc/mongo_url"
    assert "MONGO_URL" not in env
    assert env["KAFKA_BOOTSTRAP"].startswith("kafka-0.kafka.example.internal:9092")
    assert find(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


class _Health(BaseHTTPRequestHandler):
    reply: tuple[int, bytes] = (200, b"{}")

    def do_GET(self) -> None:
        status, body = self.reply
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[HTTPServer]:
    server = HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _health_body(status: str, seconds_since_poll: float | None) -> bytes:
    return json.dumps({"status": status, "failing": [] if status == "ok" else ["mongodb"],
                       "consumer": {"ok": status == "ok", "seconds_since_poll": seconds_since_poll}}
                      ).encode()  # fmt: skip


def test_liveness_fails_only_when_the_loop_is_dead(helm: Path, health_server: HTTPServer) -> None:
    """Run the rendered liveness command against /health answers of each kind."""
    port = health_server.server_address[1]
    deploy = find(render_variant(helm, "default", "--set", f"processor.port={port}"), "Deployment")
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    command = container["livenessProbe"]["exec"]["command"]
    assert command == container["startupProbe"]["exec"]["command"]

    def live(status: int, body: bytes) -> bool:
        _Health.reply = (status, body)
        done = subprocess.run([sys.executable, *command[1:]], capture_output=True, timeout=30)
        return done.returncode == 0

    assert live(200, _health_body("ok", 0.3))
    # MongoDB down: 503, but the paused loop still polls -> alive, no restart.
    assert live(503, _health_body("degraded", 0.2))
    # The loop never polled (thread died at start) or is stuck past the limit -> dead.
    assert not live(503, _health_body("degraded", None))
    assert not live(503, _health_body("degraded", 61.0))
    # Not the health report at all (e.g. a 401 problem document) -> dead, not silently live.
    assert not live(401, b'{"title": "Unauthorized"}')
    health_server.shutdown()
    health_server.server_close()
    assert not live(200, b"")  # nothing listens: the process is gone


def test_gpu_producers_run_on_gpu_nodes(helm: Path) -> None:
    ds = find(render_variant(helm, "gpu"), "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    env = container_env(ds)
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert env["PRODUCER_RATE"] == "0.5"
    assert env["PRODUCER_HOST"] == "<from>"  # the node's name, from the downward API
    # No GPU is requested: the producer must not take one from the inference pods.
    assert "nvidia.com/gpu" not in json.dumps(pod["containers"][0]["resources"])

    dcgm = find(render_variant(helm, "dcgm"), "DaemonSet")
    assert "runtimeClassName" not in dcgm["spec"]["template"]["spec"]
    assert container_env(dcgm)["PRODUCER_GPU_SOURCES"] == "dcgm"
    assert "NVIDIA_VISIBLE_DEVICES" not in container_env(dcgm)


def test_keda_scales_on_the_group_lag_up_to_the_partitions(helm: Path) -> None:
    docs = render_variant(helm, "keda")
    scaled = find(docs, "ScaledObject")
    assert scaled["spec"]["maxReplicaCount"] == 12
    assert scaled["spec"]["minReplicaCount"] == 2
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == "processor"
    assert trigger["metadata"]["topic"] == "tokens"
    assert trigger["metadata"]["lagThreshold"] == "5000"
    assert "replicas" not in find(docs, "Deployment")["spec"]  # the autoscaler owns it
    fewer = find(render_variant(helm, "keda", "--set", "kafka.partitions=6"), "ScaledObject")
    assert fewer["spec"]["maxReplicaCount"] == 6
    hpa = find(render_variant(helm, "hpa"), "HorizontalPodAutoscaler")
    assert hpa["spec"]["maxReplicas"] == 12
    assert hpa["spec"]["metrics"][0]["external"]["target"]["averageValue"] == "5000"


def test_prometheus_rule_equals_the_compose_alerts(helm: Path) -> None:
    rule = find(render_variant(helm, "keda"), "PrometheusRule")
    compose = yaml.safe_load((REPO / "compose" / "monitoring" / "alerts.yml").read_text())
    assert rule["spec"]["groups"] == compose["groups"]


def test_dashboards_become_sidecar_configmaps(helm: Path) -> None:
    docs = render_variant(helm, "keda")
    maps = [d for d in docs if d["kind"] == "ConfigMap"]
    dashboards = sorted((CHART_DIR / "files" / "dashboards").glob("*.json"))
    assert len(maps) == len(dashboards)
    for cm in maps:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        ((name, body),) = cm["data"].items()
        assert body == (CHART_DIR / "files" / "dashboards" / name).read_text().rstrip("\n")
        json.loads(body)


def test_a_dashboard_json_becomes_a_labelled_configmap(helm: Path, tmp_path: Path) -> None:
    """A dashboard added to the chart's files renders as its own labelled ConfigMap."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART_DIR, chart)
    board = {"title": "GPU token cost", "panels": [{"type": "stat", "title": "$ / 1M"}]}
    (chart / "files" / "dashboards" / "Token_Costs.json").write_text(json.dumps(board) + "\n")
    done = _helm(helm, "template", "gtc", str(chart), "-f", str(CI_VALUES / "keda-values.yaml"))
    assert done.returncode == 0, done.stderr
    maps = [d for d in yaml.safe_load_all(done.stdout) if d and d["kind"] == "ConfigMap"]
    (cm,) = [m for m in maps if "Token_Costs.json" in m["data"]]
    validate(cm)
    assert cm["metadata"]["name"] == "gtc-gpu-token-cost-dashboard-token-costs"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["Token_Costs.json"]) == board


def test_strimzi_topics(helm: Path) -> None:
    topics = {d["spec"]["topicName"]: d for d in render_variant(helm, "strimzi")
              if d["kind"] == "KafkaTopic"}  # fmt: skip
    assert topics["tokens"]["spec"]["partitions"] == 12
    assert topics["tokens.dlq"]["spec"]["partitions"] == 3
    assert topics["tokens"]["metadata"]["labels"]["strimzi.io/cluster"] == "gpu-cost"
    assert topics["tokens"]["metadata"]["namespace"] == "kafka"


def test_proxy_deployment_and_service(helm: Path) -> None:
    docs = render_variant(helm, "proxy")
    proxy = find(docs, "Deployment", "-proxy")
    (container,) = proxy["spec"]["template"]["spec"]["containers"]
    assert container["args"][:3] == ["proxy", "--upstream", "http://vllm.inference.svc:8000"]
    assert find(docs, "Service", "-proxy")["spec"]["ports"][0]["port"] == 8000
    assert find(docs, "NetworkPolicy", "-proxy")


def _policy_allows(policy: dict[str, Any], direction: str, port: int) -> bool:
    key = "from" if direction == "ingress" else "to"
    return any(any(p["port"] == port for p in rule.get("ports", []))
               for rule in policy["spec"].get(direction, []) if rule or key)  # fmt: skip


def test_network_policies_mirror_the_security_groups(helm: Path) -> None:
    docs = render_variant(helm, "strimzi")
    policies = {d["metadata"]["name"].removeprefix("gtc-gpu-token-cost-"): d
                for d in docs if d["kind"] == "NetworkPolicy"}  # fmt: skip
    assert set(policies) == {"default-deny", "processor", "kafka-clients"}
    deny = policies["default-deny"]["spec"]
    assert deny["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny
    processor = policies["processor"]["spec"]
    (ingress,) = processor["ingress"]
    assert ingress["ports"] == [{"port": 8080, "protocol": "TCP"}]
    assert ingress["from"][0] == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    }
    assert ingress["from"][1]["podSelector"] == {"matchLabels": {"gpu-token-cost/admin": "true"}}
    egress_ports = [r["ports"][0]["port"] for r in processor["egress"]]
    assert egress_ports == [53, 9092, 27017]
    kafka_rule = processor["egress"][1]["to"][0]
    assert kafka_rule["podSelector"] == {"matchLabels": {"strimzi.io/cluster": "gpu-cost"}}
    # Producers, proxy and the topic job: DNS and Kafka, never MongoDB, nothing inbound.
    clients = policies["kafka-clients"]["spec"]
    assert [r["ports"][0]["port"] for r in clients["egress"]] == [53, 9092]
    assert clients["policyTypes"] == ["Egress"]
    assert not _policy_allows(policies["kafka-clients"], "egress", 27017)
    # Which pods the MongoDB rule can reach: the processor only.
    for doc in docs:
        if doc["kind"] in {"Deployment", "DaemonSet", "Job"}:
            labels = doc["spec"]["template"]["metadata"]["labels"]
            is_processor = labels.get("app.kubernetes.io/component") == "processor"
            assert ("gpu-token-cost/mongo-client" in labels) == is_processor


# ---- every setting of docs/configuration.md can be set from values -------------------------


def documented_settings() -> dict[str, list[tuple[str, bool]]]:
    """Service -> [(variable, is_secret)] from the generated tables of docs/configuration.md."""
    text = CONFIG_DOC.read_text()
    settings: dict[str, list[tuple[str, bool]]] = {}
    for match in re.finditer(
        r"^### (\w+) \(`[^`]+`\)\n(.*?)(?=^### |^<!-- END)", text, re.M | re.S
    ):
        rows = re.findall(r"^\| `([A-Z0-9_]+)` \|(.*)$", match.group(2), re.M)
        settings[match.group(1)] = [(name, "Secret" in rest) for name, rest in rows]
    return settings


def test_configuration_doc_is_parsed() -> None:
    settings = documented_settings()
    assert {"processor", "producers"} <= set(settings)
    assert ("MONGO_URL", True) in settings["processor"]
    assert ("PRODUCER_RATE", False) in settings["producers"]


@pytest.mark.parametrize("service", ["processor", "producers"])
def test_every_documented_setting_is_settable(helm: Path, service: str, tmp_path: Path) -> None:
    names = [name for name, _ in documented_settings()[service]]
    values: dict[str, Any] = {
        "kafka": {"bootstrap": "k:9092"},
        "mongo": {"existingSecret": "m"},
        "producers": {"enabled": True},
    }
    values.setdefault(service, {})["env"] = {name: f"value-of-{name}" for name in names}
    fixed = {}
    if service == "processor":
        # Both must agree with the chart's probes: a port the chart knows, /health open.
        fixed = {"API_HEALTH_OPEN": "true", "HTTP_PORT": "9000"}
        values["processor"].update(env={**values["processor"]["env"], **fixed}, port=9000)
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    docs = render(helm, "-f", str(path))
    workload = find(docs, "Deployment" if service == "processor" else "DaemonSet")
    env = container_env(workload)
    for name in names:
        if service == "producers" and name == "PRODUCER_HOST":
            continue  # the chart sets it from the node name; checked below
        expected = fixed.get(name, f"value-of-{name}")
        assert env.get(name) == expected, name
    if service == "producers":
        assert env["PRODUCER_HOST"] == "<from>"


@pytest.mark.parametrize("service", ["processor", "producers"])
def test_every_secret_setting_can_come_from_a_secret_file(
    helm: Path, service: str, tmp_path: Path
) -> None:
    secrets = [name for name, secret in documented_settings()[service] if secret]
    if service == "processor":
        assert secrets, "the processor has secret settings (MONGO_URL at least)"
    files = {name: {"secret": "s", "key": name.lower()} for name in secrets}
    values: dict[str, Any] = {"kafka": {"bootstrap": "k:9092"}, "mongo": {"existingSecret": "m"},
              "producers": {"enabled": True}}  # fmt: skip
    values.setdefault(service, {})["secretFiles"] = files
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    docs = render(helm, "-f", str(path))
    workload = find(docs, "Deployment" if service == "processor" else "DaemonSet")
    env = container_env(workload)
    volumes = workload["spec"]["template"]["spec"]["volumes"]
    items = [s["secret"]["items"][0] for v in volumes if "projected" in v
             for s in v["projected"]["sources"]]  # fmt: skip
    for name in secrets:
        assert env[f"{name}_FILE"] == f"/run/secrets/gtc/{name.lower()}"
        assert name not in env
        assert {"key": name.lower(), "path": name.lower()} in items


# ---- broken values fail with the schema's message ------------------------------------------


def test_thirteen_replicas_are_refused(helm: Path) -> None:
    err = render_fails(
        helm, "-f", str(CI_VALUES / "default-values.yaml"), "--set", "processor.replicas=13"
    )
    assert "values don't meet the specifications of the schema" in err
    assert "/processor/replicas" in err
    assert "maximum" in err
    assert "12" in err


def test_autoscaler_ceiling_above_the_partitions_is_refused(helm: Path) -> None:
    err = render_fails(
        helm, "-f", str(CI_VALUES / "keda-values.yaml"), "--set", "autoscaling.maxReplicas=13"
    )
    assert "/autoscaling/maxReplicas" in err
    assert "maximum" in err


def test_replicas_above_fewer_partitions_are_refused(helm: Path) -> None:
    err = render_fails(helm, "-f", str(CI_VALUES / "default-values.yaml"),
                       "--set", "kafka.partitions=6", "--set", "processor.replicas=8")  # fmt: skip
    assert "processor.replicas (8) exceeds kafka.partitions (6)" in err


def test_missing_bootstrap_is_refused(helm: Path) -> None:
    err = render_fails(helm, "--set", "mongo.existingSecret=m")
    assert "/kafka/bootstrap" in err
    assert "minLength" in err
    err = render_fails(
        helm, "--set", "kafka.bootstrap=not-a-host-port", "--set", "mongo.existingSecret=m"
    )
    assert "/kafka/bootstrap" in err
    assert "pattern" in err


def test_missing_mongo_secret_is_refused(helm: Path) -> None:
    err = render_fails(helm, "--set", "kafka.bootstrap=k:9092")
    assert "mongo.existingSecret is required" in err


def test_conflicting_port_and_api_health_settings_are_refused(helm: Path) -> None:
    default = str(CI_VALUES / "default-values.yaml")
    err = render_fails(helm, "-f", default, "--set", "processor.env.HTTP_PORT=9000")
    assert "processor.env.HTTP_PORT differs from processor.port" in err
    for spelling in ("false", "0", "Off"):
        err = render_fails(
            helm, "-f", default, "--set", f"processor.env.API_HEALTH_OPEN={spelling}"
        )
        assert "/health must stay open" in err
    err = render_fails(helm, "-f", default, "--set", "processor.env.MONGO_URL=mongodb://x/",
                       "--set", "processor.secretFiles.MONGO_URL.secret=s",
                       "--set", "processor.secretFiles.MONGO_URL.key=k")  # fmt: skip
    assert "MONGO_URL is set both in env and in secretFiles" in err


def test_proxy_without_upstream_is_refused(helm: Path) -> None:
    err = render_fails(helm, "-f", str(CI_VALUES / "default-values.yaml"),
                       "--set", "proxy.enabled=true")  # fmt: skip
    assert "/proxy/upstream" in err
