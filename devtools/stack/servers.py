"""How each server is run: Kafka's KRaft configuration and JVM command, FerretDB's flags."""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from devtools.stack.config import REPO, Address, Server, StackConfig
from devtools.stack.console import rel, say, write_atomic
from devtools.stack.errors import StackError
from devtools.stack.sasl import (
    credentials_path,
    ensure_credentials,
    sasl_address,
    sasl_properties,
    scram_format_args,
)

__all__ = [
    "MIN_ISR_CLUSTER",
    "kafka_command",
    "kafka_node_address",
    "kafka_unit",
    "mongo_command",
    "new_cluster_id",
    "server_ports",
]

# With three brokers one may be lost while acks=all writes still succeed (RF 3, min ISR 2).
MIN_ISR_CLUSTER: Final = 2

KAFKA_LOG4J: Final = REPO / "scripts" / "kafka" / "log4j.properties"
# The broker of a dev stack holds little data; 384 MiB keeps it next to the tests on 2 cores.
KAFKA_HEAP: Final = ("-Xmx384m", "-Xms128m")
# Three JVMs share the same 2 cores: 256 MiB each (768 MiB in all) is plenty for test traffic.
KAFKA_CLUSTER_HEAP: Final = ("-Xmx256m", "-Xms96m")
# Formatting the storage is a short-lived JVM; its own first start on a cold disk takes ~20 s.
FORMAT_TIMEOUT_S: Final = 180


def server_ports(server: Server, address: Address) -> list[Address]:
    """Every address *server* listens on: Kafka's KRaft controller takes the broker port + 1."""
    return [address, address.next_port()] if server == "kafka" else [address]


def kafka_node_address(listen: Address, node: int) -> Address:
    """Broker address of KRaft node *node* (1-based): node n takes P + 2(n-1), its controller
    the port after it, so node 1 keeps today's "controller = broker port + 1" and a 3-node
    cluster uses P..P+5 (brokers P, P+2, P+4; controllers P+1, P+3, P+5)."""
    return Address(listen.host, listen.port + 2 * (node - 1))


def kafka_unit(node: int) -> str:
    """Name of node *node*'s PID/meta/log files and home dir: node 1 keeps the plain "kafka"
    a single-broker stack always used, so existing state dirs and tools still find it."""
    return "kafka" if node == 1 else f"kafka-{node}"


def new_cluster_id() -> str:
    """16 random bytes, URL-safe base64 without padding, not starting with '-' (as Kafka's)."""
    while True:
        cid = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def _kafka_properties(cfg: StackConfig, data_dir: Path, node: int) -> str:
    broker = kafka_node_address(cfg.kafka_listen, node)
    controller = broker.next_port()
    n = cfg.brokers
    rf = str(n)
    # A single broker cannot keep 2 in sync; three tolerate the loss of one (RF 3, min ISR 2).
    min_isr = str(MIN_ISR_CLUSTER if n >= 3 else 1)
    voters = ",".join(
        f"{i}@{kafka_node_address(cfg.kafka_listen, i).next_port()}" for i in range(1, n + 1)
    )
    lines = {
        "process.roles": "broker,controller",
        "node.id": str(node),
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://{broker},CONTROLLER://{controller}",
        "advertised.listeners": f"PLAINTEXT://{broker}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        "default.replication.factor": rf,
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": rf,
        "offsets.topic.num.partitions": "12",
        "transaction.state.log.replication.factor": rf,
        "transaction.state.log.min.isr": min_isr,
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "false",
        "delete.topic.enable": "true",
        "num.network.threads": "3",
        "num.io.threads": "4",
        "log.retention.hours": "168",
    }
    if cfg.security == "sasl-ssl":
        sasl = sasl_address(cfg)
        lines["listeners"] += f",SASL_SSL://{sasl}"
        lines["advertised.listeners"] += f",SASL_SSL://{sasl}"
        lines["listener.security.protocol.map"] += ",SASL_SSL:SASL_SSL"
        lines |= sasl_properties(cfg, ensure_credentials(cfg))
    body = "".join(f"{key}={value}\n" for key, value in lines.items())
    return f"# Written by scripts/stack.py on every `up`; edits are overwritten.\n{body}"


def _kafka_java_cmd(java: str, libs: Path, main: str, *args: str, heap: Sequence[str]) -> list[str]:
    return [
        java,
        *heap,
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:InitiatingHeapOccupancyPercent=35",
        "-XX:+ExplicitGCInvokesConcurrent",
        "-Djava.awt.headless=true",
        f"-Dlog4j.configuration=file:{KAFKA_LOG4J}",
        "-cp",
        f"{libs}/*",
        main,
        *args,
    ]


def kafka_command(cfg: StackConfig, java: str, libs: Path, node: int = 1) -> list[str]:
    """Write node *node*'s server.properties, format its KRaft storage on first use; its command."""
    home = cfg.state_dir / kafka_unit(node)
    data = home / "data"
    data.mkdir(parents=True, exist_ok=True)
    props = home / "server.properties"
    formatted = (data / "meta.properties").exists()
    if cfg.security == "sasl-ssl" and formatted and not credentials_path(cfg.state_dir).exists():
        # The SCRAM user is written at format time only: this storage has none.
        raise StackError(
            f"{rel(data)} was formatted without --security sasl-ssl: run `down`, remove "
            f"{rel(cfg.state_dir)}, then `up --security sasl-ssl`"
        )
    write_atomic(props, _kafka_properties(cfg, data, node))
    if not (data / "meta.properties").exists():
        # One cluster id for all nodes (KRaft refuses a quorum of differently formatted logs).
        id_file = cfg.state_dir / "kafka" / "cluster.id"
        id_file.parent.mkdir(parents=True, exist_ok=True)
        if not id_file.exists():
            id_file.write_text(new_cluster_id() + "\n")
        cluster_id = id_file.read_text().strip()
        cmd = _kafka_java_cmd(
            java,
            libs,
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(props),
            "--ignore-formatted",
            *(scram_format_args(ensure_credentials(cfg)) if cfg.security == "sasl-ssl" else ()),
            heap=("-Xmx256m",),
        )
        out = subprocess.run(
            cmd, capture_output=True, text=True, timeout=FORMAT_TIMEOUT_S, check=False
        )
        if out.returncode != 0:
            raise StackError(
                f"kafka.tools.StorageTool format failed (exit {out.returncode}):\n"
                f"{out.stdout}{out.stderr}"
            )
        say(f"{kafka_unit(node)}: formatted KRaft storage in {rel(data)} (cluster id {cluster_id})")
    heap = KAFKA_HEAP if cfg.brokers == 1 else KAFKA_CLUSTER_HEAP
    return _kafka_java_cmd(java, libs, "kafka.Kafka", str(props), heap=heap)


def mongo_command(cfg: StackConfig, binary: Path) -> list[str]:
    """FerretDB's command line (SQLite files under <state>/ferretdb/data)."""
    home = cfg.state_dir / "ferretdb"
    data = home / "data"
    data.mkdir(parents=True, exist_ok=True)
    return [
        str(binary),
        "--handler=sqlite",
        f"--sqlite-url=file:{data}/",
        f"--listen-addr={cfg.mongo_listen}",
        "--telemetry=disable",
        f"--state-dir={home}",
        "--debug-addr=-",
        # STACK.md suggests warn; but at warn FerretDB dumps every failed command's full response
        # (each pymongo close sends the unsupported endSessions, each duplicate key is a failure).
        "--log-level=error",
    ]
