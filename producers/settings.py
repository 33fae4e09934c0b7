"""The producer's configuration: one typed object, read from the environment.

    >>> settings = load_settings({"PRODUCER_RATE": "max"})   # overrides win over the environment
    >>> settings.rate, settings.kafka_config()["enable.idempotence"]
    (0.0, True)

Every setting is named by its environment variable (``PRODUCER_RATE``...); command-line flags
are passed in as overrides under the same names, so an error message always names the setting.
A bad value raises :class:`~producers.exceptions.SettingsError` (the CLI exits with code 2).
"""

from __future__ import annotations

import math
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from producers.exceptions import SettingsError

__all__ = ["DEFAULT_MODELS", "ModelWeight", "ProducerSettings", "load_settings", "parse_rate"]

ModelWeight = tuple[str, float]

# The default synthetic fleet mix: mostly small models, some large ones (weights are relative).
DEFAULT_MODELS: Final[tuple[ModelWeight, ...]] = (
    ("llama-3.1-8b-instruct", 5.0),
    ("mistral-7b-instruct", 3.0),
    ("qwen2.5-32b", 2.0),
    ("llama-3.1-70b-instruct", 1.0),
)

# Same rule as the contracts' "host" pattern: the Kafka key is host/gpu_uuid.
_HOST_RE: Final = re.compile(r"^[^/\s]+$")
# Kafka's legal topic names (kafka.common.internals.Topic): at most 249 of [a-zA-Z0-9._-].
_TOPIC_RE: Final = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")
# librdkafka's own bounds for linger.ms and delivery.timeout.ms.
_MAX_LINGER_MS: Final = 900_000
_MAX_DELIVERY_TIMEOUT_MS: Final = 2_147_483_647


