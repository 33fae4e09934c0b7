"""Helpers shared by the OTLP receiver tests: a memory sink and spans from the real SDK."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

from producers.kafka_sink import DeliveryStats
from schemas.contracts import validate


class MemorySink:
    """An EventSink that keeps what it is sent (validated, like KafkaSink)."""

    def __init__(self) -> None:
        self.stats = DeliveryStats()
        self.fatal: str | None = None
        self.events: list[dict[str, Any]] = []
        self.sent = threading.Event()
        self.gate = threading.Event()  # cleared = the "broker" is stuck
        self.gate.set()
        self.entered = threading.Event()  # set once send() was called (and may be blocked)

    def send(self, event: dict[str, Any]) -> None:
        self.entered.set()
        self.gate.wait()
        validate(event)
        self.events.append(event)
        self.stats.sent += 1
        self.stats.delivered += 1
        self.sent.set()

    def poll(self, timeout_s: float) -> None:
        return None

    def flush(self, timeout_s: float, *, abort: Any = None) -> int:
        return 0

    def abandon(self) -> None:
        return None


def export_spans(
    endpoint: str,
    spans: Sequence[Mapping[str, Any]],
    resource: Mapping[str, Any],
    *,
    gzip: bool = True,
) -> None:
    """Send ``spans`` (name, attributes, optional error) with the SDK's OTLP/HTTP exporter."""
    exporter = OTLPSpanExporter(
        endpoint=f"{endpoint}/v1/traces",
        compression=Compression.Gzip if gzip else Compression.NoCompression,
        timeout=10,
    )
    provider = TracerProvider(resource=Resource.create(dict(resource)))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("otlp-receiver-test")
    for spec in spans:
        with tracer.start_as_current_span(str(spec["name"])) as span:
            for key, value in dict(spec.get("attributes", {})).items():
                span.set_attribute(key, value)
            if spec.get("error"):
                span.set_status(Status(StatusCode.ERROR, "upstream failed"))
    provider.shutdown()
