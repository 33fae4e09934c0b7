"""The OTLP/HTTP trace receiver: ``POST /v1/traces`` -> token.usage.v1 on Kafka.

    >>> publisher = QueuedPublisher(sink, max_queue=10_000); publisher.start()
    >>> app = build_app(mapping, publisher)          # aiohttp application
    >>> web.run_app(app, host="0.0.0.0", port=4318)

The HTTP response never waits for Kafka: events go into a bounded queue that one thread drains
into the producers' KafkaSink; a full queue drops the event and counts it
(``otlp_events_dropped_total``), so a slow or absent broker costs events, never the traced
application's latency. ``GET /health`` and ``GET /metrics`` expose the counters.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, Final

import orjson
from aiohttp import web
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from producers.kafka_sink import EventSink
from producers.otlp_map import (
    CONTENT_JSON,
    CONTENT_PROTOBUF,
    BadRequest,
    SpanMapping,
    decode_request,
    map_request,
)

__all__ = ["QueuedPublisher", "ReceiverMetrics", "ServerThread", "build_app"]

log = logging.getLogger(__name__)

# The publisher thread wakes this often to serve delivery reports even with nothing to send.
_IDLE_POLL_S: Final = 0.2
# Drop lines are logged at most once per this many drops (the counter has every one).
_DROP_LOG_EVERY: Final = 1000


class ReceiverMetrics:
    """The receiver's counters, on their own registry (several receivers can share a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "otlp_requests", "OTLP export requests by outcome", ["outcome"], registry=self.registry
        )
        self.spans = Counter(
            "otlp_spans", "Spans received by outcome (usage, ignored, rejected)", ["outcome"],
            registry=self.registry,
        )  # fmt: skip
        self.events_queued = Counter(
            "otlp_events_queued", "token.usage.v1 events queued for Kafka", registry=self.registry
        )
        self.events_dropped = Counter(
            "otlp_events_dropped", "Events dropped because the Kafka queue was full",
            registry=self.registry,
        )  # fmt: skip

    def value(self, counter: Counter, **labels: str) -> float:
        """A counter's current value (for /health and tests)."""
        sample = counter.labels(**labels) if labels else counter
        return float(sample._value.get())


class QueuedPublisher:
    """A bounded queue in front of a sink, drained by one thread (the sink is not thread-safe)."""

    def __init__(self, sink: EventSink, max_queue: int, metrics: ReceiverMetrics | None = None):
        self.sink = sink
        self.metrics = metrics or ReceiverMetrics()
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=max_queue)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="otlp-publisher", daemon=True)
        self.send_errors = 0

    def start(self) -> None:
        self._thread.start()

    def offer(self, event: dict[str, Any]) -> bool:
        """Queue ``event`` without waiting; False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.metrics.events_dropped.inc()
            dropped = int(self.metrics.value(self.metrics.events_dropped))
            if dropped % _DROP_LOG_EVERY == 1:
                log.warning("otlp queue full, event dropped dropped_total=%d", dropped)
            return False
        self.metrics.events_queued.inc()
        return True

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def _run(self) -> None:
        while not (self._stop.is_set() and self._queue.empty()):
            try:
                event = self._queue.get(timeout=_IDLE_POLL_S)
            except queue.Empty:
                self.sink.poll(0)
                continue
            try:
                self.sink.send(event)
            except Exception as exc:  # a contract bug must not kill the thread: log, count
                self.send_errors += 1
                log.error("otlp event not sent event_id=%s error=%s", event.get("event_id"), exc)

    def stop(self, flush_timeout_s: float) -> int:
        """Send what is queued, wait for deliveries; return how many stayed unconfirmed."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        left = self.sink.flush(flush_timeout_s)
        if left:
            self.sink.abandon()
        return left


def _respond(content_type: str, rejected: int, message: str) -> web.Response:
    response = ExportTraceServiceResponse()
    if rejected:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = message
    if content_type == CONTENT_PROTOBUF:
        return web.Response(body=response.SerializeToString(), content_type=CONTENT_PROTOBUF)
    body = json_format.MessageToJson(response, indent=None)
    return web.Response(text=body, content_type=CONTENT_JSON)


