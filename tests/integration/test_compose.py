"""The deployment as files: compose, Dockerfiles, env example, Prometheus, firewall, smoke test.

No Docker engine is needed (none is on this machine): ``docker-compose config`` (Debian's 1.29)
validates and renders each compose file, ``promtool`` checks the Prometheus configuration,
``nft -c`` the firewall rulesets. The rendered services are compared with the settings classes,
so a compose file can neither miss a setting the service needs nor set one it does not read.
The last tests run scripts/smoke-test.sh against a real processor on the local stack.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database

from processor import metrics
from processor.settings import ProcessorSettings
from producers.settings import ProducerSettings
from tests.support.processes import ProcessorProcess

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "compose"
ENV_EXAMPLE = COMPOSE / ".env.example"
# Three Kafka VMs instead of vm1; rendered with the cluster block of the example set.
CLUSTER_FILE = "vm1-kafka-cluster.yml"
COMPOSE_FILES = (
    "vm1-kafka.yml",
    CLUSTER_FILE,
    "vm2-mongo.yml",
    "vm3-processor.yml",
    "vm4-producers.yml",
    "single-host.yml",
    "admin-monitoring.yml",
)
FIREWALL = REPO / "scripts" / "firewall"
ROLES = ("vm1-kafka", "vm1-kafka-cluster", "vm2-mongo", "vm3-processor", "vm4-producers")
SETUP_HINT = "run `make setup` (scripts/setup-debian.sh installs the Debian packages)"

# Settings the services cannot run without on a multi-host deployment: their defaults point
# at 127.0.0.1 or bind to loopback, which is wrong in a container on another VM.
REQUIRED = {
    "processor": {"KAFKA_BOOTSTRAP", "KAFKA_TOPIC", "MONGO_URL", "MONGO_DB", "HTTP_HOST"},
    "producers": {"KAFKA_BOOTSTRAP", "KAFKA_TOPIC"},
}


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not installed: {SETUP_HINT}")
    return path


def clean_env(**extra: str) -> dict[str, str]:
    """No KAFKA_*/MONGO_* of the caller: compose must take every value from the env file."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/tmp", **extra}


CLUSTER_IPS = {1: "10.10.0.11", 2: "10.10.0.21", 3: "10.10.0.22"}


def cluster_env_text(node: int) -> str:
    """The env example with its (commented) three-Kafka-VM block set, as Kafka VM *node* has it."""
    lines = [
        f"KAFKA_NODE_ID={node}",
        f"KAFKA_NODE_IP={CLUSTER_IPS[node]}",
        *(f"KAFKA_{n}_PRIVATE_IP={ip}" for n, ip in CLUSTER_IPS.items()),
        "KAFKA_EXTRA_BOOTSTRAP=,10.10.0.21:9092,10.10.0.22:9092",
    ]
    return ENV_EXAMPLE.read_text() + "\n".join(lines) + "\n"


@cache
def cluster_env_file() -> Path:
    # The cluster file needs values the example leaves commented (they differ per Kafka VM).
    path = Path(tempfile.mkdtemp(prefix="compose-cluster-")) / "node1.env"
    path.write_text(cluster_env_text(1))
    return path


def compose(
    file: str, *args: str, env_file: Path | None = None
) -> subprocess.CompletedProcess[str]:
    if env_file is None:
        env_file = cluster_env_file() if file == CLUSTER_FILE else ENV_EXAMPLE
    return subprocess.run(
        [tool("docker-compose"), "-f", str(COMPOSE / file), "--env-file", str(env_file), *args],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )


