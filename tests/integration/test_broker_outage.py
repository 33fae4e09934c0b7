"""Kafka goes away under a running processor: /health says so, and says ok again by itself.

The broker is a private one (its own state dir and port) so stopping it cannot disturb other
tests. After the restart no new message is produced at first: an idle topic must not keep
/health at 503 (the transport error is cleared by the next successful broker round trip).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pymongo.database import Database

from devtools.events import token_event
from tests.support.kafka_io import produce_events
from tests.support.processes import ProcessorProcess, wait_for

if TYPE_CHECKING:
    from tests.conftest import PrivateStack

pytestmark = pytest.mark.integration

GPU = "GPU-eeeeeeee-0000-0000-0000-000000000006"


def test_kafka_outage_degrades_then_recovers_without_new_traffic(
    private_stack: PrivateStack,
    mongo_url: str,
    mongo_db: Database[dict[str, Any]],
    group_id: str,
    tmp_path: Path,
) -> None:
    private_stack.up(only="kafka")  # creates `tokens` (12 partitions) and `tokens.dlq`
    bootstrap = private_stack.kafka_bootstrap
    env = {
        "KAFKA_BOOTSTRAP": bootstrap, "KAFKA_GROUP_ID": group_id, "MONGO_URL": mongo_url,
        "MONGO_DB": mongo_db.name, "LAG_INTERVAL_S": "1",
    }  # fmt: skip
    stored = mongo_db["token_usage"]
    before = [token_event("h", GPU, i * 0.1, 10, 10) for i in range(100)]
    after = [token_event("h", GPU, 20 + i * 0.1, 10, 10) for i in range(100)]

    processor = ProcessorProcess(env, tmp_path / "processor.log").start()
    try:
        wait_for("health ok", lambda: processor.health()[0] == 200, 60)
        produce_events(bootstrap, "tokens", before)
        wait_for("the first 100 stored", lambda: stored.count_documents({}) == 100, 60)

        private_stack.down(only="kafka")

        def kafka_reported() -> dict[str, Any] | None:
            status, body = processor.health()
            return body if status == 503 and "kafka" in body["failing"] else None

        body = wait_for("/health to report Kafka", kafka_reported, 60)
        assert body["status"] == "degraded"
        assert body["kafka"]["ok"] is False
        assert body["mongodb"]["ok"] is True  # only the failing part is named

        private_stack.up(only="kafka")  # same state dir: topic, offsets and data are kept
        wait_for("health ok again, with no new message", lambda: processor.health()[0] == 200, 90)

        produce_events(bootstrap, "tokens", after)
        wait_for("all 200 stored", lambda: stored.count_documents({}) == 200, 90)
        ids = {d["_id"] for d in stored.find({}, {"_id": 1})}
        assert ids == {e["event_id"] for e in before + after}  # each exactly once
        processor.stop()
    finally:
        processor.kill()
