"""The producer's configuration: one typed object, read from the environment.

    >>> settings = load_settings({"PRODUCER_RATE": "max"})   # overrides win over the environment
    >>> settings.rate, settings.kafka_config()["enable.idempotence"]
    (0.0, True)

Every setting is named by its environment variable (``PRODUCER_RATE``...); command-line flags
are passed in as overrides under the same names, so an error message always names the setting.
Bad values raise :class:`~producers.exceptions.SettingsError` listing every one of them (the
CLI exits with code 2).
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BeforeValidator,
    Field,
    FilePath,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gpu_readers import KNOWN_SOURCES
from producers.exceptions import SettingsError
from producers.fleet import DeploymentEntry, parse_deployment
from producers.tenants import DEFAULT_TENANTS, TenantMix
from service_settings import (
    KafkaBootstrap,
    KafkaTopic,
    LogFormat,
    LogLevel,
    SecretList,
    ServiceSettings,
    explained,
    problems,
)
from service_settings.kafka_security import KafkaSecurity

__all__ = ["DEFAULT_MODELS", "ModelMix", "ProducerSettings", "load_settings", "parse_rate"]

# The default synthetic fleet mix: mostly small models, some large ones (weights are relative).
DEFAULT_MODELS: Final[tuple[tuple[str, float], ...]] = (
    ("llama-3.1-8b-instruct", 5.0),
    ("mistral-7b-instruct", 3.0),
    ("qwen2.5-32b", 2.0),
    ("llama-3.1-70b-instruct", 1.0),
)

# librdkafka's own upper bounds for linger.ms and delivery.timeout.ms.
_MAX_LINGER_MS: Final = 900_000
_MAX_DELIVERY_TIMEOUT_MS: Final = 2_147_483_647
_RATE_UNLIMITED: Final = ("max", "unlimited", "inf", "infinity")


def parse_rate(value: object) -> object:
    """Events per second as written: ``max`` (or ``inf``) means as fast as possible, i.e. 0.0.

    Anything else is left to the field (a number >= 0); a word other than those is refused
    here, so that the message can mention ``max``.
    """
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _RATE_UNLIMITED:
            return 0.0
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"must be a number of events/s or 'max', got {value!r}") from None
    if isinstance(value, float) and math.isinf(value) and value > 0:
        return 0.0
    return value


def _lower(value: Any) -> Any:
    # A Literal is not a str field: str_strip_whitespace does not reach it.
    return value.strip().lower() if isinstance(value, str) else value


def _tenant_mix(value: Any) -> Any:
    return TenantMix.parse(value) if isinstance(value, str) else value


def _split_models(value: Any) -> Any:
    """PRODUCER_MODELS as written, ``name[:weight],...``, into an ordered name -> weight map.

    A tail after the last colon that is not a number belongs to the name (``org:model``); the
    weights' range and the names' length are the field's constraints.
    """
    if not isinstance(value, str):
        return value
    models: dict[str, object] = {}
    for raw in value.split(","):
        item = raw.strip()
        if not item:
            continue
        name, sep, tail = item.rpartition(":")
        weight: object = 1.0
        if sep:
            try:
                weight = float(tail)
            except ValueError:  # the colon is part of the name ("org:model")
                name = item
        else:
            name = item
        name = name.strip()
        if name in models:
            raise ValueError(f"lists {name!r} more than once")
        models[name] = weight
    if not models:
        raise ValueError("must list at least one model as name[:weight],...")
    return models


def _split_sources(value: Any) -> Any:
    """PRODUCER_GPU_SOURCES: names separated by commas, each known, none twice."""
    if not isinstance(value, str):
        return value
    names = [part.strip().lower() for part in value.split(",") if part.strip()]
    if not names:
        return None
    unknown = [n for n in names if n not in KNOWN_SOURCES]
    if unknown or len(set(names)) != len(names):
        raise ValueError(f"must list each of {', '.join(KNOWN_SOURCES)} at most once")
    return names


def _split_deployment(value: Any) -> Any:
    """PRODUCER_DEPLOYMENT as written, ``model=i[,i...];...`` (see ``producers.fleet``)."""
    return parse_deployment(value) if isinstance(value, str) else value


# Model name -> relative weight, in the order given (the traffic generator's draw order).
ModelMix = Annotated[
    dict[
        Annotated[str, Field(min_length=1, max_length=256)],
        Annotated[float, Field(gt=0)],
    ],
    BeforeValidator(_split_models),
]


class ProducerSettings(ServiceSettings, KafkaSecurity):
    """Everything the producer reads from its environment (names are the env variables)."""

    bootstrap: KafkaBootstrap = Field(
        default="127.0.0.1:9092",
        validation_alias="KAFKA_BOOTSTRAP",
        description="Kafka bootstrap servers, host:port[,host:port...].",
    )
    topic: KafkaTopic = Field(
        default="tokens",
        validation_alias="KAFKA_TOPIC",
        description="Topic to produce to; must already exist (the producer never creates it).",
    )
    # Same rule as the contracts' "host" pattern: the Kafka key is host/gpu_uuid.
    host: str = Field(
        default_factory=socket.gethostname,
        max_length=253,
        pattern=explained(r"^[^/\s]+$", "must have no '/' or whitespace (key = host/gpu_uuid)"),
        validation_alias="PRODUCER_HOST",
        description="This inference host's name (events' host, key prefix); default: hostname.",
    )
    client_id: str | None = Field(
        default=None,
        min_length=1,
        validation_alias="PRODUCER_CLIENT_ID",
        description="Kafka client.id; default producer-{host}-{pid} (distinct per instance).",
    )
    rate: Annotated[float, BeforeValidator(parse_rate)] = Field(
        default=50.0,
        ge=0,
        validation_alias="PRODUCER_RATE",
        description="run: token events per second; 0 or max = as fast as possible.",
    )
    gpu_interval_s: float = Field(
        default=10.0,
        gt=0,
        validation_alias="PRODUCER_GPU_INTERVAL_S",
        description="run: seconds between GPU readings (one gpu.metrics.v1 per GPU).",
    )
    gpu_seed_file: FilePath | None = Field(
        default=None,
        validation_alias="GPU_SEED_FILE",
        description="Seed file of GPUs for hosts without NVML/nvidia-smi (else the built-in one).",
    )
    # Empty = the built-in order: nvml,nvidia-smi,seed, with dcgm-exporter before seed when
    # GPU_DCGM_EXPORTER_URL is set.
    gpu_sources: Annotated[list[str] | None, BeforeValidator(_split_sources)] = Field(
        default=None,
        validation_alias="PRODUCER_GPU_SOURCES",
        description="GPU sources in the order tried, from nvml, nvidia-smi, dcgm-exporter, "
        "seed (e.g. nvml,nvidia-smi,dcgm-exporter,seed); default: nvml,nvidia-smi,"
        "[dcgm-exporter,]seed.",
    )
    dcgm_exporter_url: str | None = Field(
        default=None,
        pattern=explained(r"^https?://\S+$", "must be an http(s) URL"),
        validation_alias="GPU_DCGM_EXPORTER_URL",
        description="dcgm-exporter /metrics URL (e.g. http://127.0.0.1:9400/metrics): "
        "read as the dcgm-exporter GPU source.",
    )
    # The default is the text a user would write (settings validate their defaults, so it is
    # parsed like PRODUCER_MODELS), so that the docs table shows it in that form; hence the
    # ignore: the field holds the parsed map.
    models: ModelMix = Field(
        default=",".join(f"{name}:{weight:g}" for name, weight in DEFAULT_MODELS),  # type: ignore[arg-type]
        validation_alias="PRODUCER_MODELS",
        description="run: model mix as name[:weight],... (any Unicode name without commas).",
    )
    tenants: Annotated[TenantMix, BeforeValidator(_tenant_mix), PlainSerializer(str)] = Field(
        default=DEFAULT_TENANTS,  # type: ignore[assignment]  # parsed like the env value
        validation_alias="PRODUCER_TENANTS",
        description="run and replay --format azure-trace: who requests are billed to, "
        "name[:weight],...; '-' = no tenant (shown as (unattributed)). Each request's tenant "
        "is a hash of its id: deterministic.",
    )
    # Checked against the GPUs the reader reports once they are read (producers.fleet.resolve).
    deployment: Annotated[list[DeploymentEntry] | None, BeforeValidator(_split_deployment)] = Field(
        default=None,
        validation_alias="PRODUCER_DEPLOYMENT",
        description="Which model runs on which GPUs: model=gpu_index[,gpu_index...];... "
        "(several GPUs = tensor parallel); default: one model per GPU, round-robin over "
        "PRODUCER_MODELS.",
    )
    compression: Annotated[
        Literal["none", "gzip", "snappy", "lz4", "zstd"], BeforeValidator(_lower)
    ] = Field(
        default="lz4",
        validation_alias="PRODUCER_COMPRESSION",
        description="librdkafka compression.type.",
    )
    # 5 ms: enough to batch at thousands of events/s, invisible at 50 events/s.
    linger_ms: int = Field(
        default=5,
        ge=0,
        le=_MAX_LINGER_MS,
        validation_alias="PRODUCER_LINGER_MS",
        description="librdkafka linger.ms: how long a batch may wait to fill.",
    )
    # 30 s: a broker restart or leader election finishes well within it; after it librdkafka
    # reports the message as failed instead of retrying for ever (its default is 300 s).
    delivery_timeout_ms: int = Field(
        default=30_000,
        ge=1,
        le=_MAX_DELIVERY_TIMEOUT_MS,
        validation_alias="PRODUCER_DELIVERY_TIMEOUT_MS",
        description="librdkafka delivery.timeout.ms: after it an unsent event counts as failed.",
    )
    # 10 s: a healthy broker answers metadata in milliseconds; ten seconds covers a slow start
    # without leaving an operator staring at a silent process when the address is wrong.
    connect_timeout_s: float = Field(
        default=10.0,
        gt=0,
        validation_alias="PRODUCER_CONNECT_TIMEOUT_S",
        description="Seconds to wait for Kafka's metadata at start before exiting with 1.",
    )
    # 30 s = the delivery timeout: by then librdkafka has reported (delivered or failed) every
    # message it still held; lower it to fit a container's stop grace period.
    flush_timeout_s: float = Field(
        default=30.0,
        gt=0,
        validation_alias="PRODUCER_FLUSH_TIMEOUT_S",
        description="Seconds to wait for outstanding deliveries when stopping.",
    )
    progress_s: float = Field(
        default=5.0,
        ge=0,
        validation_alias="PRODUCER_PROGRESS_S",
        description="Seconds between progress lines on stderr; 0 = none.",
    )
    # 4318: the OTLP/HTTP port every OpenTelemetry SDK and Collector uses by default.
    otlp_listen: str = Field(
        default="0.0.0.0:4318",
        pattern=explained(r"^[^\s:]*:\d{1,5}$", "must be HOST:PORT"),
        validation_alias="PRODUCER_OTLP_LISTEN",
        description="otlp: address the OTLP/HTTP receiver listens on (POST /v1/traces).",
    )
    otlp_tenant_attribute: str = Field(
        default="tenant.id",
        min_length=1,
        validation_alias="PRODUCER_OTLP_TENANT_ATTRIBUTE",
        description="otlp: span (else resource) attribute whose value is the event's tenant.",
    )
    otlp_gpu_attribute: str = Field(
        default="gpu.index",
        min_length=1,
        validation_alias="PRODUCER_OTLP_GPU_ATTRIBUTE",
        description="otlp: resource (or span) attribute listing the gpu_index values that "
        "served the span (comma-separated); without it the GPUs come from PRODUCER_DEPLOYMENT "
        "by model.",
    )
    # 10,000 events: a minute of a busy host's requests if Kafka stalls, about 10 MB of memory.
    otlp_queue_size: int = Field(
        default=10_000,
        ge=1,
        validation_alias="PRODUCER_OTLP_QUEUE_SIZE",
        description="otlp: events held for Kafka; beyond it new events are dropped and counted.",
    )
    # 4 MiB (after gzip inflation): the OpenTelemetry Collector's default batch is far smaller.
    otlp_max_body_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1024,
        validation_alias="PRODUCER_OTLP_MAX_BODY_BYTES",
        description="otlp: largest request body accepted (inflated); larger gets 413.",
    )
    log_level: LogLevel = Field(
        default="INFO", validation_alias="LOG_LEVEL", description="Log level (stderr)."
    )
    log_format: LogFormat = Field(
        default="text",
        validation_alias="LOG_FORMAT",
        description="`text` (default) or `json`: one JSON object per log line (stderr).",
    )
    # -- proxy (python -m producers proxy): see docs/proxy.md ----------------------------------
    proxy_upstream: str | None = Field(
        default=None,
        pattern=explained(r"^https?://[^\s/]+(/\S*)?$", "must be an http:// or https:// URL"),
        validation_alias="PROXY_UPSTREAM",
        description="proxy: base URL of the OpenAI-compatible server, e.g. http://vllm:8000 "
        "(required by the proxy command).",
    )
    proxy_listen: str = Field(
        default="0.0.0.0:8100",
        pattern=explained(r"^[^\s]*:[0-9]{1,5}$", "must be host:port"),
        validation_alias="PROXY_LISTEN",
        description="proxy: address the proxy listens on, host:port.",
    )
    proxy_tenant_header: str | None = Field(
        default="X-Tenant",
        pattern=explained(r"^[A-Za-z0-9-]+$", "must be an HTTP header name"),
        validation_alias="PROXY_TENANT_HEADER",
        description="proxy: request header naming the tenant when the API key is not in "
        "PROXY_API_KEYS; '-' = none.",
    )
    # No validation_alias: the <NAME>_FILE source hands values over by field name, and the
    # name upper-cased is the variable (settings names are case-insensitive).
    proxy_api_keys: SecretList | None = Field(
        default=None,
        description="proxy: tenant=api_key,... (readable from PROXY_API_KEYS_FILE); the "
        "client's bearer key picks its tenant. Keys are kept only as SHA-256 digests.",
    )
    # 300 s: a long generation streams a token every few tens of ms, but a large prompt's
    # prefill on a busy server can keep the first byte back for minutes.
    proxy_upstream_timeout_s: float = Field(
        default=300.0,
        gt=0,
        validation_alias="PROXY_UPSTREAM_TIMEOUT_S",
        description="proxy: seconds the upstream may stay silent (before its headers or "
        "between two chunks) before the request ends with status timeout (504).",
    )
    proxy_connect_timeout_s: float = Field(
        default=10.0,
        gt=0,
        validation_alias="PROXY_CONNECT_TIMEOUT_S",
        description="proxy: seconds to open a connection to the upstream (502 after).",
    )
    proxy_gpu_readings: bool = Field(
        default=True,
        validation_alias="PROXY_GPU_READINGS",
        description="proxy: also publish a gpu.metrics.v1 reading per GPU every "
        "PRODUCER_GPU_INTERVAL_S (the allocation cost needs them); false when another "
        "producer on this host already samples the GPUs.",
    )
    # 10,000 events of ~400 bytes: 4 MB, minutes of traffic at hundreds of requests/s.
    proxy_queue_size: int = Field(
        default=10_000,
        ge=1,
        le=10_000_000,
        validation_alias="PROXY_QUEUE_SIZE",
        description="proxy: usage events held for Kafka (and librdkafka's own queue bound); "
        "beyond it events are dropped and counted, requests are never held.",
    )

    @field_validator("delivery_timeout_ms")
    @classmethod
    def _at_least_linger(cls, value: int, info: ValidationInfo) -> int:
        # librdkafka refuses a delivery timeout shorter than the linger (the batch would expire
        # before it is sent); say so here, with the other errors, instead of at Producer().
        linger = info.data.get("linger_ms")  # absent when PRODUCER_LINGER_MS itself is bad
        if linger is not None and value < linger:
            raise ValueError(f"must be >= PRODUCER_LINGER_MS ({value} < {linger})")
        return value

    @model_validator(mode="after")
    def _dcgm_needs_url(self) -> ProducerSettings:
        # Both settings are read before this runs, so the error can name the missing one.
        if self.gpu_sources and "dcgm-exporter" in self.gpu_sources and not self.dcgm_exporter_url:
            raise ValueError(
                "PRODUCER_GPU_SOURCES lists dcgm-exporter but GPU_DCGM_EXPORTER_URL is not set"
            )
        return self

    @field_validator("proxy_tenant_header", mode="before")
    @classmethod
    def _no_header(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip() == "-" else value

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
            **self.kafka_security_config(),
        }


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
        raise SettingsError("\n".join(problems(exc, ProducerSettings, flags))) from None