def parse_rate(value: object) -> float:
    """Events per second: a number >= 0, or ``max`` / ``0`` for as fast as possible (0.0)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("max", "unlimited", "inf"):
            return 0.0
        try:
            rate = float(text)
        except ValueError:
            raise ValueError(f"must be a number of events/s or 'max', got {value!r}") from None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        rate = float(value)
    else:
        raise ValueError(f"must be a number of events/s or 'max', got {value!r}")
    if math.isnan(rate) or rate < 0:
        raise ValueError("must be >= 0 (0 or 'max' means as fast as possible)")
    return 0.0 if math.isinf(rate) else rate


def _parse_models(text: str) -> tuple[ModelWeight, ...]:
    models: list[ModelWeight] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        name, sep, tail = item.rpartition(":")
        weight = 1.0
        if sep:
            try:
                weight = float(tail)
            except ValueError:  # the colon is part of the name ("org:model")
                name = item
            else:
                if not (weight > 0 and math.isfinite(weight)):
                    raise ValueError(f"weight of {name!r} must be > 0, got {tail!r}")
        else:
            name = item
        name = name.strip()
        if not name or len(name) > 256:
            raise ValueError(f"model name must have 1-256 characters, got {name!r}")
        models.append((name, weight))
    if not models:
        raise ValueError("must list at least one model as name[:weight],...")
    names = [n for n, _ in models]
    if len(set(names)) != len(names):
        raise ValueError("lists a model more than once")
    return tuple(models)


def _positive(value: float) -> float:
    if not (value > 0 and math.isfinite(value)):
        raise ValueError("must be > 0")
    return value


class ProducerSettings(BaseSettings):
    """Everything the producer reads from its environment (names are the env variables)."""

    model_config = SettingsConfigDict(
        case_sensitive=False,
        # compose files pass `${VAR:-}`; an empty variable means "use the default".
        env_ignore_empty=True,
        extra="forbid",
        frozen=True,
    )

    bootstrap: str = Field(
        default="127.0.0.1:9092",
        validation_alias="KAFKA_BOOTSTRAP",
        description="Kafka bootstrap servers, host:port[,host:port...].",
    )
    topic: str = Field(
        default="tokens",
        validation_alias="KAFKA_TOPIC",
        description="Topic to produce to; must already exist (the producer never creates it).",
    )
    host: str = Field(
        default_factory=socket.gethostname,
        validation_alias="PRODUCER_HOST",
        description="This inference host's name (events' host, key prefix); default: hostname.",
    )
    client_id: str | None = Field(
        default=None,
        validation_alias="PRODUCER_CLIENT_ID",
        description="Kafka client.id; default producer-{host}-{pid} (distinct per instance).",
    )
    rate: float = Field(
        default=50.0,
        validation_alias="PRODUCER_RATE",
        description="run: token events per second; 0 or max = as fast as possible.",
    )
    gpu_interval_s: float = Field(
        default=10.0,
        validation_alias="PRODUCER_GPU_INTERVAL_S",
        description="run: seconds between GPU readings (one gpu.metrics.v1 per GPU).",
    )
    gpu_seed_file: Path | None = Field(
        default=None,
        validation_alias="GPU_SEED_FILE",
        description="Seed file of GPUs for hosts without NVML/nvidia-smi (else the built-in one).",
    )
    models: str = Field(
        default=",".join(f"{name}:{weight:g}" for name, weight in DEFAULT_MODELS),
        validation_alias="PRODUCER_MODELS",
        description="run: model mix as name[:weight],... (any Unicode name without commas).",
    )
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        default="lz4",
        validation_alias="PRODUCER_COMPRESSION",
        description="librdkafka compression.type.",
    )
    # 5 ms: enough to batch at thousands of events/s, invisible at 50 events/s.
    linger_ms: int = Field(
        default=5,
        validation_alias="PRODUCER_LINGER_MS",
        description="librdkafka linger.ms: how long a batch may wait to fill.",
    )
    # 30 s: a broker restart or leader election finishes well within it; after it librdkafka
    # reports the message as failed instead of retrying for ever (its default is 300 s).
    delivery_timeout_ms: int = Field(
        default=30_000,
        validation_alias="PRODUCER_DELIVERY_TIMEOUT_MS",
        description="librdkafka delivery.timeout.ms: after it an unsent event counts as failed.",
    )
    # 10 s: a healthy broker answers metadata in milliseconds; ten seconds covers a slow start
    # without leaving an operator staring at a silent process when the address is wrong.
    connect_timeout_s: float = Field(
        default=10.0,
        validation_alias="PRODUCER_CONNECT_TIMEOUT_S",
        description="Seconds to wait for Kafka's metadata at start before exiting with 1.",
    )
    # 30 s = the delivery timeout: by then librdkafka has reported (delivered or failed) every
    # message it still held; lower it to fit a container's stop grace period.
    flush_timeout_s: float = Field(
        default=30.0,
        validation_alias="PRODUCER_FLUSH_TIMEOUT_S",
        description="Seconds to wait for outstanding deliveries when stopping.",
    )
    progress_s: float = Field(
        default=5.0,
        validation_alias="PRODUCER_PROGRESS_S",
        description="Seconds between progress lines on stderr; 0 = none.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", validation_alias="LOG_LEVEL", description="Log level (stderr)."
    )

    @field_validator("bootstrap")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        value = value.strip()
        if not value or any(not part.strip() for part in value.split(",")):
            raise ValueError("must be host:port[,host:port...]")
        return value

    @field_validator("topic")
    @classmethod
    def _check_topic(cls, value: str) -> str:
        if not _TOPIC_RE.match(value) or value in (".", ".."):
            raise ValueError("must be 1-249 characters of a-z A-Z 0-9 . _ -")
        return value

    @field_validator("host")
    @classmethod
    def _check_host(cls, value: str) -> str:
        if not _HOST_RE.match(value) or len(value) > 253:
            raise ValueError("must be 1-253 characters with no '/' or whitespace (key = host/gpu)")
        return value

    @field_validator("client_id")
    @classmethod
    def _check_client_id(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("rate", mode="before")
    @classmethod
    def _check_rate(cls, value: Any) -> float:
        return parse_rate(value)

    @field_validator("gpu_interval_s", "connect_timeout_s", "flush_timeout_s")
    @classmethod
    def _check_positive(cls, value: float) -> float:
        return _positive(value)

    @field_validator("progress_s")
    @classmethod
    def _check_progress(cls, value: float) -> float:
        if not (value >= 0 and math.isfinite(value)):
            raise ValueError("must be >= 0 (0 turns progress lines off)")
        return value

    @field_validator("gpu_seed_file")
    @classmethod
    def _check_seed_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @field_validator("models")
    @classmethod
    def _check_models(cls, value: str) -> str:
        _parse_models(value)
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("compression", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("linger_ms")
    @classmethod
    def _check_linger(cls, value: int) -> int:
        if not 0 <= value <= _MAX_LINGER_MS:
            raise ValueError(f"must be between 0 and {_MAX_LINGER_MS}")
        return value

    @field_validator("delivery_timeout_ms")
    @classmethod
    def _check_delivery_timeout(cls, value: int) -> int:
        if not 1 <= value <= _MAX_DELIVERY_TIMEOUT_MS:
            raise ValueError(f"must be between 1 and {_MAX_DELIVERY_TIMEOUT_MS}")
        return value

    @model_validator(mode="after")
    def _check_together(self) -> ProducerSettings:
        # librdkafka refuses a delivery timeout shorter than the linger (the batch would expire
        # before it is sent); say so here with the setting's name instead of at Producer().
        if self.delivery_timeout_ms < self.linger_ms:
            raise ValueError(
                "PRODUCER_DELIVERY_TIMEOUT_MS: must be >= PRODUCER_LINGER_MS "
                f"({self.delivery_timeout_ms} < {self.linger_ms})"
            )
        return self

    @property
    def model_mix(self) -> tuple[ModelWeight, ...]:
        """``PRODUCER_MODELS`` parsed: ``(name, weight)`` pairs in the order given."""
        return _parse_models(self.models)

    @property
    def effective_client_id(self) -> str:
        """``PRODUCER_CLIENT_ID``, else ``producer-{host}-{pid}`` (distinct per instance)."""
        return self.client_id or f"producer-{self.host}-{os.getpid()}"

    def kafka_config(self) -> dict[str, str | int | float | bool]:
        """The librdkafka configuration of the producer these settings describe."""
        return {
            "bootstrap.servers": self.bootstrap,
            "client.id": self.effective_client_id,
            # Idempotence: retries after a lost ack never duplicate or reorder within a partition.
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": self.compression,
            "linger.ms": self.linger_ms,
            "delivery.timeout.ms": self.delivery_timeout_ms,
            # Topics are created by the deployment (12 partitions); a typo in KAFKA_TOPIC must
            # fail loudly rather than auto-create a 1-partition topic nobody consumes.
            "allow.auto.create.topics": False,
        }


def _format_error(error: Mapping[str, Any], flags: Mapping[str, str]) -> str:
    loc = [str(part) for part in error.get("loc", ())]
    msg = str(error.get("msg", "invalid value"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    if not loc:  # a model-level check names its settings itself
        return msg
    name = loc[0].upper()
    if error.get("type") == "extra_forbidden":
        return f"{name}: unknown setting"
    msg = msg.replace("Input should be", "must be")
    where = f"{name} ({flags[name]})" if name in flags else name
    return f"{where}: {msg}"


def load_settings(
    overrides: Mapping[str, object] | None = None, *, flags: Mapping[str, str] | None = None
) -> ProducerSettings:
    """Settings from the environment, ``overrides`` (by env name, e.g. from flags) winning.

    ``flags`` maps a setting's env name to the flag that set it, so that an error caused by a
    flag says so (``PRODUCER_RATE (--rate): must be >= 0 ...``). Raises SettingsError.
    """
    values: dict[str, Any] = {k: v for k, v in (overrides or {}).items() if v is not None}
    try:
        return ProducerSettings(**values)
    except ValidationError as exc:
        lines = [_format_error(err, flags or {}) for err in exc.errors()]
        raise SettingsError("\n".join(lines)) from None
