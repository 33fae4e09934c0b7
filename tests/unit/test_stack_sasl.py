"""`stack up --security sasl-ssl`: the broker properties, the SCRAM format arguments and the
flag's checks (the broker itself: tests/integration/test_kafka_sasl.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.stack.config import StackConfig
from devtools.stack.errors import StackError
from devtools.stack.sasl import sasl_properties, scram_format_args
from devtools.stack.servers import _kafka_properties

CREDS = {
    "username": "tokencost",
    "password": "pw-123",
    "keystore": "/state/kafka/tls/broker.p12",
    "keystore_password": "store-pw",
}


def props(text: str) -> dict[str, str]:
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def test_plaintext_stack_is_unchanged(tmp_path: Path) -> None:
    cfg = StackConfig.make(tmp_path, kafka_listen="127.0.0.1:19000", mongo_listen="127.0.0.1:1")
    p = props(_kafka_properties(cfg, tmp_path / "data", 1))
    assert p["listeners"] == "PLAINTEXT://127.0.0.1:19000,CONTROLLER://127.0.0.1:19001"
    assert not any(key.startswith(("sasl.", "ssl.")) for key in p)


def test_sasl_listener_on_port_plus_two() -> None:
    cfg = StackConfig.make(
        "/state", kafka_listen="127.0.0.1:19000", mongo_listen="127.0.0.1:1", security="sasl-ssl"
    )
    extra = sasl_properties(cfg, CREDS)
    assert extra["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert extra["ssl.keystore.location"] == CREDS["keystore"]
    assert (
        "ScramLoginModule required"
        in extra["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"]
    )
    assert scram_format_args(CREDS) == [
        "--add-scram",
        "SCRAM-SHA-512=[name=tokencost,password=pw-123]",
    ]


@pytest.mark.parametrize(("security", "brokers"), [("tls", 1), ("sasl-ssl", 3)])
def test_bad_security_flag(security: str, brokers: int) -> None:
    with pytest.raises(StackError, match="--security"):
        StackConfig.make("/state", security=security, brokers=brokers)


def test_sasl_properties_and_credentials_made_once(tmp_path: Path) -> None:
    cfg = StackConfig.make(
        tmp_path, kafka_listen="127.0.0.1:19000", mongo_listen="127.0.0.1:1", security="sasl-ssl"
    )
    p = props(_kafka_properties(cfg, tmp_path / "data", 1))
    assert p["listeners"].endswith(",SASL_SSL://127.0.0.1:19002")
    assert p["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19000,SASL_SSL://127.0.0.1:19002"
    assert p["listener.security.protocol.map"].endswith(",SASL_SSL:SASL_SSL")
    creds = tmp_path / "kafka" / "sasl.json"
    assert creds.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "kafka" / "tls" / "ca.pem").read_text().startswith("-----BEGIN CERT")
    first = creds.read_text()
    _kafka_properties(cfg, tmp_path / "data", 1)
    assert creds.read_text() == first  # the SCRAM user is formatted once: never a new password
