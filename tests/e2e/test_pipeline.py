"""The whole pipeline as processes: `python -m producers run` -> Kafka -> `python -m processor`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database

from tests.support.processes import REPO, ProcessorProcess, wait_for

pytestmark = pytest.mark.e2e


def test_producer_to_processor_to_api(
    kafka_bootstrap: str,
    mongo_url: str,
    topic: str,
    dlq_topic: str,
    group_id: str,
    mongo_db: Database[dict[str, Any]],
    tmp_path: Path,
) -> None:
    env = {"KAFKA_BOOTSTRAP": kafka_bootstrap, "KAFKA_TOPIC": topic}
    produced = subprocess.run(
        [sys.executable, "-m", "producers", "run", "--count", "1000", "--rate", "0",
         "--host", "e2e-host", "--seed", "3"],
        cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert produced.returncode == 0, produced.stderr[-2000:]
    summary = dict(re.findall(r"(\w+)=(\S+)", produced.stdout.splitlines()[-1]))
    assert int(summary["delivered"]) >= 1000
    assert int(summary["failed"]) == 0

    processor = ProcessorProcess(
        {**env, "KAFKA_DLQ_TOPIC": dlq_topic, "KAFKA_GROUP_ID": group_id, "MONGO_URL": mongo_url,
         "MONGO_DB": mongo_db.name},
        tmp_path / "processor.log",
    ).start()  # fmt: skip
    try:
        wait_for("1000 token events stored",
                 lambda: mongo_db["token_usage"].count_documents({}) == 1000, 120)  # fmt: skip
        health = processor.get("/health")
        assert health.status_code == 200, health.text
        assert processor.get("/api/v1/stats").json()["token_usage"] == 1000

        info = processor.get("/gpu/info").json()
        assert info["local"]["source"] == "seed"
        assert {r["host"] for r in info["stream"]} == {"e2e-host"}
        assert all(r["source"] == "seed" for r in info["stream"])

        report = processor.get(
            "/api/v1/costs", group_by="model", granularity="day",
            start="2026-01-01T00:00:00Z", end="2027-06-01T00:00:00Z",
        ).json()  # fmt: skip
        stored_tokens = sum(d["tokens"] for d in mongo_db["token_usage"].find({}, {"tokens": 1}))
        assert report["totals"]["tokens"] == stored_tokens
        assert report["totals"]["requests"] == 1000
        models = [r for r in report["rows"] if r["group"] != "(idle)"]
        assert len(models) >= 2
        assert all(r["cost_usd"] > 0 and r["cost_per_1m_tokens"] > 0 for r in models)
        # Seeded GPUs carry their price: every stored cost used the event's price.
        assert mongo_db["token_usage"].count_documents({"price_source": "event"}) == 1000
        processor.stop()
    finally:
        processor.kill()
