"""Producer settings: defaults, environment, flag overrides, and errors that name the setting."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from pydantic import ValidationError

from producers.cli import EXIT_USAGE, main
from producers.exceptions import SettingsError
from producers.settings import DEFAULT_MODELS, ProducerSettings, load_settings, parse_rate

SETTING_ENV = (
    "KAFKA_BOOTSTRAP",
    "KAFKA_TOPIC",
    "PRODUCER_HOST",
    "PRODUCER_CLIENT_ID",
    "PRODUCER_RATE",
    "PRODUCER_GPU_INTERVAL_S",
    "GPU_SEED_FILE",
    "PRODUCER_MODELS",
    "PRODUCER_TENANTS",
    "PRODUCER_DEPLOYMENT",
    "PRODUCER_COMPRESSION",
    "PRODUCER_LINGER_MS",
    "PRODUCER_DELIVERY_TIMEOUT_MS",
    "PRODUCER_CONNECT_TIMEOUT_S",
    "PRODUCER_FLUSH_TIMEOUT_S",
    "PRODUCER_PROGRESS_S",
    "PRODUCER_GPU_SOURCES",
    "GPU_DCGM_EXPORTER_URL",
    "PRODUCER_OTLP_LISTEN",
    "PRODUCER_OTLP_TENANT_ATTRIBUTE",
    "PRODUCER_OTLP_GPU_ATTRIBUTE",
    "PRODUCER_OTLP_QUEUE_SIZE",
    "PRODUCER_OTLP_MAX_BODY_BYTES",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "PROXY_UPSTREAM",
    "PROXY_LISTEN",
    "PROXY_TENANT_HEADER",
    "PROXY_UPSTREAM_TIMEOUT_S",
    "PROXY_CONNECT_TIMEOUT_S",
    "PROXY_GPU_READINGS",
    "PROXY_QUEUE_SIZE",
)
# Read by field name (its <NAME>_FILE variant needs that), not by validation_alias.
NAMED_BY_FIELD = (
    "PROXY_API_KEYS",
    # service_settings.kafka_security: no alias, so KAFKA_SASL_PASSWORD_FILE works.
    "KAFKA_SECURITY_PROTOCOL",
    "KAFKA_SASL_MECHANISM",
    "KAFKA_SASL_USERNAME",
    "KAFKA_SASL_PASSWORD",
    "KAFKA_SSL_CA_LOCATION",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*SETTING_ENV, *NAMED_BY_FIELD):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(f"{name}_FILE", raising=False)


def test_defaults() -> None:
    s = load_settings()
    assert s.bootstrap == "127.0.0.1:9092"
    assert s.topic == "tokens"
    assert s.host == socket.gethostname()
    assert s.effective_client_id == f"producer-{s.host}-{os.getpid()}"
    assert s.rate == 50.0
    assert s.gpu_interval_s == 10.0
    assert s.gpu_seed_file is None
    assert list(s.models.items()) == list(DEFAULT_MODELS)
    assert (s.compression, s.linger_ms, s.delivery_timeout_ms) == ("lz4", 5, 30_000)
    assert (s.progress_s, s.log_level) == (5.0, "INFO")


def test_every_setting_has_its_env_name() -> None:
    names = {
        f.validation_alias or name.upper() for name, f in ProducerSettings.model_fields.items()
    }
    assert names == set(SETTING_ENV) | set(NAMED_BY_FIELD)


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seed = tmp_path / "seed.json"
    seed.write_text("[]")
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "10.0.0.1:9092,10.0.0.2:9092")
    monkeypatch.setenv("KAFKA_TOPIC", "tokens-test")
    monkeypatch.setenv("PRODUCER_HOST", "inference-07")
    monkeypatch.setenv("PRODUCER_RATE", "max")
    monkeypatch.setenv("PRODUCER_GPU_INTERVAL_S", "2.5")
    monkeypatch.setenv("GPU_SEED_FILE", str(seed))
    monkeypatch.setenv("PRODUCER_MODELS", "通义千问-7b:2, llama-3.1-8b-instruct")
    monkeypatch.setenv("PRODUCER_COMPRESSION", "ZSTD")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    s = load_settings()
    assert s.bootstrap == "10.0.0.1:9092,10.0.0.2:9092"
    assert s.topic == "tokens-test"
    assert s.effective_client_id.startswith("producer-inference-07-")
    assert s.rate == 0.0
    assert s.gpu_interval_s == 2.5
    assert s.gpu_seed_file == seed
    assert list(s.models.items()) == [("通义千问-7b", 2.0), ("llama-3.1-8b-instruct", 1.0)]
    assert (s.compression, s.log_level) == ("zstd", "DEBUG")


def test_empty_variable_means_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRODUCER_RATE", "")
    assert load_settings().rate == 50.0


def test_overrides_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRODUCER_RATE", "10")
    monkeypatch.setenv("KAFKA_TOPIC", "from-env")
    s = load_settings({"PRODUCER_RATE": "250", "KAFKA_TOPIC": None})
    assert s.rate == 250.0
    assert s.topic == "from-env"  # None = flag not given


def test_kafka_config_is_idempotent_and_keyed_by_settings() -> None:
    s = load_settings({"PRODUCER_CLIENT_ID": "producer-a", "PRODUCER_LINGER_MS": "20"})
    config = s.kafka_config()
    assert config == {
        "bootstrap.servers": "127.0.0.1:9092",
        "client.id": "producer-a",
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "lz4",
        "linger.ms": 20,
        "delivery.timeout.ms": 30_000,
        "allow.auto.create.topics": False,
    }


@pytest.mark.parametrize(
    ("env", "value", "expected"),
    [
        ("PRODUCER_RATE", "-1", "PRODUCER_RATE: must be >= 0"),
        ("PRODUCER_RATE", "fast", "PRODUCER_RATE: must be a number of events/s or 'max'"),
        ("PRODUCER_RATE", "nan", "PRODUCER_RATE: must be a finite number"),
        ("PRODUCER_RATE", "-inf", "PRODUCER_RATE: must be a finite number"),
        ("PRODUCER_GPU_INTERVAL_S", "0", "PRODUCER_GPU_INTERVAL_S: must be > 0"),
        ("PRODUCER_HOST", "bad/host", "PRODUCER_HOST: must have no '/' or whitespace"),
        ("PRODUCER_HOST", "two words", "PRODUCER_HOST: must have no '/' or whitespace"),
        ("PRODUCER_HOST", "h" * 254, "PRODUCER_HOST: must have at most 253 characters"),
        ("KAFKA_TOPIC", "no spaces", "KAFKA_TOPIC: must be 1-249 characters"),
        ("KAFKA_TOPIC", "..", "KAFKA_TOPIC: must be 1-249 characters"),
        ("KAFKA_TOPIC", "t" * 250, "KAFKA_TOPIC: must have at most 249 characters"),
        ("KAFKA_BOOTSTRAP", " ", "KAFKA_BOOTSTRAP: must be host:port"),
        ("KAFKA_BOOTSTRAP", "a:1,,b:2", "KAFKA_BOOTSTRAP: must be host:port"),
        ("PRODUCER_CLIENT_ID", "  ", "PRODUCER_CLIENT_ID: must not be empty"),
        ("PRODUCER_COMPRESSION", "brotli", "PRODUCER_COMPRESSION: must be 'none', 'gzip'"),
        ("PRODUCER_LINGER_MS", "soon", "PRODUCER_LINGER_MS: must be a valid integer"),
        ("PRODUCER_LINGER_MS", "-5", "PRODUCER_LINGER_MS: must be >= 0"),
        ("PRODUCER_LINGER_MS", "900001", "PRODUCER_LINGER_MS: must be <= 900000"),
        ("PRODUCER_DELIVERY_TIMEOUT_MS", "0", "PRODUCER_DELIVERY_TIMEOUT_MS: must be >= 1"),
        ("PRODUCER_PROGRESS_S", "-1", "PRODUCER_PROGRESS_S: must be >= 0"),
        ("PRODUCER_FLUSH_TIMEOUT_S", "0", "PRODUCER_FLUSH_TIMEOUT_S: must be > 0"),
        ("PRODUCER_CONNECT_TIMEOUT_S", "inf", "PRODUCER_CONNECT_TIMEOUT_S: must be a finite"),
        ("GPU_SEED_FILE", "/nonexistent/seed.json", "GPU_SEED_FILE: no such file"),
        ("PRODUCER_MODELS", " , ", "PRODUCER_MODELS: must list at least one model"),
        ("PRODUCER_MODELS", "a:0", "PRODUCER_MODELS['a']: must be > 0"),
        ("PRODUCER_MODELS", "a:-1.5,b", "PRODUCER_MODELS['a']: must be > 0"),
        ("PRODUCER_MODELS", "a:nan", "PRODUCER_MODELS['a']: must be a finite number"),
        ("PRODUCER_MODELS", "a,a", "PRODUCER_MODELS: lists 'a' more than once"),
        ("PRODUCER_MODELS", ":2", "PRODUCER_MODELS key '': must not be empty"),
        ("PRODUCER_MODELS", "m" * 257, "PRODUCER_MODELS key 'mmmmm"),
        ("LOG_LEVEL", "chatty", "LOG_LEVEL: must be 'DEBUG'"),
        (
            "PRODUCER_DEPLOYMENT",
            "=0;b=x;c",
            "PRODUCER_DEPLOYMENT: '=0': empty model name; 'b=x': GPU index 'x' is not a number"
            " >= 0; 'c': must be model=gpu_index[,gpu_index...]",
        ),
        ("PRODUCER_DEPLOYMENT", "a=1,1", "PRODUCER_DEPLOYMENT: 'a=1,1': lists a GPU twice"),
        ("PRODUCER_DEPLOYMENT", " ; ", "PRODUCER_DEPLOYMENT: must list at least one model="),
    ],
)
def test_bad_environment_value_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value).startswith(expected), str(info.value)


def test_models_keep_their_order_and_colons_in_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRODUCER_MODELS", " org:model-b:2.5 , org:model-a, z ")
    assert list(load_settings().models.items()) == [
        ("org:model-b", 2.5),
        ("org:model-a", 1.0),  # "model-a" is no number: the colon belongs to the name
        ("z", 1.0),
    ]


def test_values_are_trimmed_and_case_folded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_TOPIC", " tokens-a\n")
    monkeypatch.setenv("PRODUCER_COMPRESSION", " Zstd ")
    monkeypatch.setenv("LOG_LEVEL", "warning ")
    s = load_settings()
    assert (s.topic, s.compression, s.log_level) == ("tokens-a", "zstd", "WARNING")


def test_an_unknown_override_is_refused() -> None:
    # A misspelt override name (a flag wired to the wrong variable) must not be dropped.
    with pytest.raises(SettingsError, match=r"^PRODUCER_RAT: unknown setting"):
        load_settings({"PRODUCER_RAT": "5"})


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(ValidationError, match="frozen"):
        s.rate = 1.0  # type: ignore[misc]


def test_linger_longer_than_delivery_timeout_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRODUCER_LINGER_MS", "100")
    monkeypatch.setenv("PRODUCER_DELIVERY_TIMEOUT_MS", "50")
    with pytest.raises(
        SettingsError, match="PRODUCER_DELIVERY_TIMEOUT_MS: must be >= PRODUCER_LINGER_MS"
    ):
        load_settings()


def test_every_bad_setting_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRODUCER_RATE", "-1")
    monkeypatch.setenv("PRODUCER_HOST", "a/b")
    monkeypatch.setenv("PRODUCER_MODELS", "a:0")
    # A check across two settings is reported with the others, not after they are fixed.
    monkeypatch.setenv("PRODUCER_LINGER_MS", "100")
    monkeypatch.setenv("PRODUCER_DELIVERY_TIMEOUT_MS", "50")
    with pytest.raises(SettingsError) as info:
        load_settings()
    lines = str(info.value).splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "PRODUCER_HOST",
        "PRODUCER_RATE",
        "PRODUCER_MODELS['a']",
        "PRODUCER_DELIVERY_TIMEOUT_MS",
    ]


def test_flag_errors_name_the_flag_too() -> None:
    with pytest.raises(SettingsError, match=r"^PRODUCER_RATE \(--rate\): must be >= 0"):
        load_settings({"PRODUCER_RATE": "-3"}, flags={"PRODUCER_RATE": "--rate"})


@pytest.mark.parametrize(
    ("text", "rate"),
    [("max", 0.0), ("MAX", 0.0), ("0", 0.0), ("12.5", 12.5), (7, 7.0), ("inf", 0.0)],
)
def test_parse_rate(text: str | int, rate: float) -> None:
    assert parse_rate(text) == rate
    assert load_settings({"PRODUCER_RATE": text}).rate == rate


def test_cli_exits_2_listing_every_bad_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PRODUCER_RATE", "-1")
    monkeypatch.setenv("LOG_LEVEL", "chatty")
    assert main(["run", "--count", "1", "--topic", "a topic"]) == EXIT_USAGE
    assert capsys.readouterr().err == (
        "producers: 3 invalid settings:\n"
        "  KAFKA_TOPIC (--topic): must be 1-249 characters of a-z A-Z 0-9 . _ - (not . or ..)\n"
        "  PRODUCER_RATE: must be >= 0\n"
        "  LOG_LEVEL: must be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'\n"
    )


def test_cli_exits_2_on_a_bad_flag_value(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--count", "1", "--gpu-interval", "0"]) == EXIT_USAGE
    assert "PRODUCER_GPU_INTERVAL_S (--gpu-interval): must be > 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--count", "0"],
        ["run", "--duration", "-1"],
        ["replay", "x.jsonl", "--speed", "fast"],
        ["replay", "x.jsonl", "--loops", "-1"],
        ["bogus"],
        [],
    ],
)
def test_cli_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == EXIT_USAGE
    assert "usage:" in capsys.readouterr().err


def test_gpu_sources_order_and_dcgm_url() -> None:
    s = load_settings(
        {
            "PRODUCER_GPU_SOURCES": "NVML, dcgm-exporter,seed",
            "GPU_DCGM_EXPORTER_URL": "http://127.0.0.1:9400/metrics",
        }
    )
    assert s.gpu_sources == ["nvml", "dcgm-exporter", "seed"]
    assert load_settings().gpu_sources is None
    with pytest.raises(SettingsError, match="GPU_DCGM_EXPORTER_URL is not set"):
        load_settings({"PRODUCER_GPU_SOURCES": "dcgm-exporter,seed"})
    with pytest.raises(SettingsError, match="PRODUCER_GPU_SOURCES"):
        load_settings({"PRODUCER_GPU_SOURCES": "nvml,dcgm"})
    with pytest.raises(SettingsError, match="GPU_DCGM_EXPORTER_URL"):
        load_settings({"GPU_DCGM_EXPORTER_URL": "127.0.0.1:9400"})
