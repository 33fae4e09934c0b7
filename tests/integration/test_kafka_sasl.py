"""Kafka SASL/SCRAM over TLS: `stack up --security sasl-ssl`, the real producer and processor
with KAFKA_SECURITY_PROTOCOL=SASL_SSL store events; a wrong password and a PLAINTEXT client on
the SASL_SSL listener are refused (their errors are the ones docs/security.md quotes).

The stack is a private one (own state dir, free ports): its broker is formatted with the SCRAM
user, which the shared stack's is not.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from pymongo.database import Database

from devtools import stack
from devtools.ports import free_port
from tests.support.processes import ProcessorProcess, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
COUNT = 40


@pytest.fixture
def sasl_stack(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A private single broker with a SASL_SSL listener; its client credentials (sasl.json)."""
    state = tmp_path / "stack"
    listen = f"127.0.0.1:{free_port(pair=True, span=3)}"  # broker, controller, SASL_SSL
    try:
        stack.up(state, only="kafka", kafka_listen=listen, security="sasl-ssl")
        path = state / "kafka" / "sasl.json"
        assert path.stat().st_mode & 0o777 == 0o600
        yield json.loads(path.read_text())
    finally:
        stack.down(state)


def client_env(creds: dict[str, str], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "PRODUCER_"))}
    env |= {
        "KAFKA_BOOTSTRAP": creds["bootstrap"],
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_USERNAME": creds["username"],
        "KAFKA_SASL_PASSWORD": creds["password"],
        "KAFKA_SSL_CA_LOCATION": creds["ca_location"],
        "PYTHONUNBUFFERED": "1",
        **extra,
    }
    return env


def refusal(config: dict[str, Any]) -> list[str]:
    """librdkafka's log lines of a producer that tries to deliver one message for ~10 s."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger(f"sasl-test-{id(lines)}")
    logger.addHandler(Collect())
    logger.propagate = False
    logger.setLevel(logging.DEBUG)  # the PLAINTEXT refusal is logged at INFO (syslog 6)
    delivered: list[object] = []
    producer = Producer(
        {**config, "message.timeout.ms": 8000, "logger": logger, "allow.auto.create.topics": False}
    )
    producer.produce("tokens", b"x", on_delivery=lambda err, _msg: delivered.append(err))
    producer.flush(12)
    assert len(delivered) == 1, "no delivery report"
    assert delivered[0] is not None, "the broker accepted the message"
    return lines


def test_sasl_ssl_pipeline_and_refusals(
    sasl_stack: dict[str, str],
    mongo_url: str,
    mongo_db: Database[dict[str, Any]],
    group_id: str,
    tmp_path: Path,
) -> None:
    creds = sasl_stack
    produced = subprocess.run(
        [sys.executable, "-m", "producers", "run", "--count", str(COUNT), "--rate", "max"],
        env=client_env(creds, PRODUCER_HOST="sasl-host"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert produced.returncode == 0, produced.stderr[-2000:]
    env = client_env(creds, KAFKA_GROUP_ID=group_id, MONGO_URL=mongo_url, MONGO_DB=mongo_db.name)
    processor = ProcessorProcess(env, tmp_path / "processor.log").start()
    try:
        wait_for("health ok", lambda: processor.health()[0] == 200, 60)
        tokens = mongo_db["token_usage"]
        wait_for(f"{COUNT} stored", lambda: tokens.count_documents({}) == COUNT, 60)
        assert tokens.count_documents({"host": "sasl-host"}) == COUNT
    finally:
        processor.stop()

    base = {"bootstrap.servers": creds["bootstrap"]}
    wrong = refusal(
        {
            **base,
            "security.protocol": "sasl_ssl",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": creds["username"],
            "sasl.password": "not-the-password",
            "ssl.ca.location": creds["ca_location"],
        }
    )
    assert any(
        "SASL authentication error: Authentication failed during authentication due to "
        "invalid credentials with SASL mechanism SCRAM-SHA-512" in line
        for line in wrong
    ), wrong
    plain = refusal({**base, "security.protocol": "plaintext"})
    assert any("Disconnected: connection closed by peer" in line for line in plain), plain
