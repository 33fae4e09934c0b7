"""The proxy's aiohttp application: forward everything, meter three paths, never wait on Kafka.

    >>> app = build_app(ProxyConfig(upstream="http://127.0.0.1:8000", ...), publisher)
    >>> web.run_app(app)          # or serve() for the CLI (signals, clean shutdown)

Every path and method goes to the upstream as is (hop-by-hop headers removed, bodies streamed,
status and headers returned; bodies are never decompressed). ``POST /v1/chat/completions``,
``/v1/completions`` and ``/v1/embeddings`` are metered: one token.usage.v1 per request and GPU
(see docs/proxy.md). The proxy's own endpoints live under ``/_proxy/`` (``health``, ``metrics``),
a prefix no OpenAI-compatible server uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from yarl import URL

from producers.fleet import split_request
from producers.proxy.tenants import TenantResolver, valid_user
from producers.proxy.wire import (
    METERED_PATHS,
    SseSplitter,
    StreamTally,
    is_usage_only,
    parse_sse_data,
    plan_request,
    usage_of,
)
from producers.traffic import GpuTarget

__all__ = [
    "HEALTH_PATH",
    "METRICS_PATH",
    "Attribution",
    "ProxyConfig",
    "ProxyMetrics",
    "PublisherLike",
    "build_app",
]

log = logging.getLogger("producers.proxy")

HEALTH_PATH: Final = "/_proxy/health"
METRICS_PATH: Final = "/_proxy/metrics"
# RFC 9110 7.6.1 hop-by-hop headers, plus those the HTTP client/server recompute.
_HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
    }
)
_APP_KEY: Final = web.AppKey("proxy", object)


class PublisherLike(Protocol):
    def offer(self, event: dict[str, Any]) -> bool: ...
    def status(self) -> dict[str, Any]: ...


class Attribution:
    """Model -> the GPU groups serving it (replicas alternate); unknown models -> ``fallback``.

    ``fallback`` is every GPU of the host when no deployment map is set (one server on the
    whole host), else None: a model the map does not list is not attributed (counted).
    """

    def __init__(
        self,
        replicas: Mapping[str, Sequence[tuple[GpuTarget, ...]]],
        fallback: tuple[GpuTarget, ...] | None,
    ) -> None:
        self._cycles = {
            model: itertools.cycle(groups) for model, groups in replicas.items() if groups
        }
        self.fallback = fallback

    def gpus(self, model: str) -> tuple[GpuTarget, ...] | None:
        cycle = self._cycles.get(model)
        if cycle is not None:
            return next(cycle)
        return self.fallback


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    upstream: str
    host: str
    attribution: Attribution
    tenants: TenantResolver
    upstream_timeout_s: float
    connect_timeout_s: float


class ProxyMetrics:
    """The proxy's Prometheus series, on their own registry (served at METRICS_PATH)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "proxy_requests",
            "Requests proxied, by metered path (or other) and outcome.",
            ["path", "status"],
            registry=registry,
        )
        self.events = Counter(
            "proxy_usage_events", "token.usage.v1 events queued for Kafka.", registry=registry
        )
        self.delivered = Counter(
            "proxy_usage_events_delivered", "Usage events Kafka confirmed.", registry=registry
        )
        self.dropped = Counter(
            "proxy_usage_events_dropped",
            "Usage events that could not be sent, by reason.",
            ["reason"],
            registry=registry,
        )
        self.unmetered = Counter(
            "proxy_unmetered_requests",
            "Metered-path requests that produced no event, by reason.",
            ["reason"],
            registry=registry,
        )
        self.overhead = Histogram(
            "proxy_upstream_latency_seconds",
            "Time from a request's arrival to the upstream's response headers.",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30),
            registry=registry,
        )

    def on_drop(self, reason: str, n: int) -> None:
        """The publisher's drop hook."""
        self.dropped.labels(reason).inc(n)

    def on_delivered(self) -> None:
        self.delivered.inc()


class _Outcome:
    """What one metered request did, gathered while it runs."""

    __slots__ = ("cached", "input", "model", "output", "request_id", "status", "ttft_ms")

    def __init__(self, model: str | None) -> None:
        self.model = model
        self.request_id: str | None = None
        self.input = 0
        self.output = 0
        self.cached: int | None = None
        self.ttft_ms: float | None = None
        self.status = "ok"

    def take(self, doc: Any) -> None:
        if isinstance(doc, dict):
            if isinstance(doc.get("model"), str) and doc["model"]:
                self.model = doc["model"]
            if isinstance(doc.get("id"), str) and doc["id"]:
                self.request_id = doc["id"]
        usage = usage_of(doc)
        if usage is not None:
            self.input, self.output, self.cached = usage


def _forward_headers(headers: Mapping[str, str]) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if name.lower() not in _HOP_BY_HOP:
            out.add(name, value)
    return out


