"""KAFKA_SECURITY_PROTOCOL & co.: validated, and merged into every Kafka client config of the
processor (consumer, dead-letter producer, AdminClient) and the producers (sink)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from processor.settings import ProcessorSettings
from producers.exceptions import SettingsError
from producers.settings import ProducerSettings, load_settings
from service_settings import problems

PASSWORD = "s3cret-scram-password"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("KAFKA_"):
            monkeypatch.delenv(name)


def processor_configs(s: ProcessorSettings) -> list[dict[str, Any]]:
    return [s.consumer_config(), s.dlq_producer_config(), s.admin_config()]


def test_plaintext_by_default() -> None:
    configs: list[dict[str, Any]] = [*processor_configs(ProcessorSettings())]
    for config in [*configs, ProducerSettings().kafka_config()]:
        assert not any(key.startswith(("security.", "sasl.", "ssl.")) for key in config)


def test_sasl_ssl_reaches_every_client(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "tokencost")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", PASSWORD)
    monkeypatch.setenv("KAFKA_SSL_CA_LOCATION", str(ca))
    expected = {
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "tokencost",
        "sasl.password": PASSWORD,
        "ssl.ca.location": str(ca),
    }
    processor = ProcessorSettings()
    configs = [*processor_configs(processor), ProducerSettings().kafka_config()]
    for config in configs:
        assert {k: config[k] for k in expected} == expected
    # The password is a secret: not in the settings' repr (which may be logged).
    assert PASSWORD not in repr(processor)


def test_password_from_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "kafka_password"
    secret.write_text(PASSWORD + "\n")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "tokencost")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD_FILE", str(secret))
    for config in (ProcessorSettings().consumer_config(), ProducerSettings().kafka_config()):
        assert config["sasl.password"] == PASSWORD
        assert config["sasl.mechanism"] == "SCRAM-SHA-256"
        assert config["security.protocol"] == "sasl_plaintext"
        assert "ssl.ca.location" not in config


def test_sasl_without_credentials_is_a_settings_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "tokencost")
    with pytest.raises(ValidationError) as info:
        ProcessorSettings()
    assert problems(info.value, ProcessorSettings) == [
        "KAFKA_SECURITY_PROTOCOL=SASL_SSL needs KAFKA_SASL_PASSWORD (or KAFKA_SASL_PASSWORD_FILE)"
    ]
    monkeypatch.delenv("KAFKA_SASL_USERNAME")
    with pytest.raises(SettingsError, match="needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"):
        load_settings()


def test_bad_values_are_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "TLS")
    monkeypatch.setenv("KAFKA_SSL_CA_LOCATION", str(tmp_path / "missing.pem"))
    with pytest.raises(ValidationError) as info:
        ProcessorSettings()
    named = [line.split(":")[0] for line in problems(info.value, ProcessorSettings)]
    assert named == ["KAFKA_SECURITY_PROTOCOL", "KAFKA_SSL_CA_LOCATION"]


def test_ssl_without_sasl_needs_no_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SSL")
    config = ProducerSettings().kafka_config()
    assert config["security.protocol"] == "ssl"
    assert "sasl.username" not in config
