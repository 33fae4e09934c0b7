"""The proxy as a process: its events reach real Kafka, a real processor and /api/v1/costs;
with Kafka down, requests are still served and the events dropped and counted."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam
from pymongo.database import Database

from devtools.aioserve import serving
from devtools.fake_openai import FakeState, build_fake_app
from devtools.ports import free_port
from tests.support.processes import ProcessorProcess, wait_for
from tests.support.proxy_process import ProxyProcess

pytestmark = pytest.mark.integration

KEYS = "team-a=sk-a-0001,team-b=sk-b-0002"
MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "price of a token please"}
]  # 5 words


@pytest.fixture
def fake_url() -> Iterator[str]:
    with serving(build_fake_app(FakeState())) as (url,):
        yield url


def ask(proxy: ProxyProcess, key: str, *, stream: bool, max_tokens: int) -> None:
    client = OpenAI(base_url=f"{proxy.url}/v1", api_key=key, max_retries=0, timeout=10)
    if stream:
        list(client.chat.completions.create(
            model="fake-model", messages=MESSAGES, max_tokens=max_tokens, stream=True
        ))  # fmt: skip
    else:
        client.chat.completions.create(
            model="fake-model",
            messages=MESSAGES,
            max_tokens=max_tokens,
        )


def test_proxied_usage_reaches_the_costs_by_tenant(
    fake_url: str,
    kafka_bootstrap: str,
    topic: str,
    group_id: str,
    mongo_url: str,
    mongo_db: Database[dict[str, Any]],
    tmp_path: Path,
) -> None:
    processor = ProcessorProcess(
        {
            "KAFKA_BOOTSTRAP": kafka_bootstrap,
            "KAFKA_TOPIC": topic,
            "KAFKA_GROUP_ID": group_id,
            "MONGO_URL": mongo_url,
            "MONGO_DB": mongo_db.name,
        },
        tmp_path / "processor.log",
    ).start()
    proxy = ProxyProcess(
        fake_url,
        {
            "KAFKA_BOOTSTRAP": kafka_bootstrap,
            "KAFKA_TOPIC": topic,
            "PROXY_API_KEYS": KEYS,
            "PRODUCER_HOST": "proxy-it",
            "PRODUCER_DEPLOYMENT": "fake-model=0",
            "PRODUCER_GPU_INTERVAL_S": "1",
        },
        tmp_path / "proxy.log",
    ).start()
    try:
        for _ in range(3):
            ask(proxy, "sk-a-0001", stream=False, max_tokens=10)  # 5 in + 10 out each
        for _ in range(2):
            ask(proxy, "sk-b-0002", stream=True, max_tokens=20)  # 5 in + 20 out each
        tokens = mongo_db["token_usage"]
        wait_for("5 usage events stored", lambda: tokens.count_documents({}) == 5, 60)
        wait_for("GPU readings stored", lambda: mongo_db["gpu_metrics"].count_documents({}) > 0, 30)
        stored = list(tokens.find({}))
        assert {d["host"] for d in stored} == {"proxy-it"}
        assert {d["gpu_index"] for d in stored} == {0}
        start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
        report = processor.get("/api/v1/costs", group_by="tenant", start=start).json()
        rows = {r["group"]: r for r in report["rows"]}
        assert rows["team-a"]["requests"] == 3
        assert rows["team-a"]["tokens"] == 45
        assert rows["team-b"]["requests"] == 2
        assert rows["team-b"]["tokens"] == 50
        assert rows["team-a"]["cost_usd"] > 0
        assert rows["team-b"]["cost_usd"] > 0
        # Allocation splits a GPU's cost by token share (output tokens weigh k inputs).
        assert rows["team-b"]["cost_usd"] > rows["team-a"]["cost_usd"]
        health = proxy.health()
        assert health["status"] == "ok"
        assert health["publishing"]["delivered"] >= 5
        assert health["publishing"]["dropped_total"] == 0
    finally:
        proxy.stop()
        processor.stop()


def test_kafka_down_requests_served_events_dropped_and_counted(
    fake_url: str, tmp_path: Path
) -> None:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    proxy = ProxyProcess(
        fake_url,
        {
            "KAFKA_BOOTSTRAP": dead,
            "PRODUCER_DEPLOYMENT": "fake-model=0",
            "PROXY_GPU_READINGS": "false",
            "PROXY_QUEUE_SIZE": "4",
            "PRODUCER_DELIVERY_TIMEOUT_MS": "1500",
            "PRODUCER_LINGER_MS": "5",
        },
        tmp_path / "proxy.log",
    ).start()
    try:
        started = time.perf_counter()
        for i in range(20):
            ask(proxy, "any", stream=i % 2 == 0, max_tokens=4)
        elapsed = time.perf_counter() - started
        # Served at the upstream's pace: nothing waited for the broker.
        assert elapsed < 10, elapsed

        def all_dropped() -> dict[str, Any] | None:
            publishing = proxy.health()["publishing"]
            return publishing if publishing["dropped_total"] == 20 else None

        publishing = wait_for("all 20 events dropped and counted", all_dropped, 30)
        assert publishing["delivered"] == 0
        assert publishing["dropped"]["kafka_queue_full"] + publishing["dropped"]["queue_full"] > 0
        assert publishing["dropped"]["delivery_failed"] > 0
        health = proxy.health()
        assert health["status"] == "degraded"
        metrics = proxy.metrics()
        dropped = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("proxy_usage_events_dropped_total{")
        )
        assert dropped == 20
        assert "usage events dropped reason=" in proxy.logs()
    finally:
        proxy.stop()
