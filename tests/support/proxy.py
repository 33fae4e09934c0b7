"""The proxy in front of the fake upstream, served in-process, with a recording publisher."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from devtools.aioserve import serving
from devtools.fake_openai import FakeState, build_fake_app
from producers.proxy.app import Attribution, ProxyConfig, ProxyMetrics, PublisherLike, build_app
from producers.proxy.tenants import TenantResolver
from producers.traffic import GpuTarget

GPUS = (GpuTarget("GPU-aaaa", 0), GpuTarget("GPU-bbbb", 1), GpuTarget("GPU-cccc", 2))
HOST = "proxy-test-host"
KEYS = ("team-a=sk-team-a-secret", "team-b=sk-team-b-secret")


class RecordingPublisher:
    """Keeps what the proxy offers (the Kafka path has its own integration test)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.arrived = threading.Condition()

    def offer(self, event: dict[str, Any]) -> bool:
        with self.arrived:
            self.events.append(event)
            self.arrived.notify_all()
        return True

    def status(self) -> dict[str, Any]:
        return {"degraded": False, "queued": 0, "dropped_total": 0}

    def wait_for(self, n: int, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.events) >= n, timeout_s)
            return list(self.events)


def proxy_config(upstream: str, *, timeout_s: float = 5.0) -> ProxyConfig:
    # llama-70b is tensor parallel on GPUs 1 and 2; "fake-model" on GPU 0.
    attribution = Attribution({"fake-model": [GPUS[:1]], "llama-70b": [GPUS[1:]]}, None)
    return ProxyConfig(
        upstream=upstream,
        host=HOST,
        attribution=attribution,
        tenants=TenantResolver.from_entries(KEYS, "X-Tenant"),
        upstream_timeout_s=timeout_s,
        connect_timeout_s=2.0,
    )


@dataclass
class Running:
    fake_url: str
    proxy_url: str
    fake: FakeState
    metrics: ProxyMetrics


@contextmanager
def proxied(publisher: PublisherLike, *, timeout_s: float = 5.0) -> Iterator[Running]:
    """The fake upstream and the proxy in front of it, on free loopback ports."""
    fake = FakeState()
    with serving(build_fake_app(fake)) as (fake_url,):
        metrics = ProxyMetrics()
        app = build_app(proxy_config(fake_url, timeout_s=timeout_s), publisher, metrics)
        with serving(app) as (proxy_url,):
            yield Running(fake_url, proxy_url, fake, metrics)
