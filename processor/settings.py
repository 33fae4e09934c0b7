"""The processor's configuration: one typed object read from the environment.

    >>> settings = ProcessorSettings()            # reads KAFKA_BOOTSTRAP, MONGO_URL, ...
    >>> Consumer(settings.consumer_config())

Every field is documented in docs/configuration.md; a test keeps that table and this class equal.
A bad value raises pydantic's ValidationError listing every bad variable;
``service_settings.problems`` words it (``python -m processor`` prints that and exits with 2).
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BeforeValidator,
    Field,
    FilePath,
    SecretStr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from processor.anomalies import AnomalyRules
from processor.cost import OutputWeights, weight_milli
from service_settings import (
    KafkaBootstrap,
    KafkaTopic,
    LogFormat,
    LogLevel,
    Secret,
    SecretList,
    ServiceSettings,
    reason,
)
from service_settings.kafka_security import KafkaSecurity

__all__ = ["MIN_TOKEN_CHARS", "PriceFile", "PriceMap", "ProcessorSettings"]

# A bearer token is the whole credential: 16 characters is the least that is not guessable by
# trying (`openssl rand -hex 32` gives 64). Shorter ones are refused at start.
MIN_TOKEN_CHARS = 16

# USD per hour by gpu_name. Strict: a price written as a string or a boolean is a mistake in
# the JSON, not something to coerce; an int is fine.
PriceMap = dict[str, Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]]
_PRICE_MAP: TypeAdapter[PriceMap] = TypeAdapter(PriceMap)
# USD per day by tenant (TENANT_BUDGETS_USD_PER_DAY).
BudgetMap = dict[str, Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]]
# Output weight k by model name (checked further by processor.cost.OutputWeights).
WeightMap = dict[str, Annotated[float, Field(strict=True, gt=0, le=1000, allow_inf_nan=False)]]


def _json_object(value: Any) -> Any:
    """GPU_PRICES as written: a JSON object (an empty or blank string is an empty map)."""
    if not isinstance(value, str):
        return value
    if not value.strip():
        return {}
    try:
        data = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("must be a JSON object of gpu_name -> price")
    return data


@dataclass(frozen=True, slots=True)
class PriceFile:
    """GPU_PRICES_FILE: the file, and the price map it held when the processor started."""

    path: Path
    prices: dict[str, float]


def _price_file(value: Any) -> Any:
    """Read and check the file once, at start; its problems are reported with the others."""
    if value is None or isinstance(value, PriceFile):
        return value
    path = Path(value)
    try:
        data = _json_object(path.read_text("utf-8"))
        prices = _PRICE_MAP.validate_python(data)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValidationError as exc:
        bad = "; ".join(f"{err['loc'][0]!r}: {reason(err)}" for err in exc.errors())
        raise ValueError(f"{path}: {bad}") from None
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return PriceFile(path, prices)


class ProcessorSettings(ServiceSettings, KafkaSecurity):
    """Environment variables of the processor (no prefix: the names are shared with compose)."""

    kafka_bootstrap: KafkaBootstrap = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers."
    )
    kafka_topic: KafkaTopic = Field("tokens", description="Topic carrying both event types.")
    kafka_dlq_topic: KafkaTopic = Field("tokens.dlq", description="Dead-letter topic.")
    kafka_group_id: str = Field("processor", description="Consumer group of all replicas.")
    kafka_group_instance_id: str | None = Field(
        None,
        min_length=1,
        max_length=249,
        description="Static group membership: a stable id, unique per replica (compose: the "
        "VM's name). A restarted replica takes its partitions back at once instead of waiting "
        "for the session timeout; a stopped one keeps them until that timeout. Unset: dynamic.",
    )
    kafka_client_id: str = Field(
        default_factory=lambda: f"processor-{socket.gethostname()}",
        description="client.id of this replica (shows in broker logs).",
    )
    mongo_url: Secret = Field(
        SecretStr("mongodb://127.0.0.1:27017/"),
        description="MongoDB connection string (may hold credentials; percent-encode special "
        "characters in them). Secret: or read from MONGO_URL_FILE.",
    )
    mongo_db: str = Field("gpu_cost", description="Database holding gpu_metrics and token_usage.")
    mongo_timeout_ms: int = Field(
        3000, gt=0, description="Server selection / socket timeout for MongoDB calls."
    )
    consume_batch_size: int = Field(
        1000, gt=0, le=100_000, description="Most messages taken by one consume() call."
    )
    consume_timeout_s: float = Field(
        # Short: under a backlog batches fill at once anyway, and at a steady rate it bounds
        # how long the first message of a batch waits (bench: 0.2 s gave p99 ~0.7-1.7 s end to
        # end at 1,000 ev/s, 0.05 s gave ~0.15 s).
        0.05,
        gt=0,
        le=10,
        description="How long one consume() waits for a batch to fill.",
    )
    max_message_bytes: int = Field(
        65536, gt=0, description="Larger Kafka values go to the dead-letter topic."
    )
    consume_queue_max_kb: int = Field(
        # Peak RSS ~ 105 MiB + 1.5 x this (in MiB) + ~30 KiB x CONSUME_BATCH_SIZE under a
        # backlog (make bench, hostile drain): 64 MiB peaked at 224-249 MiB with 5,000
        # oversize/invalid messages in 50,000, 16 MiB at 150-161 MiB; a 16 MiB prefetch still
        # holds tens of thousands of ordinary events, more than a batch needs.
        16384,
        ge=1024,
        le=2_097_151,
        description="librdkafka's prefetch queue (queued.max.messages.kbytes): with the batch "
        "(CONSUME_BATCH_SIZE x message size) it bounds the processor's memory.",
    )
    cost_window_s: float = Field(60.0, gt=0, description="Trailing event-time window W.")
    cost_lateness_s: float = Field(
        300.0, ge=0, description="How far behind a GPU's newest event a late event still counts."
    )
    price_per_hour_usd: float = Field(
        0.85, ge=0, description="Price of a GPU with no price of its own and none in the map."
    )
    gpu_prices: Annotated[PriceMap, BeforeValidator(_json_object)] = Field(
        {},
        description="Price map by gpu_name as JSON, USD per hour >= 0, e.g. "
        '{"NVIDIA A100-SXM4-40GB": 3.2}.',
    )
    gpu_prices_file: Annotated[PriceFile | None, BeforeValidator(_price_file)] = Field(
        None,
        description="Path of a JSON file holding a price map like GPU_PRICES, read at start; "
        "GPU_PRICES wins for a gpu_name in both.",
    )
    output_token_weight: float = Field(
        4.0,
        gt=0,
        le=1000,
        description="k: one output token costs as much GPU time as k input tokens (at most 3 "
        "decimals). Prefill reads the prompt in parallel, decode makes one token per step; 4 "
        "is the ratio hosted price sheets use (docs/cost-model.md). 1 = every token alike.",
    )
    output_token_weight_by_model: Annotated[WeightMap, BeforeValidator(_json_object)] = Field(
        {},
        description='k per model as JSON, overriding OUTPUT_TOKEN_WEIGHT, e.g. {"llama-3.1-70b-'
        'instruct": 6}.',
    )
    energy_price_usd_per_kwh: float | None = Field(
        None,
        ge=0,
        description="Electricity price: with it, cost rows carry energy_cost_usd (kWh x PUE x "
        "price). Unset: no energy cost.",
    )
    pue: float = Field(
        1.0,
        ge=1.0,
        le=5.0,
        description="Power usage effectiveness of the data centre (facility / IT energy); "
        "multiplies GPU energy in energy_cost_usd and co2e_g.",
    )
    carbon_intensity_g_per_kwh: float | None = Field(
        None,
        ge=0,
        description="Grid carbon intensity, gCO2e per kWh: with it, cost rows carry co2e_g. "
        "Unset: no carbon figure.",
    )
    anomaly_window_readings: int = Field(
        30,
        ge=3,
        le=1000,
        description="N: a GPU reading is compared with its GPU's N previous readings (by ts, "
        "event_id) for anomaly flags (docs/anomalies.md). 30 = one minute at the producers' 2 s.",
    )
    anomaly_min_readings: int = Field(
        10,
        ge=3,
        description="A rule gives no verdict until the window holds this many non-null values "
        "of its field (at most ANOMALY_WINDOW_READINGS).",
    )
    anomaly_mad_threshold: float = Field(
        5.0,
        gt=0,
        le=100,
        description="T: flag a value more than T robust standard deviations (1.4826 x MAD) "
        "from the window's median.",
    )
    anomaly_floor_temperature_c: float = Field(
        5.0, gt=0, description="Smallest temperature departure from the median ever flagged, °C."
    )
    anomaly_floor_power_w: float = Field(
        50.0, gt=0, description="Smallest power departure from the median ever flagged, W."
    )
    anomaly_floor_utilization_pct: float = Field(
        30.0,
        gt=0,
        description="Smallest utilisation departure from the median ever flagged, points.",
    )
    anomaly_power_cap_ratio: float = Field(
        0.98,
        gt=0,
        le=1,
        description="power_throttle needs power_draw_w at or above this share of power_limit_w "
        "(and the SM clock drop of ANOMALY_CLOCK_DROP_RATIO).",
    )
    anomaly_clock_drop_ratio: float = Field(
        0.85,
        gt=0,
        le=1,
        description="Both throttle rules need the SM clock below this share of the GPU's "
        "median SM clock over the anomaly window.",
    )
    anomaly_thermal_c: float = Field(
        85.0,
        ge=-100,
        le=300,
        description="thermal_throttle needs temperature_gpu_c at or above this, °C (and the "
        "SM clock drop).",
    )
    store_retry_max_s: float = Field(
        30.0, gt=0, description="Longest wait between MongoDB retries while degraded."
    )
    lag_interval_s: float = Field(5.0, gt=0, description="How often lag gauges are refreshed.")
    api_read_tokens: SecretList | None = Field(
        None,
        description="Bearer tokens of the `read` scope, comma-separated, each at least "
        f"{MIN_TOKEN_CHARS} characters. Secret: or read from API_READ_TOKENS_FILE. With no "
        "token in this and API_ADMIN_TOKENS the API is open (a WARNING at start).",
    )
    api_admin_tokens: SecretList | None = Field(
        None,
        description="Bearer tokens of the `admin` scope (admin implies read), comma-separated. "
        "Secret: or read from API_ADMIN_TOKENS_FILE.",
    )
    api_health_open: bool = Field(
        True,
        description="GET /health answers without a token (load balancers' probes send none). "
        "false: it needs a `read` token like the API.",
    )
    api_metrics_open: bool = Field(
        True,
        description="GET /metrics answers without a token (Prometheus scrapes send none by "
        "default). false: it needs a `read` token.",
    )
    http_host: str = Field("127.0.0.1", description="Address the HTTP API binds to.")
    http_port: int = Field(8080, gt=0, lt=65536, description="Port of the HTTP API.")
    gpu_seed_file: FilePath | None = Field(
        None, description="Seed file for /gpu/info when NVML and nvidia-smi are absent."
    )
    processor_host: str = Field(
        default_factory=socket.gethostname, description="Host name reported by /gpu/info."
    )
    log_level: LogLevel = Field("INFO", description="Log level.")
    metrics_max_models: int = Field(
        50,
        ge=1,
        le=10_000,
        description="Distinct `model` label values on /metrics per replica; later models are "
        "counted as `(other)` (bounds Prometheus cardinality; docs/metrics.md).",
    )
    metrics_max_tenants: int = Field(
        100,
        ge=1,
        le=10_000,
        description="Distinct `tenant` label values on /metrics per replica, besides the "
        "tenants of TENANT_BUDGETS_USD_PER_DAY (always kept); later tenants are `(other)`.",
    )
    tenant_budgets_usd_per_day: Annotated[BudgetMap, BeforeValidator(_json_object)] = Field(
        {},
        description='Daily spend budget per tenant as JSON, e.g. {"team-a": 250}; exported as '
        "tokencost_tenant_budget_usd_per_day for the TenantOverBudget alert.",
    )
    log_format: LogFormat = Field(
        "text", description="`text` (default) or `json`: one JSON object per log line."
    )

    @field_validator("api_read_tokens", "api_admin_tokens")
    @classmethod
    def _long_enough(cls, tokens: list[SecretStr] | None) -> list[SecretStr] | None:
        # Named by position, never by content: the message may end up in a log.
        short = [i + 1 for i, t in enumerate(tokens or ()) if len(t) < MIN_TOKEN_CHARS]
        if short:
            which = ", ".join(str(i) for i in short)
            raise ValueError(f"token {which} has fewer than {MIN_TOKEN_CHARS} characters")
        return tokens or None

    @property
    def auth_enabled(self) -> bool:
        """Whether the API asks for a bearer token: at least one token is configured."""
        return bool(self.api_read_tokens or self.api_admin_tokens)

    @field_validator("output_token_weight")
    @classmethod
    def _three_decimals(cls, k: float) -> float:
        weight_milli(k)
        return k

    @field_validator("output_token_weight_by_model")
    @classmethod
    def _weights(cls, by_model: dict[str, float]) -> dict[str, float]:
        OutputWeights(1.0, by_model)
        return by_model

    @field_validator("anomaly_min_readings")
    @classmethod
    def _within_window(cls, n: int, info: ValidationInfo) -> int:
        window = info.data.get("anomaly_window_readings")
        if window is not None and n > window:
            raise ValueError(f"must be at most ANOMALY_WINDOW_READINGS ({window})")
        return n

    def anomaly_rules(self) -> AnomalyRules:
        return AnomalyRules(
            window=self.anomaly_window_readings,
            min_readings=self.anomaly_min_readings,
            threshold=self.anomaly_mad_threshold,
            floor_temperature_c=self.anomaly_floor_temperature_c,
            floor_power_w=self.anomaly_floor_power_w,
            floor_utilization_pct=self.anomaly_floor_utilization_pct,
            power_cap_ratio=self.anomaly_power_cap_ratio,
            thermal_c=self.anomaly_thermal_c,
            clock_drop_ratio=self.anomaly_clock_drop_ratio,
        )

    def output_weights(self) -> OutputWeights:
        return OutputWeights(self.output_token_weight, self.output_token_weight_by_model)

    def price_map(self) -> dict[str, float]:
        """GPU_PRICES_FILE overlaid by GPU_PRICES: gpu_name -> USD per hour."""
        from_file = {} if self.gpu_prices_file is None else self.gpu_prices_file.prices
        return {**from_file, **self.gpu_prices}

    def consumer_config(self) -> dict[str, Any]:
        """librdkafka configuration of the consumer."""
        static = {} if self.kafka_group_instance_id is None else {
            # KIP-345: a member that rejoins under the same id within the session timeout gets
            # its partitions back with no rebalance; after SIGKILL that is seconds, not 45 s.
            "group.instance.id": self.kafka_group_instance_id,
        }  # fmt: skip
        return {
            **static,
            "bootstrap.servers": self.kafka_bootstrap,
            "group.id": self.kafka_group_id,
            "client.id": self.kafka_client_id,
            "group.protocol": "classic",
            "partition.assignment.strategy": "cooperative-sticky",
            # At-least-once: we store offsets ourselves and commit only after the write.
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            # A batch must stay well under this even while MongoDB is slow; 5 min is the
            # librdkafka default, kept explicit because the degraded loop relies on it.
            "max.poll.interval.ms": 300_000,
            "session.timeout.ms": 45_000,
            # Fetch in big chunks: the processor is throughput-bound, not latency-bound.
            "fetch.min.bytes": 1,
            "queued.max.messages.kbytes": self.consume_queue_max_kb,
            **self.kafka_security_config(),
        }

    def dlq_producer_config(self) -> dict[str, Any]:
        """librdkafka configuration of the dead-letter producer."""
        return {
            "bootstrap.servers": self.kafka_bootstrap,
            "client.id": f"{self.kafka_client_id}-dlq",
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            **self.kafka_security_config(),
        }

    def admin_config(self) -> dict[str, Any]:
        """librdkafka configuration of the AdminClient (lag gauges, readiness)."""
        return {"bootstrap.servers": self.kafka_bootstrap, **self.kafka_security_config()}