def yaml_to_json(text: str) -> Any:
    # The venv has no YAML parser; docker-compose's own interpreter has one (python3-yaml is a
    # dependency of the Debian package), so let it translate the rendered file to JSON.
    interpreter = Path(tool("docker-compose")).read_text().splitlines()[0].removeprefix("#!")
    done = subprocess.run(
        [
            *interpreter.split(),
            "-c",
            "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)",
        ],
        input=text,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return json.loads(done.stdout)


@cache
def rendered(file: str, profiles: tuple[str, ...] = ("gpu",)) -> dict[str, Any]:
    """The compose file as docker-compose resolves it (interpolated, anchors merged)."""
    args = [a for p in profiles for a in ("--profile", p)]
    done = compose(file, *args, "config")
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml_to_json(done.stdout)
    return config


def services(file: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = rendered(file)["services"]
    return found


def kind(service: Mapping[str, Any]) -> str | None:
    """processor / producers for our images (by Dockerfile), None for third-party ones."""
    dockerfile = str(service.get("build", {}).get("dockerfile", ""))
    for name in ("processor", "producers"):
        if dockerfile == f"{name}/Dockerfile":
            return name
    return None


def our_services() -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    for file in COMPOSE_FILES:
        for name, service in services(file).items():
            what = kind(service)
            if what is not None:
                yield file, name, what, service


def setting_names(what: str) -> set[str]:
    if what == "processor":
        return {name.upper() for name in ProcessorSettings.model_fields}
    # Read by validation_alias, else by field name (PROXY_API_KEYS: see producers.settings).
    return {
        f.validation_alias if isinstance(f.validation_alias, str) else name.upper()
        for name, f in ProducerSettings.model_fields.items()
    }


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


# --------------------------------------------------------------------------- compose files


@pytest.mark.parametrize("file", COMPOSE_FILES)
def test_compose_file_is_valid_for_docker_compose_1_29(file: str) -> None:
    for profiles in ([], ["--profile", "gpu"], ["--profile", "proxy"]):
        done = compose(file, *profiles, "config", "-q")
        assert done.returncode == 0, f"{file} {profiles}: {done.stderr}"


@pytest.mark.parametrize("file", COMPOSE_FILES)
def test_required_values_fail_loudly_when_missing(file: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("# nothing set\n")
    done = compose(file, "config", "-q", env_file=empty)
    assert done.returncode != 0
    assert "in compose/.env" in done.stderr, done.stderr  # the ${VAR:?message} text


def test_every_service_of_ours_gets_the_settings_it_needs() -> None:
    seen = set()
    for file, name, what, service in our_services():
        env = service.get("environment", {})
        missing = REQUIRED[what] - {k for k, v in env.items() if str(v).strip()}
        assert not missing, f"{file}:{name} lacks {sorted(missing)}"
        assert env["HTTP_HOST" if what == "processor" else "KAFKA_BOOTSTRAP"] != "127.0.0.1"
        seen.add((file, what))
    assert ("vm3-processor.yml", "processor") in seen
    assert ("vm4-producers.yml", "producers") in seen
    assert {("single-host.yml", "processor"), ("single-host.yml", "producers")} <= seen


def test_every_variable_set_for_a_service_is_one_of_its_settings() -> None:
    for file, name, what, service in our_services():
        unknown = set(service.get("environment", {})) - setting_names(what)
        assert not unknown, f"{file}:{name} sets {sorted(unknown)}, which {what} does not read"


def test_the_settings_classes_accept_the_rendered_environments(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for file, name, what, service in our_services():
        with monkeypatch.context() as patch:
            for key in setting_names("processor") | setting_names("producers"):
                patch.delenv(key, raising=False)
            for key, value in service["environment"].items():
                patch.setenv(key, str(value))
            settings: ProcessorSettings | ProducerSettings = (
                ProcessorSettings() if what == "processor" else ProducerSettings()
            )
            assert settings.model_dump(), f"{file}:{name}"


def test_multi_host_files_point_at_the_private_addresses() -> None:
    ips = env_example()
    kafka = f"{ips['KAFKA_PRIVATE_IP']}:9092"
    processor = services("vm3-processor.yml")["processor"]["environment"]
    producer = services("vm4-producers.yml")["producer"]["environment"]
    assert processor["KAFKA_BOOTSTRAP"] == kafka
    assert producer["KAFKA_BOOTSTRAP"] == kafka
    # The application user, authenticated against the pipeline database (mongo-init/*.js).
    assert processor["MONGO_URL"] == (
        f"mongodb://{ips['MONGO_APP_USER']}:{ips['MONGO_APP_PASSWORD']}@"
        f"{ips['MONGO_PRIVATE_IP']}:27017/{ips['MONGO_DB']}?authSource={ips['MONGO_DB']}"
    )
    kafka_env = services("vm1-kafka.yml")["kafka"]["environment"]
    assert f"EXTERNAL://{kafka}" in kafka_env["KAFKA_ADVERTISED_LISTENERS"]
    assert "INTERNAL://kafka:19092" in kafka_env["KAFKA_ADVERTISED_LISTENERS"]
    # Servers publish on the private address only.
    assert services("vm1-kafka.yml")["kafka"]["ports"] == [f"{kafka}:9092/tcp"]
    mongo_ports = services("vm2-mongo.yml")["mongo"]["ports"]
    assert mongo_ports == [f"{ips['MONGO_PRIVATE_IP']}:27017:27017/tcp"]


@pytest.mark.parametrize("node", [1, 2, 3])
def test_kafka_cluster_variant_renders_each_node(node: int, tmp_path: Path) -> None:
    env = tmp_path / f"node{node}.env"
    env.write_text(cluster_env_text(node))
    done = compose("vm1-kafka-cluster.yml", "config", env_file=env)
    assert done.returncode == 0, done.stderr
    kafka = yaml_to_json(done.stdout)["services"]["kafka"]
    environment = kafka["environment"]
    assert str(environment["KAFKA_NODE_ID"]) == str(node)
    voters = "1@10.10.0.11:9093,2@10.10.0.21:9093,3@10.10.0.22:9093"
    assert environment["KAFKA_CONTROLLER_QUORUM_VOTERS"] == voters
    assert str(environment["KAFKA_MIN_INSYNC_REPLICAS"]) == "2"
    assert str(environment["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == "3"
    # Same image as the single-node file: one Kafka version in the whole deployment.
    assert kafka["image"] == services("vm1-kafka.yml")["kafka"]["image"]
    init = yaml_to_json(done.stdout)["services"]["kafka-init"]
    assert "--replication-factor 3" in " ".join(init["command"])
    # The processor and producers bootstrap from all three brokers.
    done = compose("vm3-processor.yml", "config", env_file=env)
    assert done.returncode == 0, done.stderr
    bootstrap = yaml_to_json(done.stdout)["services"]["processor"]["environment"]
    assert bootstrap["KAFKA_BOOTSTRAP"] == "10.10.0.11:9092,10.10.0.21:9092,10.10.0.22:9092"


def test_processor_port_is_bound_to_processor_bind_addr(tmp_path: Path) -> None:
    env = tmp_path / "bind.env"
    env.write_text(
        ENV_EXAMPLE.read_text().replace(
            "PROCESSOR_BIND_ADDR=0.0.0.0", "PROCESSOR_BIND_ADDR=10.10.0.13"
        )
    )
    done = compose("vm3-processor.yml", "config", env_file=env)
    assert done.returncode == 0, done.stderr
    ports = yaml_to_json(done.stdout)["services"]["processor"]["ports"]
    assert ports == ["10.10.0.13:8080:8080/tcp"]


def test_producers_scale_and_nothing_runs_as_root_or_without_a_healthcheck() -> None:
    for file in COMPOSE_FILES:
        for name, service in services(file).items():
            health = service.get("healthcheck", {})
            one_shot = service.get("restart") == "no"
            if one_shot:
                assert health.get("test") == ["NONE"], f"{file}:{name}: one-shot, says so"
            else:
                assert health.get("test") not in (None, ["NONE"]), f"{file}:{name} no healthcheck"
                assert service.get("restart") == "unless-stopped", f"{file}:{name}"
            for dep, how in service.get("depends_on", {}).items():
                conditions = ("service_healthy", "service_completed_successfully")
                assert how["condition"] in conditions, f"{file}:{name}->{dep}"
            if kind(service) is not None:
                assert service.get("read_only") is True
                assert service.get("cap_drop") == ["ALL"]
            # The OTLP receiver and the proxy are one per host by design: they publish a port.
            if kind(service) == "producers" and service.get("command") not in (["otlp"], ["proxy"]):
                assert "container_name" not in service, f"{file}:{name}: breaks --scale"
                assert "ports" not in service, f"{file}:{name}: breaks --scale"
    gpu = services("vm3-processor.yml")["processor-gpu"]
    assert gpu["profiles"] == ["gpu"]
    device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia"
    assert "gpu" in device["capabilities"]
    assert "profiles" not in services("vm3-processor.yml")["processor"]
    # The proxy: opt-in, one per server, published on the host's loopback unless told.
    for file in ("vm4-producers.yml", "single-host.yml"):
        proxy = services(file)["proxy"]
        assert proxy["profiles"] == ["proxy"], file
        assert proxy["ports"] == ["127.0.0.1:8100:8100/tcp"], file
        assert proxy["environment"]["PROXY_UPSTREAM"] == "http://host.docker.internal:8000"
        assert proxy["command"] == ["proxy"], file


def test_kafka_init_creates_both_topics_idempotently(tmp_path: Path) -> None:
    # Run the one-shot job's script as the container would, with a stub kafka-topics.sh that
    # records its arguments. (`config` prints `$` escaped as `$$`, as compose files write it.)
    stub = tmp_path / "kafka-topics.sh"
    calls = tmp_path / "calls"
    stub.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    stub.chmod(0o755)
    for file in ("vm1-kafka.yml", "single-host.yml"):
        calls.write_text("")
        init = services(file)["kafka-init"]
        assert init["depends_on"] == {"kafka": {"condition": "service_healthy"}}
        assert init["entrypoint"] == ["/bin/bash", "-ec"]
        script = init["command"][0].replace("$$", "$")
        script = script.replace("/opt/kafka/bin/kafka-topics.sh", str(stub))
        done = subprocess.run(
            ["/bin/bash", "-ec", script],
            env=clean_env(**init["environment"]),
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        recorded = calls.read_text().splitlines()
        base = "--bootstrap-server kafka:19092 --create --if-not-exists --topic"
        assert recorded[:2] == [
            f"{base} tokens --partitions 12 --replication-factor 1",
            f"{base} tokens.dlq --partitions 3 --replication-factor 1",
        ], file


def test_kafka_image_is_the_version_of_the_local_stack() -> None:
    pom = ET.parse(REPO / "scripts" / "kafka" / "pom.xml")
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    version = pom.findtext("m:properties/m:kafka.version", namespaces=ns)
    assert version
    images = {
        service["image"]
        for file in COMPOSE_FILES
        for service in services(file).values()
        if str(service.get("image", "")).startswith("apache/kafka")
    }
    assert images == {f"apache/kafka:{version}"}


def test_build_contexts_dockerfiles_and_copied_paths_exist() -> None:
    for file, name, _what, service in our_services():
        context = Path(service["build"]["context"])
        dockerfile = context / service["build"]["dockerfile"]
        assert context == REPO, f"{file}:{name} builds from {context}"
        assert dockerfile.is_file(), dockerfile
        text = dockerfile.read_text()
        assert re.search(r"^USER 10001", text, re.M), f"{dockerfile}: not non-root"
        assert re.search(r"^FROM \$\{PYTHON_IMAGE\}", text, re.M)
        assert re.search(
            r"^ARG PYTHON_IMAGE=python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}$", text, re.M
        )
        for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.M):
            for source in line.split()[:-1]:
                assert (context / source).exists(), f"{dockerfile}: COPY {source} missing"
    ignored = (REPO / ".dockerignore").read_text().split()
    for entry in (".venv", ".cache", ".state", "tests", "docs", ".git"):
        assert entry in ignored


def test_env_example_holds_no_secret_and_the_real_env_is_ignored() -> None:
    values = env_example()
    for key, value in values.items():
        if "PASSWORD" in key:
            assert value == "change-me", key
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "compose/.env"], cwd=REPO, check=False, timeout=30
    )
    assert ignored.returncode == 0, "compose/.env must be git-ignored"


# --------------------------------------------------------------------------- mongo init


def test_mongo_init_creates_the_app_user_and_the_processors_indexes() -> None:
    from processor.store import _INDEXES  # the processor creates the same ones at start

    stub = """
        const calls = { users: [], roles: [], indexes: {} };
        const appDb = {
          getUser: () => null,
          getRole: () => null,
          createRole: (r) => calls.roles.push(r),
          createUser: (u) => calls.users.push(u),
          runCommand: (c) => { calls.indexes[c.createIndexes] = c.indexes; return { ok: 1 }; },
        };
        globalThis.db = { getSiblingDB: (name) => { calls.db = name; return appDb; } };
        globalThis.print = () => {};
        process.env.MONGO_APP_DB = "gpu_cost";
        process.env.MONGO_APP_USER = "app";
        process.env.MONGO_APP_PASSWORD = "pw";
        require(process.argv[1]);
        process.stdout.write(JSON.stringify(calls));
    """
    script = COMPOSE / "mongo-init" / "10-app-user-and-indexes.js"
    done = subprocess.run(
        [tool("node"), "-e", stub, str(script)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    calls = json.loads(done.stdout)
    assert calls["db"] == "gpu_cost"
    # Exactly the processor's operations (find/insert/createIndex): test_mongo7.py checks the
    # role's effect against mongo:7.0 itself (containers mode).
    assert calls["roles"] == [
        {
            "role": "gpuCostProcessor",
            "privileges": [
                {
                    "resource": {"db": "gpu_cost", "collection": ""},
                    "actions": ["find", "insert", "createIndex", "createCollection"],
                }
            ],
            "roles": [],
        }
    ]
    assert calls["users"] == [
        {"user": "app", "pwd": "pw", "roles": [{"role": "gpuCostProcessor", "db": "gpu_cost"}]}
    ]
    created = {
        collection: sorted((i["name"], [[k, v] for k, v in i["key"].items()]) for i in specs)
        for collection, specs in calls["indexes"].items()
    }
    expected = {
        collection: sorted((name, [list(key) for key in keys]) for name, keys in specs)
        for collection, specs in _INDEXES.items()
    }
    assert created == expected


# --------------------------------------------------------------------------- monitoring


def test_prometheus_config_passes_promtool() -> None:
    done = subprocess.run(
        [tool("promtool"), "check", "config", str(COMPOSE / "monitoring" / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 rule files found" in done.stdout + done.stderr


def test_alert_rules_use_metrics_the_processor_exports() -> None:
    exported: set[str] = set()
    for value in vars(metrics).values():
        base, typ = getattr(value, "_name", None), getattr(value, "_type", None)
        if not isinstance(base, str):
            continue
        exported |= {f"{base}_total"} if typ == "counter" else {base}
        if typ == "histogram":
            exported |= {f"{base}_bucket", f"{base}_sum", f"{base}_count"}
    used = set(re.findall(r"\bpipeline_\w+", (COMPOSE / "monitoring" / "alerts.yml").read_text()))
    assert used, "alerts.yml names no pipeline metric"
    assert used <= exported, f"unknown metrics in alerts.yml: {sorted(used - exported)}"


# --------------------------------------------------------------------------- firewall

# The security groups, as the brief states them: (port, source variable) allowed per role.
SECURITY_GROUPS = {
    "vm1-kafka": {(22, "ADMIN_IP"), (9092, "PROCESSOR_PRIVATE_IP"), (9092, "PRODUCERS_PRIVATE_IP")},
    "vm2-mongo": {(22, "ADMIN_IP"), (27017, "PROCESSOR_PRIVATE_IP")},
    "vm3-processor": {(22, "ADMIN_IP"), (8080, "ADMIN_IP")},
    "vm4-producers": {(22, "ADMIN_IP")},
}
# Each of three Kafka VMs: vm1's flows, plus replication (9092) and the KRaft quorum (9093)
# between the nodes.
SECURITY_GROUPS["vm1-kafka-cluster"] = SECURITY_GROUPS["vm1-kafka"] | {
    (port, f"KAFKA_{n}_PRIVATE_IP") for port in (9092, 9093) for n in (1, 2, 3)
}


def role_env(role: str) -> dict[str, str]:
    return {**env_example(), **(
        {f"KAFKA_{n}_PRIVATE_IP": ip for n, ip in CLUSTER_IPS.items()}
        if role == "vm1-kafka-cluster" else {}
    )}  # fmt: skip


def expected_rules(role: str) -> set[tuple[int, str]]:
    ips = role_env(role)
    return {(port, ips[var]) for port, var in SECURITY_GROUPS[role]}


def script(name: str, *args: str) -> str:
    if "cluster" in name or "vm1-kafka-cluster" in args:  # needs the nodes' addresses
        args = (*args, "--env-file", str(cluster_env_file()))
    done = subprocess.run(
        ["bash", str(FIREWALL / name), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("role", ROLES)
def test_ufw_dry_run_mirrors_the_security_group(role: str) -> None:
    out = script(f"ufw-{role}.sh")
    assert "(dry run" in out
    allowed = {
        (int(port), source)
        for source, port in re.findall(
            r"^\+ ufw allow proto tcp from (\S+) to any port (\d+)", out, re.M
        )
    }
    assert allowed == expected_rules(role)
    lines = out.splitlines()
    assert lines.index("+ ufw default deny incoming") < lines.index("+ ufw --force enable")
    ssh = next(i for i, line in enumerate(lines) if "port 22 " in line)
    assert ssh < lines.index("+ ufw --force enable")
    docker_user = re.findall(
        r"^\+ iptables -I DOCKER-USER .*--ctorigdstport (\d+).*?(?:-s (\S+) )?-j (\w+)$", out, re.M
    )
    if role == "vm4-producers":
        assert not docker_user
    else:
        for port in {p for p, _, _ in docker_user}:  # per published port:
            rules = [(s, verdict) for p, s, verdict in docker_user if p == port]
            assert rules[0][1] == "DROP"  # inserted first, so it ends up below the RETURNs
        returns = {(int(p), s) for p, s, verdict in docker_user if verdict == "RETURN"}
        assert returns == {r for r in expected_rules(role) if r[0] != 22}


@pytest.mark.parametrize("role", ROLES)
def test_nft_ruleset_mirrors_the_security_group_and_parses(role: str) -> None:
    text = script("nft-render.sh", role)
    defines = dict(re.findall(r"^define (\w+) = (\S+)$", text, re.M))
    rules = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    body = re.sub(r"\$(\w+)", lambda m: defines[m.group(1)], rules)  # KeyError = undefined
    allowed = set()
    for sources, port in re.findall(r"ip saddr (\{[^}]*\}|\S+) tcp dport (\d+) accept", body):
        for source in sources.strip("{} ").split(","):
            allowed.add((int(port), source.strip()))
    assert allowed == expected_rules(role)
    assert "policy drop;" in body
    assert "ct state established,related accept" in body
    assert 'iif "lo" accept' in body
    done = subprocess.run(
        [tool("nft"), "-c", "-f", "-"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr


def test_cluster_firewall_needs_the_nodes_addresses() -> None:
    """.env.example leaves the three nodes' addresses commented: the cluster role says so."""
    done = subprocess.run(
        ["bash", str(FIREWALL / "ufw-vm1-kafka-cluster.sh")],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2
    assert "KAFKA_1_PRIVATE_IP" in done.stderr


def test_firewall_scripts_refuse_a_bad_env_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.env"
    bad.write_text(ENV_EXAMPLE.read_text().replace("ADMIN_IP=10.10.0.100", "ADMIN_IP=nope"))
    for name in ("ufw-vm3-processor.sh", "nft-render.sh"):
        args = ["vm3-processor"] if name == "nft-render.sh" else []
        done = subprocess.run(
            ["bash", str(FIREWALL / name), *args, "--env-file", str(bad)],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        assert done.returncode == 2, done.stderr
        assert "ADMIN_IP" in done.stderr


def test_shell_scripts_pass_shellcheck() -> None:
    scripts = [
        REPO / "scripts" / "smoke-test.sh",
        REPO / "scripts" / "setup-debian.sh",
        *sorted(FIREWALL.glob("*.sh")),
    ]
    done = subprocess.run(
        [tool("shellcheck"), "-x", *map(str, scripts)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout


# --------------------------------------------------------------------------- smoke test


def smoke(env: Mapping[str, str], timeout: float = 240) -> tuple[int, list[str]]:
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "smoke-test.sh")],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        cwd=REPO,
        env={**clean_env(), "PYTHON": sys.executable, **env},
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(("PASS ", "FAIL "))]
    return done.returncode, lines


def test_smoke_test_reports_each_failing_step_and_exits_1() -> None:
    code, lines = smoke(
        {
            "PROCESSOR_URL": "http://127.0.0.1:9",  # discard port: nothing answers
            "PRODUCER_CMD": "false",
            "SMOKE_HEALTH_WAIT_S": "1",
            "SMOKE_TIMEOUT_S": "1",
        }
    )
    assert code == 1
    steps = [line.split(":")[0].split()[1] for line in lines]
    assert steps == ["health", "gpu-info", "stats-before", "produce", "stored", "costs"]
    assert all(line.startswith("FAIL ") for line in lines)


def test_smoke_test_passes_against_a_running_pipeline(
    kafka_bootstrap: str,
    mongo_url: str,
    topic: str,
    dlq_topic: str,
    group_id: str,
    mongo_db: Database[dict[str, Any]],
    tmp_path: Path,
) -> None:
    processor = ProcessorProcess(
        {
            "KAFKA_BOOTSTRAP": kafka_bootstrap,
            "KAFKA_TOPIC": topic,
            "KAFKA_DLQ_TOPIC": dlq_topic,
            "KAFKA_GROUP_ID": group_id,
            "MONGO_URL": mongo_url,
            "MONGO_DB": mongo_db.name,
        },
        tmp_path / "processor.log",
    ).start()
    try:
        code, lines = smoke(
            {
                "PROCESSOR_URL": processor.url,
                "KAFKA_BOOTSTRAP": kafka_bootstrap,
                "KAFKA_TOPIC": topic,  # read by the producer the smoke test runs
                "SMOKE_EVENTS": "120",
                "MONGO_URL": mongo_url,
                "MONGO_DB": mongo_db.name,
            }
        )
    finally:
        processor.stop()
    assert code == 0, "\n".join(lines) + "\n" + processor.logs()
    steps = [line.split()[1] for line in lines]
    assert steps == ["health", "gpu-info", "stats-before", "produce", "stored", "costs", "mongo"]
    assert all(line.startswith("PASS ") for line in lines)
    assert any("requests=120" in line for line in lines)
