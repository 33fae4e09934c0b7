"""Processor settings: typed price maps, every bad variable reported at once, exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from processor.__main__ import main
from processor.settings import PriceFile, ProcessorSettings
from producers.settings import ProducerSettings
from service_settings import problems

A100 = "NVIDIA A100-SXM4-40GB"
L4 = "NVIDIA L4"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ProcessorSettings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


def bad(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError) as info:
        ProcessorSettings()
    return problems(info.value, ProcessorSettings)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"CONSUME_BATCH_SIZE": "0"}, "CONSUME_BATCH_SIZE: must be > 0"),
        ({"CONSUME_BATCH_SIZE": "100001"}, "CONSUME_BATCH_SIZE: must be <= 100000"),
        ({"HTTP_PORT": "99999"}, "HTTP_PORT: must be < 65536"),
        ({"PRICE_PER_HOUR_USD": "-0.5"}, "PRICE_PER_HOUR_USD: must be >= 0"),
        ({"COST_WINDOW_S": "inf"}, "COST_WINDOW_S: must be a finite number"),
        ({"COST_LATENESS_S": "nan"}, "COST_LATENESS_S: must be a finite number"),
        ({"LOG_LEVEL": "chatty"}, "LOG_LEVEL: must be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'"),
        ({"KAFKA_TOPIC": "a/b"}, "KAFKA_TOPIC: must be 1-249 characters of a-z A-Z 0-9"),
        ({"KAFKA_DLQ_TOPIC": "."}, "KAFKA_DLQ_TOPIC: must be 1-249 characters"),
        ({"KAFKA_BOOTSTRAP": "a:1,"}, "KAFKA_BOOTSTRAP: must be host:port[,host:port...]"),
        ({"KAFKA_GROUP_INSTANCE_ID": " "}, "KAFKA_GROUP_INSTANCE_ID: must not be empty"),
        ({"GPU_SEED_FILE": "/nonexistent/seed.json"}, "GPU_SEED_FILE: no such file"),
        ({"GPU_PRICES": "{not json"}, "GPU_PRICES: not valid JSON: Expecting property name"),
        ({"GPU_PRICES": "[3.2]"}, "GPU_PRICES: must be a JSON object of gpu_name -> price"),
        ({"GPU_PRICES": '{"A100": -1}'}, "GPU_PRICES['A100']: must be >= 0"),
        ({"GPU_PRICES": '{"A100": NaN}'}, "GPU_PRICES['A100']: must be a finite number"),
        ({"GPU_PRICES": '{"A100": Infinity}'}, "GPU_PRICES['A100']: must be a finite number"),
        ({"GPU_PRICES": '{"A100": "3.2"}'}, "GPU_PRICES['A100']: must be a valid number"),
        ({"GPU_PRICES": '{"A100": true}'}, "GPU_PRICES['A100']: must be a valid number"),
        ({"GPU_PRICES_FILE": "/nonexistent/p.json"}, "GPU_PRICES_FILE: cannot read /nonexist"),
    ],
)
def test_a_bad_value_is_named_with_its_reason(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    lines = bad(env, monkeypatch)
    assert len(lines) == 1, lines
    assert lines[0].startswith(expected), lines


def test_every_bad_variable_is_reported_at_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({A100: "3.2", L4: -1}))
    lines = bad(
        {
            "KAFKA_TOPIC": "no spaces",
            "CONSUME_BATCH_SIZE": "0",
            "GPU_PRICES": json.dumps({A100: -1, L4: 0.5}),
            "GPU_PRICES_FILE": str(prices),
            "HTTP_PORT": "http",
        },
        monkeypatch,
    )
    assert lines == [
        "KAFKA_TOPIC: must be 1-249 characters of a-z A-Z 0-9 . _ - (not . or ..)",
        "CONSUME_BATCH_SIZE: must be > 0",
        f"GPU_PRICES['{A100}']: must be >= 0",
        f"GPU_PRICES_FILE: {prices}: '{A100}': must be a valid number; '{L4}': must be >= 0",
        "HTTP_PORT: must be a valid integer, unable to parse string as an integer",
    ]


def test_python_m_processor_exits_2_listing_every_bad_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HTTP_PORT", "0")
    monkeypatch.setenv("GPU_PRICES", '{"A100": -3}')
    monkeypatch.setenv("MONGO_URL", "not a url but s3cr3t")
    assert main() == 2
    assert capsys.readouterr().err == (
        "processor: 2 invalid settings:\n"
        "  GPU_PRICES['A100']: must be >= 0\n"
        "  HTTP_PORT: must be > 0\n"
    )


def test_price_map_merges_the_file_under_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({A100: 3, L4: 0.8}))
    monkeypatch.setenv("GPU_PRICES_FILE", str(prices))
    monkeypatch.setenv("GPU_PRICES", json.dumps({A100: 3.2, "NVIDIA H100 80GB HBM3": 0}))
    settings = ProcessorSettings()
    assert settings.gpu_prices_file == PriceFile(prices, {A100: 3.0, L4: 0.8})
    prices.write_text("{}")  # read once, at start: a later edit does not change the prices
    assert settings.price_map() == {A100: 3.2, L4: 0.8, "NVIDIA H100 80GB HBM3": 0.0}
    assert all(type(price) is float for price in settings.price_map().values())


def test_an_empty_variable_means_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    # compose passes `${GPU_PRICES:-}` and `${KAFKA_GROUP_INSTANCE_ID:-...}` style values.
    monkeypatch.setenv("GPU_PRICES", "")
    monkeypatch.setenv("KAFKA_GROUP_INSTANCE_ID", "")
    monkeypatch.setenv("KAFKA_TOPIC", "")
    settings = ProcessorSettings()
    assert settings.price_map() == {}
    assert settings.kafka_group_instance_id is None
    assert settings.kafka_topic == "tokens"


def test_keyword_values_are_parsed_like_the_environment() -> None:
    # Tests build settings with keywords; a JSON string is the same price map as in the env.
    settings = ProcessorSettings(gpu_prices=json.dumps({A100: 1.2}), consume_batch_size=10)
    assert settings.price_map() == {A100: 1.2}
    with pytest.raises(ValidationError, match="gpu_price\n"):
        ProcessorSettings(gpu_price="{}")  # type: ignore[call-arg]


def test_processor_settings_render_an_at_least_once_consumer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "10.0.0.1:9092")
    monkeypatch.setenv("GPU_PRICES", json.dumps({A100: 3.2}))
    monkeypatch.setenv("MONGO_URL", "mongodb://app:s3cr3t-pw@10.0.0.2:27017/")
    settings = ProcessorSettings()
    config = settings.consumer_config()
    assert config["bootstrap.servers"] == "10.0.0.1:9092"
    assert config["enable.auto.commit"] is False
    assert config["enable.auto.offset.store"] is False
    assert config["partition.assignment.strategy"] == "cooperative-sticky"
    assert settings.dlq_producer_config()["enable.idempotence"] is True
    assert settings.price_map() == {A100: 3.2}
    assert "s3cr3t-pw" not in repr(settings)  # credentials never reach logs
    assert "s3cr3t-pw" in settings.mongo_url.get_secret_value()


def test_a_validation_error_never_shows_the_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONGO_TIMEOUT_MS", "s3cr3t-pw")
    with pytest.raises(ValidationError) as info:
        ProcessorSettings()
    assert "s3cr3t-pw" not in str(info.value)


def test_both_services_follow_one_convention() -> None:
    assert ProcessorSettings.model_config == ProducerSettings.model_config
    assert ProcessorSettings.model_config["frozen"] is True
    assert ProcessorSettings.model_config["extra"] == "forbid"