def _bad(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)


def build_app(
    mapping: SpanMapping,
    publisher: QueuedPublisher,
    *,
    max_body_bytes: int = 4 * 1024 * 1024,
    kafka_fatal: Callable[[], str | None] | None = None,
) -> web.Application:
    """The receiver's aiohttp application (POST /v1/traces, GET /health, GET /metrics)."""
    metrics = publisher.metrics
    app = web.Application(client_max_size=max_body_bytes)

    async def traces(request: web.Request) -> web.Response:
        """Export spans: usage spans become token.usage.v1 events."""
        content_type = request.content_type
        if content_type not in (CONTENT_PROTOBUF, CONTENT_JSON):
            metrics.requests.labels(outcome="bad_request").inc()
            return _bad(
                415, f"content type {content_type!r}: use {CONTENT_PROTOBUF} or {CONTENT_JSON}"
            )
        try:
            # aiohttp inflates Content-Encoding gzip/deflate itself; client_max_size bounds
            # the inflated body, so a small compressed bomb still gets a 413.
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            metrics.requests.labels(outcome="too_large").inc()
            return _bad(413, f"body larger than {max_body_bytes} bytes")
        except Exception as exc:  # e.g. a corrupt gzip stream
            metrics.requests.labels(outcome="bad_request").inc()
            encoding = request.headers.get("Content-Encoding", "identity")
            return _bad(400, f"cannot read body (Content-Encoding {encoding}): {exc}")
        try:
            decoded = decode_request(body, content_type)
        except BadRequest as exc:
            metrics.requests.labels(outcome="bad_request").inc()
            return _bad(400, str(exc))
        result = map_request(decoded, mapping)
        for event in result.events:
            publisher.offer(event)
        metrics.spans.labels(outcome="usage").inc(result.usage_spans - result.rejected)
        metrics.spans.labels(outcome="ignored").inc(result.ignored)
        metrics.spans.labels(outcome="rejected").inc(result.rejected)
        metrics.requests.labels(outcome="ok").inc()
        if result.rejected:
            log.warning(
                "otlp spans rejected count=%d first=%s",
                result.rejected,
                orjson.dumps(result.reasons[0]).decode(),
            )
        return _respond(content_type, result.rejected, "; ".join(result.reasons))

    async def health(_: web.Request) -> web.Response:
        """Counters and the Kafka sink's state; 503 once the sink hit a fatal error."""
        stats = publisher.sink.stats
        fatal = kafka_fatal() if kafka_fatal is not None else publisher.sink.fatal
        body = {
            "status": "ok" if fatal is None else "failed",
            "kafka": {
                "sent": stats.sent,
                "delivered": stats.delivered,
                "failed": stats.failed,
                "fatal": fatal,
            },
            "queue": publisher.queued,
            "events_queued": int(metrics.value(metrics.events_queued)),
            "events_dropped": int(metrics.value(metrics.events_dropped)),
            "spans": {
                o: int(metrics.value(metrics.spans, outcome=o))
                for o in ("usage", "ignored", "rejected")
            },
        }
        return web.json_response(body, status=200 if fatal is None else 503)

    async def prometheus(_: web.Request) -> web.Response:
        """Prometheus text exposition of the receiver's counters."""
        return web.Response(
            body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app.router.add_post("/v1/traces", traces)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", prometheus)
    return app


class ServerThread:
    """The app served on a real socket from a background thread (tests, embedding).

    >>> with ServerThread(app, "127.0.0.1", 0) as server:
    ...     post(f"{server.url}/v1/traces", ...)
    """

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self._app, self._host, self._port = app, host, port
        self._loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(app, access_log=None)
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def start(self) -> None:
        self._thread.start()

        async def up() -> int:
            await self._runner.setup()
            site = web.TCPSite(self._runner, self._host, self._port)
            await site.start()
            # Port 0 asks the OS for a free port: read back which one it gave.
            server: Any = site._server
            return int(server.sockets[0].getsockname()[1])

        self.port = asyncio.run_coroutine_threadsafe(up(), self._loop).result(30)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()

    def __enter__(self) -> ServerThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
