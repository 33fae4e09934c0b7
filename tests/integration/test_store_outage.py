"""MongoDB goes away mid-run: /health says so, nothing is lost, everything is stored once.

The test runs its own FerretDB (a private state dir and port) so stopping it cannot disturb
other tests; the processor is a real process.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from devtools.events import token_event
from tests.support.kafka_io import produce_events
from tests.support.processes import REPO, ProcessorProcess, free_port, wait_for

pytestmark = pytest.mark.integration

GPU = "GPU-eeeeeeee-0000-0000-0000-000000000005"


def lag_sum(url: str) -> float | None:
    """Sum of pipeline_consumer_lag on /metrics (None before the first lag sample)."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("pipeline_consumer_lag{")
    ]
    return sum(values) if values else None


def stack(state_dir: Path, listen: str, *args: str) -> None:
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "stack.py"), "--state-dir", str(state_dir),
         "--mongo-listen", listen, *args, "--only", "mongo"],
        check=True, cwd=REPO, timeout=180,
    )  # fmt: skip


@pytest.fixture
def private_mongo(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    state_dir, listen = tmp_path / "ferretdb", f"127.0.0.1:{free_port()}"
    stack(state_dir, listen, "up")
    yield state_dir, listen
    stack(state_dir, listen, "down")


def test_mongodb_outage_degrades_then_recovers_without_loss(
    kafka_bootstrap: str,
    topic: str,
    dlq_topic: str,
    group_id: str,
    private_mongo: tuple[Path, str],
    tmp_path: Path,
) -> None:
    state_dir, listen = private_mongo
    url = f"mongodb://{listen}/"
    env = {
        "KAFKA_BOOTSTRAP": kafka_bootstrap, "KAFKA_TOPIC": topic, "KAFKA_DLQ_TOPIC": dlq_topic,
        "KAFKA_GROUP_ID": group_id, "MONGO_URL": url, "MONGO_DB": "outage",
        "MONGO_TIMEOUT_MS": "1000", "STORE_RETRY_MAX_S": "1", "CONSUME_BATCH_SIZE": "50",
    }  # fmt: skip
    client: MongoClient[dict[str, Any]] = MongoClient(url, serverSelectionTimeoutMS=2000)
    stored = client["outage"]["token_usage"]

    def count() -> int:
        return stored.count_documents({})

    processor = ProcessorProcess(env, tmp_path / "processor.log").start()
    try:
        wait_for("health ok", lambda: processor.health()[0] == 200, 60)
        before = [token_event("h", GPU, i * 0.1, 10, 10) for i in range(200)]
        produce_events(kafka_bootstrap, topic, before)
        wait_for("the first 200 stored", lambda: count() == 200, 60)

        stack(state_dir, listen, "down")
        during = [token_event("h", GPU, 20 + i * 0.1, 10, 10) for i in range(300)]
        produce_events(kafka_bootstrap, topic, during)

        def mongodb_reported() -> tuple[int, dict[str, Any]] | None:
            # Wait for the loop itself to pause on a failed write, not only for /health's own
            # ping to fail: restarting MongoDB before that would let the write succeed late.
            status, body = processor.health()
            paused = "consumer" in body.get("failing", ()) and "mongodb" in body["failing"]
            return (status, body) if status == 503 and paused else None

        status, body = wait_for("the loop to pause on MongoDB", mongodb_reported, 60)
        assert status == 503
        assert body["status"] == "degraded"
        assert body["mongodb"]["ok"] is False
        assert "MongoDB" in body["consumer"]["detail"]
        assert body["kafka"]["ok"] is True  # only the failing parts are named

        # While paused, the lag gauges still follow the topic (fresh high marks): what the
        # NoConsumptionWhileTopicGrows alert reads. 100 more events must show up as lag.
        lag_paused = wait_for("lag gauges while paused", lambda: lag_sum(processor.url), 30)
        more = [token_event("h", GPU, 60 + i * 0.1, 10, 10) for i in range(100)]
        produce_events(kafka_bootstrap, topic, more)
        wait_for(
            "lag to grow by 100 while paused",
            lambda: (lag_sum(processor.url) or 0) >= lag_paused + 100,
            30,
        )
        during += more

        stack(state_dir, listen, "up")  # same state dir: the first 200 are still there
        wait_for("all 600 stored after recovery", lambda: count() == 600, 120)
        wait_for("health ok again", lambda: processor.health()[0] == 200, 60)
        ids = {d["_id"] for d in stored.find({}, {"_id": 1})}
        assert ids == {e["event_id"] for e in before + during}  # each exactly once
        processor.stop()
    finally:
        processor.kill()
        client.close()
    log = (tmp_path / "processor.log").read_text()
    assert "pipeline degraded part=mongodb" in log
    assert "resuming" in log
