"""The processor's configuration: one typed object read from the environment.

    >>> settings = ProcessorSettings()            # reads KAFKA_BOOTSTRAP, MONGO_URL, ...
    >>> Consumer(settings.consumer_config())

Every field is documented in docs/configuration.md; a test keeps that table and this class equal.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ProcessorSettings"]


class ProcessorSettings(BaseSettings):
    """Environment variables of the processor (no prefix: the names are shared with compose)."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers.")
    kafka_topic: str = Field("tokens", description="Topic carrying both event types.")
    kafka_dlq_topic: str = Field("tokens.dlq", description="Dead-letter topic.")
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
    mongo_url: SecretStr = Field(
        SecretStr("mongodb://127.0.0.1:27017/"),
        description="MongoDB connection string (may hold credentials).",
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
    cost_window_s: float = Field(60.0, gt=0, description="Trailing event-time window W.")
    cost_lateness_s: float = Field(
        300.0, ge=0, description="How far behind a GPU's newest event a late event still counts."
    )
    price_per_hour_usd: float = Field(
        0.85, ge=0, description="Price of a GPU with no price of its own and none in the map."
    )
    gpu_prices: str = Field(
        "", description='Price map by gpu_name as JSON, e.g. {"NVIDIA A100-SXM4-40GB": 3.2}.'
    )
    gpu_prices_file: Path | None = Field(
        None, description="Price map by gpu_name as a JSON file (merged under GPU_PRICES)."
    )
    store_retry_max_s: float = Field(
        30.0, gt=0, description="Longest wait between MongoDB retries while degraded."
    )
    lag_interval_s: float = Field(5.0, gt=0, description="How often lag gauges are refreshed.")
    http_host: str = Field("127.0.0.1", description="Address the HTTP API binds to.")
    http_port: int = Field(8080, gt=0, lt=65536, description="Port of the HTTP API.")
    gpu_seed_file: Path | None = Field(
        None, description="Seed file for /gpu/info when NVML and nvidia-smi are absent."
    )
    processor_host: str = Field(
        default_factory=socket.gethostname, description="Host name reported by /gpu/info."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level."
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_prices(self) -> ProcessorSettings:
        self.price_map()  # raises ValueError naming the setting
        return self

    def price_map(self) -> dict[str, float]:
        """GPU_PRICES_FILE overlaid by GPU_PRICES: gpu_name -> USD per hour."""
        merged: dict[str, float] = {}
        sources: list[tuple[str, str]] = []
        if self.gpu_prices_file is not None:
            try:
                sources.append(("GPU_PRICES_FILE", self.gpu_prices_file.read_text("utf-8")))
            except OSError as exc:
                raise ValueError(
                    f"GPU_PRICES_FILE: cannot read {self.gpu_prices_file}: {exc}"
                ) from None
        if self.gpu_prices.strip():
            sources.append(("GPU_PRICES", self.gpu_prices))
        for name, text in sources:
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{name}: not valid JSON: {exc}") from None
            if not isinstance(data, dict):
                raise ValueError(f"{name}: must be a JSON object of gpu_name -> price")
            for gpu_name, price in data.items():
                if isinstance(price, bool) or not isinstance(price, int | float) or price < 0:
                    raise ValueError(f"{name}: price of {gpu_name!r} must be a number >= 0")
                merged[gpu_name] = float(price)
        return merged

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
            "queued.max.messages.kbytes": 65536,
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
        }
