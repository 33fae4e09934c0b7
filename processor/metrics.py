"""The pipeline's own Prometheus metrics, on the default registry that starlette-exporter serves.

Defined once at import time: prometheus_client refuses to register a name twice.
"""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge, Histogram

from processor.anomalies import RULES
from schemas.contracts import KNOWN_SCHEMAS

__all__ = [
    "BATCH_SIZE",
    "CONSUMER_LAG",
    "DEAD_LETTERED",
    "END_TO_END_LATENCY",
    "EVENTS_CONSUMED",
    "EVENTS_DUPLICATE",
    "EVENTS_INVALID",
    "EVENTS_UNPROCESSABLE",
    "EVENTS_WRITTEN",
    "GPU_ANOMALIES",
    "LAST_POLL",
    "PARTITION_REBUILDS",
    "STORE_UP",
    "WRITE_LATENCY",
    "forget_partition",
]

EVENTS_CONSUMED = Counter(
    "pipeline_events_consumed", "Kafka messages taken from the topic.", ["schema"]
)
EVENTS_WRITTEN = Counter(
    "pipeline_events_written", "Documents newly stored in MongoDB.", ["collection"]
)
EVENTS_DUPLICATE = Counter(
    "pipeline_events_duplicate",
    "Events already stored (same event_id): redeliveries and producer duplicates.",
    ["collection"],
)
EVENTS_INVALID = Counter(
    "pipeline_events_invalid",
    "Messages that failed decoding or validation, or whose key is not host/gpu_uuid.",
    ["schema"],
)
EVENTS_UNPROCESSABLE = Counter(
    "pipeline_events_unprocessable",
    "Valid messages the cost model or document builder failed on (dead-lettered; a bug).",
    ["schema"],
)
DEAD_LETTERED = Counter(
    "pipeline_events_dead_lettered", "Messages written to the dead-letter topic.", ["schema"]
)
PARTITION_REBUILDS = Counter(
    "pipeline_partition_rebuilds", "Cost windows rebuilt from MongoDB after an assignment."
)
BATCH_SIZE = Histogram(
    "pipeline_batch_size",
    "Messages per consumed batch.",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
)
WRITE_LATENCY = Histogram(
    "pipeline_write_latency_seconds",
    "Time of one bulk write of a batch to MongoDB.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
END_TO_END_LATENCY = Histogram(
    "pipeline_end_to_end_latency_seconds",
    "Store time minus the event's ts.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
CONSUMER_LAG = Gauge(
    "pipeline_consumer_lag", "High watermark minus committed offset.", ["partition"]
)
STORE_UP = Gauge("pipeline_store_up", "1 when the last MongoDB call succeeded, else 0.")
GPU_ANOMALIES = Counter(
    "pipeline_gpu_anomalies",
    "Anomaly flags on newly stored GPU readings, by rule (docs/anomalies.md).",
    ["rule"],
)
LAST_POLL = Gauge(
    "pipeline_consume_last_poll_timestamp_seconds",
    "Unix time the consume loop last came back from Kafka (liveness: a stuck or dead loop "
    "stops advancing it; the ConsumeLoopStuck alert compares it with time()).",
)

# Every label value is known up front: create the series at 0 so that increase() sees the
# first event after a restart (a series born at 1 has no earlier sample to increase from).
for _label in (*KNOWN_SCHEMAS, "unknown"):
    for _counter in (EVENTS_CONSUMED, EVENTS_INVALID, EVENTS_UNPROCESSABLE, DEAD_LETTERED):
        _counter.labels(_label)
for _rule in RULES:
    GPU_ANOMALIES.labels(_rule)
for _collection in ("gpu_metrics", "token_usage"):
    EVENTS_WRITTEN.labels(_collection)
    EVENTS_DUPLICATE.labels(_collection)


def forget_partition(partition: int) -> None:
    """Drop a revoked partition's lag series: its new owner reports it."""
    with contextlib.suppress(KeyError):  # no gauge yet for a just-assigned partition
        CONSUMER_LAG.remove(str(partition))
