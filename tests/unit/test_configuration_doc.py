"""docs/configuration.md lists exactly the settings the services read."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from processor.settings import ProcessorSettings
from scripts import config_doc


def test_configuration_doc_matches_the_settings_classes() -> None:
    assert config_doc.main(["--check"]) == 0, "docs/configuration.md is stale: run `make docs`"


def test_every_setting_is_described() -> None:
    for _service, cls in config_doc._services():
        missing = [n for n, f in cls.model_fields.items() if not f.description]
        assert missing == [], f"{cls.__name__} fields without a description: {missing}"


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"CONSUME_BATCH_SIZE": "0"}, "consume_batch_size"),
        ({"HTTP_PORT": "99999"}, "http_port"),
        ({"GPU_PRICES": "{not json"}, "GPU_PRICES: not valid JSON"),
        ({"GPU_PRICES": '{"A100": -1}'}, "must be a number >= 0"),
        ({"PRICE_PER_HOUR_USD": "-0.5"}, "price_per_hour_usd"),
        ({"LOG_LEVEL": "chatty"}, "log_level"),
    ],
)
def test_processor_settings_reject_bad_values_naming_them(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], fragment: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError, match=fragment):
        ProcessorSettings()


def test_processor_settings_render_an_at_least_once_consumer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "10.0.0.1:9092")
    monkeypatch.setenv("GPU_PRICES", '{"NVIDIA A100-SXM4-40GB": 3.2}')
    monkeypatch.setenv("MONGO_URL", "mongodb://app:s3cr3t-pw@10.0.0.2:27017/")
    settings = ProcessorSettings()
    config = settings.consumer_config()
    assert config["bootstrap.servers"] == "10.0.0.1:9092"
    assert config["enable.auto.commit"] is False
    assert config["enable.auto.offset.store"] is False
    assert config["partition.assignment.strategy"] == "cooperative-sticky"
    assert settings.dlq_producer_config()["enable.idempotence"] is True
    assert settings.price_map() == {"NVIDIA A100-SXM4-40GB": 3.2}
    assert "s3cr3t-pw" not in repr(settings)  # credentials never reach logs
    assert "s3cr3t-pw" in settings.mongo_url.get_secret_value()
