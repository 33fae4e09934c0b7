"""``python -m producers proxy``: wire settings, GPUs, publisher and app; serve until a signal.

Exit codes as the CLI's: 2 for a bad setting (no upstream, a deployment map that does not fit
the GPUs, a malformed key map), 1 if the GPUs cannot be read or the address cannot be bound.
Kafka being down is *not* a reason to refuse to start: requests are served, events dropped
and counted (see ``/_proxy/health``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Final

from aiohttp import web

from gpu_readers import GpuReader, GpuReaderError
from producers.exceptions import NoGpus, SettingsError
from producers.fleet import resolve
from producers.proxy.app import Attribution, ProxyConfig, ProxyMetrics, build_app
from producers.proxy.publisher import Publisher
from producers.proxy.tenants import TenantResolver
from producers.service import gpu_targets
from producers.settings import ProducerSettings
from producers.traffic import GpuTarget
from service_settings import report

__all__ = ["attribution_for", "config_from", "run_proxy", "serve"]

log = logging.getLogger("producers.proxy")

# After SIGTERM: in-flight requests get this long to finish before the server closes them.
SHUTDOWN_GRACE_S: Final = 10.0


def attribution_for(settings: ProducerSettings, gpus: list[GpuTarget]) -> Attribution:
    """The deployment map bound to ``gpus``; without one, every model on all of them."""
    if settings.deployment is None:
        ordered = tuple(sorted(gpus, key=lambda g: (g.gpu_index, g.gpu_uuid)))
        return Attribution({}, ordered)
    groups: dict[str, list[tuple[GpuTarget, ...]]] = {}
    for replica in resolve(settings.deployment, gpus):
        groups.setdefault(replica.model, []).append(replica.gpus)
    return Attribution(groups, None)


def config_from(settings: ProducerSettings, gpus: list[GpuTarget]) -> ProxyConfig:
    """SettingsError when the upstream is missing or the key map / deployment is bad."""
    if not settings.proxy_upstream:
        raise SettingsError("PROXY_UPSTREAM: required by the proxy (--upstream URL)")
    entries = [s.get_secret_value() for s in settings.proxy_api_keys or []]
    try:
        tenants = TenantResolver.from_entries(entries, settings.proxy_tenant_header)
    except ValueError as exc:
        raise SettingsError(f"PROXY_API_KEYS: {exc}") from None
    return ProxyConfig(
        upstream=settings.proxy_upstream,
        host=settings.host,
        attribution=attribution_for(settings, gpus),
        tenants=tenants,
        upstream_timeout_s=settings.proxy_upstream_timeout_s,
        connect_timeout_s=settings.proxy_connect_timeout_s,
    )


async def _sample_gpus(reader: GpuReader, publisher: Publisher, interval_s: float) -> None:
    """A gpu.metrics.v1 reading per GPU every ``interval_s``, through the same queue."""
    while True:
        try:
            readings = await asyncio.to_thread(reader.read)
        except GpuReaderError as exc:  # one unreadable interval must not stop the proxy
            log.error("gpu read failed error=%s", exc)
            readings = []
        for event in readings:
            publisher.offer(event)
        await asyncio.sleep(interval_s)


async def serve(
    settings: ProducerSettings, config: ProxyConfig, reader: GpuReader | None = None
) -> None:
    """Serve until SIGINT/SIGTERM, then drain requests and flush what Kafka will take.

    With ``reader``, GPU readings are published every PRODUCER_GPU_INTERVAL_S as well.
    """
    metrics = ProxyMetrics()
    publisher = Publisher(
        settings.kafka_config(),
        settings.topic,
        capacity=settings.proxy_queue_size,
        on_drop=metrics.on_drop,
        on_delivered=metrics.on_delivered,
    )
    publisher.start()
    app = build_app(config, publisher, metrics)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE_S)
    await runner.setup()
    host, _, port = settings.proxy_listen.rpartition(":")
    site = web.TCPSite(runner, host or None, int(port))
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        publisher.close(0.1)
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "proxy listening=%s upstream=%s kafka=%s topic=%s host=%s",
        settings.proxy_listen,
        config.upstream,
        settings.bootstrap,
        settings.topic,
        settings.host,
    )
    sampler = (
        asyncio.create_task(_sample_gpus(reader, publisher, settings.gpu_interval_s))
        if reader is not None
        else None
    )
    try:
        await stop.wait()
    finally:
        log.info("proxy stopping")
        if sampler is not None:
            sampler.cancel()
        await runner.cleanup()
        await asyncio.to_thread(publisher.close, settings.flush_timeout_s)
        status = publisher.status()
        log.info("proxy stopped delivered=%d dropped=%s", status["delivered"], status["dropped"])


def run_proxy(settings: ProducerSettings) -> int:
    """The proxy command; returns the exit code."""
    try:
        reader = GpuReader(settings.host, seed_file=settings.gpu_seed_file)
        readings = reader.read()
        if not readings:
            raise NoGpus(f"the GPU reader found no GPU on host {settings.host}")
        config = config_from(settings, gpu_targets(readings))
    except SettingsError as exc:
        sys.stderr.write(report("producers", str(exc).splitlines()))
        return 2
    except (NoGpus, GpuReaderError) as exc:
        log.error("proxy cannot start: %s", exc)
        return 1
    try:
        asyncio.run(serve(settings, config, reader if settings.proxy_gpu_readings else None))
    except OSError as exc:
        log.error("proxy cannot listen on %s: %s", settings.proxy_listen, exc)
        return 1
    return 0
