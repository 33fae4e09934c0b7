"""The FastAPI application: HTTP routes plus the consume loop, started by the lifespan.

>>> app = create_app(ProcessorSettings())
>>> uvicorn.run(app, host="127.0.0.1", port=8080)

Every error the API answers is an RFC 9457 problem (processor/api/problems.py, docs/api.md).
With API_READ_TOKENS / API_ADMIN_TOKENS set, every route but the open ones needs a bearer token
(processor/api/auth.py, docs/security.md).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from confluent_kafka.admin import AdminClient
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette_exporter import PrometheusMiddleware, handle_metrics

from gpu_readers import GpuReader
from processor.api import anomalies, auth, costs, gpus, health, lookups, page, problems, stats
from processor.api.deps import LocalGpuReader
from processor.api.problems import problem_responses
from processor.consumer import PipelineLoop
from processor.settings import ProcessorSettings
from processor.store import MongoStore
from service_settings.logs import KAFKA_LOGGER

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def _operation_id(route: APIRoute) -> str:
    # The route function's name (get_costs, list_gpu_readings), not FastAPI's default
    # name + path + method (costs_api_v1_costs_get): what a generated client calls.
    return route.name


def create_app(
    settings: ProcessorSettings | None = None,
    *,
    consume: bool = True,
    gpu_reader: LocalGpuReader | None = None,
) -> FastAPI:
    """Build the app; ``consume=False`` serves the API without joining the consumer group.

    ``gpu_reader`` answers ``/gpu/info``'s local part; by default a ``GpuReader`` of this host
    (NVML -> nvidia-smi -> seed file), which the app also closes on shutdown.
    """
    settings = settings or ProcessorSettings()
    tokens = auth.Tokens.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = MongoStore(
            settings.mongo_url.get_secret_value(), settings.mongo_db, settings.mongo_timeout_ms
        )
        app.state.settings = settings
        app.state.store = store
        admin_config: dict[str, Any] = {**settings.admin_config(), "logger": KAFKA_LOGGER}
        app.state.kafka_admin = AdminClient(admin_config)
        own_reader = (
            GpuReader(settings.processor_host, seed_file=settings.gpu_seed_file)
            if gpu_reader is None
            else None
        )
        app.state.gpu_reader = gpu_reader if own_reader is None else own_reader
        app.state.loop = PipelineLoop(settings, store) if consume else None
        if app.state.loop is not None:
            app.state.loop.start()
        if tokens is None:
            log.warning(
                "API authentication is off: no API_READ_TOKENS or API_ADMIN_TOKENS, so every "
                "route answers without a token (see docs/security.md)"
            )
        else:
            log.info(
                "API authentication on read_tokens=%d admin_tokens=%d health_open=%s "
                "metrics_open=%s",
                len(settings.api_read_tokens or ()), len(settings.api_admin_tokens or ()),
                settings.api_health_open, settings.api_metrics_open,
            )  # fmt: skip
        log.info(
            "processor started topic=%s group=%s mongo_db=%s consume=%s",
            settings.kafka_topic, settings.kafka_group_id, settings.mongo_db, consume,
        )  # fmt: skip
        try:
            yield
        finally:
            if app.state.loop is not None:
                app.state.loop.stop()
            store.close()
            if own_reader is not None:
                own_reader.close()

    app = FastAPI(
        title="GPU token-cost processor",
        description="What each LLM token costs on your own GPUs.",
        version="0.1.0",
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
        # page.install serves /docs and /redoc from vendored assets instead of a CDN.
        docs_url=None,
        redoc_url=None,
    )
    problems.install(app)
    auth.install(app, tokens)
    app.add_middleware(
        PrometheusMiddleware,
        app_name="processor",
        group_paths=True,
        skip_paths=["/metrics", "/health"],
    )
    app.add_route(
        "/metrics",
        handle_metrics if settings.api_metrics_open else auth.protected(handle_metrics, "read"),
    )
    # Every route today only reads: the read scope. No route needs admin yet; the first that
    # changes state (a replay, a price reload) declares `dependencies=[auth.AdminScope]`.
    # /docs, /redoc and /openapi.json stay open: the document is public in the repository, and
    # a client needs it to learn that it must send a token.
    denied = problem_responses(401, 403) if tokens is not None else {}
    read = [auth.ReadScope]
    app.include_router(
        health.router, dependencies=[] if settings.api_health_open else read,
        responses={} if settings.api_health_open else denied,
    )  # fmt: skip
    for module in (gpus, costs, lookups, anomalies, stats):
        app.include_router(module.router, dependencies=read, responses=denied)
    page.install(app)
    return app