class _Proxy:
    def __init__(
        self, config: ProxyConfig, publisher: PublisherLike, metrics: ProxyMetrics
    ) -> None:
        self.config = config
        self.publisher = publisher
        self.metrics = metrics
        self.base = config.upstream.rstrip("/")
        self.session: aiohttp.ClientSession | None = None

    async def start(self, _app: web.Application) -> None:
        # limit=0: every concurrent client stream gets its own upstream connection (a pool
        # limit would queue requests behind long generations, i.e. delay them).
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
        timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=self.config.connect_timeout_s,
            sock_read=self.config.upstream_timeout_s,
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            auto_decompress=False,  # bytes pass through exactly as the upstream sent them
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
        )

    async def stop(self, _app: web.Application) -> None:
        if self.session is not None:
            await self.session.close()

    async def health(self, _request: web.Request) -> web.Response:
        """The proxy serves; whether usage reaches Kafka is reported, not a failure."""
        publishing = self.publisher.status()
        body = {
            "status": "degraded" if publishing["degraded"] else "ok",
            "upstream": self.config.upstream,
            "publishing": publishing,
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        path = request.path
        metered = request.method == "POST" and path in METERED_PATHS
        headers = _forward_headers(request.headers)
        url = URL(self.base + request.raw_path, encoded=True)
        assert self.session is not None
        if not metered:
            data: Any = request.content if request.body_exists else None
            return await self._passthrough(request, url, headers, data)
        body = await request.read()
        plan = plan_request(path, body)
        if plan.body is not body:
            headers.popall("Content-Length", None)
        # The usage must be readable: ask for an uncompressed answer on metered paths.
        headers["Accept-Encoding"] = "identity"
        outcome = _Outcome(plan.model)
        try:
            return await self._metered(request, url, headers, plan.body, plan, outcome, started)
        finally:
            self._record(request, path, plan.user, outcome, started)

    async def _passthrough(
        self, request: web.Request, url: URL, headers: CIMultiDict[str], data: Any
    ) -> web.StreamResponse:
        assert self.session is not None
        try:
            upstream = await self.session.request(
                request.method, url, headers=headers, data=data, allow_redirects=False
            )
        except TimeoutError:
            self.metrics.requests.labels("other", "timeout").inc()
            return _error(504, "upstream timed out")
        except aiohttp.ClientError as exc:
            self.metrics.requests.labels("other", "error").inc()
            return _error(502, f"upstream unreachable: {exc.__class__.__name__}")
        async with upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            response.headers.extend(_forward_headers(upstream.headers))
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            except (ConnectionResetError, TimeoutError, aiohttp.ClientError):
                _abort(request)
                return response
            await response.write_eof()
        self.metrics.requests.labels("other", "ok" if upstream.status < 400 else "error").inc()
        return response

    async def _metered(
        self,
        request: web.Request,
        url: URL,
        headers: CIMultiDict[str],
        body: bytes,
        plan: Any,
        outcome: _Outcome,
        started: float,
    ) -> web.StreamResponse:
        assert self.session is not None
        try:
            upstream = await self.session.request(
                "POST", url, headers=headers, data=body, allow_redirects=False
            )
        except TimeoutError:
            outcome.status = "timeout"
            return _error(504, "upstream timed out")
        except aiohttp.ClientError as exc:
            outcome.status = "error"
            return _error(502, f"upstream unreachable: {exc.__class__.__name__}")
        except asyncio.CancelledError:
            outcome.status = "cancelled"
            raise
        self.metrics.overhead.observe(time.perf_counter() - started)
        async with upstream:
            if upstream.status >= 400:
                outcome.status = "error"
            content_type = upstream.headers.get("Content-Type", "")
            encoded = upstream.headers.get("Content-Encoding", "identity").lower() != "identity"
            if plan.stream and content_type.startswith("text/event-stream") and not encoded:
                return await self._stream(request, upstream, plan, outcome, started)
            try:
                payload = await upstream.read()
            except TimeoutError:
                outcome.status = "timeout"
                return _error(504, "upstream timed out")
            except aiohttp.ClientError as exc:
                outcome.status = "error"
                return _error(502, f"upstream failed: {exc.__class__.__name__}")
            if not encoded:
                with contextlib.suppress(orjson.JSONDecodeError):
                    outcome.take(orjson.loads(payload))
            response = web.Response(body=payload, status=upstream.status, reason=upstream.reason)
            response.headers.extend(_forward_headers(upstream.headers))
            response.headers.popall("Content-Length", None)
        # Sent here, not by aiohttp after the handler returns: the event is built after the
        # client has its answer, so metering adds nothing to the request's latency.
        try:
            await response.prepare(request)
            await _to_client(response, None)
        except (_ClientGone, ConnectionResetError):
            outcome.status = "cancelled"
        return response

    async def _stream(
        self,
        request: web.Request,
        upstream: aiohttp.ClientResponse,
        plan: Any,
        outcome: _Outcome,
        started: float,
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        response.headers.extend(_forward_headers(upstream.headers))
        response.headers.popall("Content-Length", None)
        try:
            await response.prepare(request)
        except (ConnectionResetError, asyncio.CancelledError):
            outcome.status = "cancelled"
            raise
        splitter = SseSplitter()
        tally = StreamTally()
        try:
            async for chunk in upstream.content.iter_any():
                out: list[bytes] = []
                for event in splitter.feed(chunk):
                    doc = parse_sse_data(event)
                    if tally.add(doc):
                        outcome.ttft_ms = (time.perf_counter() - started) * 1000.0
                    if plan.injected_usage and is_usage_only(doc):
                        continue  # the chunk we asked for: the client did not
                    out.append(event)
                if out:
                    await _to_client(response, b"".join(out) if len(out) > 1 else out[0])
            rest = splitter.rest()
            if rest:
                await _to_client(response, rest)
            await _to_client(response, None)
        except _ClientGone:
            outcome.status = "cancelled"  # the client went away: stop the upstream too
            upstream.close()
        except asyncio.CancelledError:
            outcome.status = "cancelled"
            upstream.close()
            raise
        except TimeoutError:
            outcome.status = "timeout"
            _abort(request)
        except aiohttp.ClientError:
            outcome.status = "error"
            _abort(request)
        finally:
            outcome.model = tally.model or outcome.model
            outcome.request_id = tally.request_id
            if tally.usage is not None:
                outcome.input, outcome.output, outcome.cached = tally.usage
            elif outcome.status != "ok":
                # No usage chunk (the stream was cut): count what was seen, a lower bound on
                # the output; the prompt's size is unknown and counted as 0.
                outcome.output = tally.content_chunks
        return response

    def _record(
        self, request: web.Request, path: str, user: str | None, outcome: _Outcome, started: float
    ) -> None:
        self.metrics.requests.labels(path, outcome.status).inc()
        if outcome.model is None:
            self.metrics.unmetered.labels("no_model").inc()
            return
        gpus = self.config.attribution.gpus(outcome.model)
        if gpus is None:
            self.metrics.unmetered.labels("model_not_deployed").inc()
            log.warning(
                "usage not attributed: model %r is not in the deployment map", outcome.model
            )
            return
        event: dict[str, Any] = {
            "schema": "token.usage.v1",
            "event_id": str(uuid.uuid4()),
            "ts": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "host": self.config.host,
            "gpu_uuid": gpus[0].gpu_uuid,
            "gpu_index": gpus[0].gpu_index,
            "model": outcome.model[:256],
            "input_tokens": outcome.input,
            "output_tokens": outcome.output,
            "latency_ms": round((time.perf_counter() - started) * 1000.0, 3),
            "status": outcome.status,
        }
        if outcome.request_id:
            event["request_id"] = outcome.request_id[:256]
        if outcome.ttft_ms is not None:
            event["ttft_ms"] = round(outcome.ttft_ms, 3)
        if outcome.cached is not None:
            event["cache_read_input_tokens"] = outcome.cached
        tenant = self.config.tenants.resolve(request.headers)
        if tenant is not None:
            event["tenant"] = tenant
        valid = valid_user(user)
        if valid is not None:
            event["user"] = valid
        for part in split_request(event, gpus):
            if self.publisher.offer(part):
                self.metrics.events.inc()


class _ClientGone(Exception):
    """Writing to the client failed: it disconnected."""


async def _to_client(response: web.StreamResponse, data: bytes | None) -> None:
    """Write ``data`` (None = end of body); _ClientGone if the client is gone.

    Kept apart from the upstream's reads: aiohttp's ClientConnectionResetError is both a
    ClientError and a ConnectionResetError, so the exception type alone cannot say which
    side failed.
    """
    try:
        if data is None:
            await response.write_eof()
        else:
            await response.write(data)
    except ConnectionResetError:
        raise _ClientGone from None


def _abort(request: web.Request) -> None:
    """Cut the client's connection: a response the upstream did not finish must not look
    finished (a clean end of stream would hide the failure)."""
    if request.transport is not None:
        request.transport.abort()


def _error(status: int, message: str) -> web.Response:
    body = {"error": {"message": f"proxy: {message}", "type": "proxy_error", "code": status}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def build_app(
    config: ProxyConfig, publisher: PublisherLike, metrics: ProxyMetrics | None = None
) -> web.Application:
    """The proxy application; give the ``metrics`` whose hooks the publisher calls."""
    metrics = metrics or ProxyMetrics()
    registry = metrics.registry
    proxy = _Proxy(config, publisher, metrics)
    queue_gauge = Gauge(
        "proxy_usage_queue_depth", "Usage events waiting for Kafka.", registry=registry
    )
    queue_gauge.set_function(lambda: float(publisher.status()["queued"]))

    async def metrics_page(_request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application(client_max_size=64 * 1024**2)
    app[_APP_KEY] = proxy
    app.on_startup.append(proxy.start)
    app.on_cleanup.append(proxy.stop)
    app.router.add_get(HEALTH_PATH, proxy.health)
    app.router.add_get(METRICS_PATH, metrics_page)
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    return app
