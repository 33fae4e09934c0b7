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

__all__ = ["kafka_command", "mongo_command", "new_cluster_id", "server_ports"]

KAFKA_LOG4J: Final = REPO / "scripts" / "kafka" / "log4j.properties"
# The broker of a dev stack holds little data; 384 MiB keeps it next to the tests on 2 cores.
KAFKA_HEAP: Final = ("-Xmx384m", "-Xms128m")
# Formatting the storage is a short-lived JVM; its own first start on a cold disk takes ~20 s.
FORMAT_TIMEOUT_S: Final = 180


def server_ports(server: Server, address: Address) -> list[Address]:
    """Every address *server* listens on: Kafka's KRaft controller takes the broker port + 1."""
    return [address, address.next_port()] if server == "kafka" else [address]


def new_cluster_id() -> str:
    """16 random bytes, URL-safe base64 without padding, not starting with '-' (as Kafka's)."""
    while True:
        cid = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def _kafka_properties(cfg: StackConfig, data_dir: Path) -> str:
    broker = cfg.kafka_listen
    controller = broker.next_port()
    lines = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{controller}",
        "listeners": f"PLAINTEXT://{broker},CONTROLLER://{controller}",
        "advertised.listeners": f"PLAINTEXT://{broker}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "12",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "false",
        "delete.topic.enable": "true",
        "num.network.threads": "3",
        "num.io.threads": "4",
        "log.retention.hours": "168",
    }
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


def kafka_command(cfg: StackConfig, java: str, libs: Path) -> list[str]:
    """Write server.properties, format the KRaft storage on first use; the broker's command."""
    home = cfg.state_dir / "kafka"
    data = home / "data"
    data.mkdir(parents=True, exist_ok=True)
    props = home / "server.properties"
    write_atomic(props, _kafka_properties(cfg, data))
    if not (data / "meta.properties").exists():
        id_file = home / "cluster.id"
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
        say(f"kafka: formatted KRaft storage in {rel(data)} (cluster id {cluster_id})")
    return _kafka_java_cmd(java, libs, "kafka.Kafka", str(props), heap=KAFKA_HEAP)


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
