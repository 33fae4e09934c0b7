"""The OTLP receiver as a real process: SDK exporter -> receiver -> Kafka -> processor -> costs.

``python -m producers otlp`` runs against the real broker; spans are sent by the real
``opentelemetry-sdk`` with its OTLP/HTTP exporter (protobuf, gzip); the events are read back
from Kafka, then consumed by a real processor whose ``/api/v1/costs`` groups them by tenant.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient
from pymongo.database import Database

from devtools.ports import free_port
from devtools.waiting import wait_for
from gpu_readers import GpuReader
from processor.app import create_app
from processor.settings import ProcessorSettings
from tests.integration.api_support import KnownReader
from tests.support.kafka_io import produce_events, read_topic
from tests.unit.otlp_support import export_spans

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
HOST = "otlp-itest"


def _receiver_env(bootstrap: str, topic: str, port: int) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PRODUCER_", "KAFKA_", "GPU_SEED")) and k != "LOG_LEVEL"
    }
    env.update(
        {
            "KAFKA_BOOTSTRAP": bootstrap,
            "KAFKA_TOPIC": topic,
            "PRODUCER_HOST": HOST,
            "PRODUCER_OTLP_LISTEN": f"127.0.0.1:{port}",
            # The built-in seed file: GPU 0 and GPU 1 of this host.
            "PRODUCER_DEPLOYMENT": "qwen-7b=0;llama-70b=1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _usage(model: str, tenant: str, n_in: int, n_out: int, rid: str) -> dict[str, Any]:
    return {
        "name": f"chat {model}",
        "attributes": {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": model,
            "gen_ai.response.model": model,
            "gen_ai.response.id": rid,
            "gen_ai.usage.input_tokens": n_in,
            "gen_ai.usage.output_tokens": n_out,
            "tenant.id": tenant,
        },
    }


def test_sdk_spans_reach_kafka_and_the_costs_api(
    kafka_bootstrap: str,
    topic: str,
    dlq_topic: str,
    group_id: str,
    mongo_url: str,
    mongo_db: Database[dict[str, Any]],
    tmp_path: Path,
) -> None:
    port = free_port()
    log = tmp_path / "otlp.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "producers", "otlp"],
            cwd=REPO,
            env=_receiver_env(kafka_bootstrap, topic, port),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                return httpx.get(f"{url}/health", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_for("otlp receiver to serve", healthy, timeout_s=60)
        spans = [
            _usage("qwen-7b", "team-a", 1000, 200, "r1"),
            _usage("qwen-7b", "team-b", 3000, 600, "r2"),
            _usage("llama-70b", "team-a", 500, 100, "r3"),
            {"name": "db query", "attributes": {"db.system": "postgresql"}},
        ]
        export_spans(url, spans, {"host.name": HOST, "service.name": "chat-api"})
        messages = read_topic(kafka_bootstrap, topic, expected=3, timeout_s=60)
        events = [orjson.loads(m.value() or b"") for m in messages]
        assert sorted(e["request_id"] for e in events) == ["r1", "r2", "r3"]
        for msg, event in zip(messages, events, strict=True):
            assert msg.key() == f"{HOST}/{event['gpu_uuid']}".encode()
        by_id = {e["request_id"]: e for e in events}
        assert by_id["r1"]["gpu_index"] == 0
        assert by_id["r3"]["gpu_index"] == 1
        health = httpx.get(f"{url}/health", timeout=5).json()
        assert health["spans"] == {"usage": 3, "ignored": 1, "rejected": 0}
        wait_for(
            "3 deliveries",
            lambda: httpx.get(f"{url}/health", timeout=5).json()["kafka"]["delivered"] == 3,
            timeout_s=30,
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, log.read_text()
    assert "delivered=3" in log.read_text()

    # The GPUs report too (as `producers run` would on that host), so the minute has a price.
    readings = GpuReader(HOST).read()
    produce_events(kafka_bootstrap, topic, readings)
    settings = ProcessorSettings(
        kafka_bootstrap=kafka_bootstrap, kafka_topic=topic, kafka_dlq_topic=dlq_topic,
        kafka_group_id=group_id, mongo_url=mongo_url, mongo_db=mongo_db.name,
    )  # fmt: skip
    with TestClient(create_app(settings, gpu_reader=KnownReader([]))) as client:
        wait_for(
            "3 token documents",
            lambda: mongo_db["token_usage"].count_documents({}) == 3,
            timeout_s=60,
        )
        wait_for(
            "the GPU readings",
            lambda: mongo_db["gpu_metrics"].count_documents({}) == len(readings),
            timeout_s=60,
        )
        # The default range is the last 24 h up to now: the spans just sent.
        body = client.get("/api/v1/costs", params={"group_by": "tenant"})
    assert body.status_code == 200, body.text
    rows = {r["group"]: r for r in body.json()["rows"]}
    assert rows["team-a"]["tokens"] == 1000 + 200 + 500 + 100
    assert rows["team-b"]["tokens"] == 3000 + 600
    assert rows["team-a"]["cost_usd"] > 0
    assert rows["team-b"]["cost_usd"] > 0
