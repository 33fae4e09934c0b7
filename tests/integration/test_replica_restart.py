"""A killed replica restarted under its static group membership resumes within seconds.

Without `group.instance.id` the restarted process is a new member: the dead one keeps its
partitions until its session times out (45 s), and nothing is consumed meanwhile.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database

from devtools.events import token_event
from tests.support.kafka_io import produce_events
from tests.support.processes import ProcessorProcess, wait_for

pytestmark = pytest.mark.integration

GPUS = [f"GPU-77777777-0000-0000-0000-{i:012d}" for i in range(12)]
# The dead member's session is 45 s; a resume must not wait for it.
RESUME_LIMIT_S = 15.0


def test_sigkill_then_restart_with_the_same_instance_id_resumes_without_waiting(
    kafka_bootstrap: str,
    mongo_url: str,
    topic: str,
    dlq_topic: str,
    group_id: str,
    mongo_db: Database[dict[str, Any]],
    tmp_path: Path,
) -> None:
    env = {
        "KAFKA_BOOTSTRAP": kafka_bootstrap, "KAFKA_TOPIC": topic, "KAFKA_DLQ_TOPIC": dlq_topic,
        "KAFKA_GROUP_ID": group_id, "KAFKA_GROUP_INSTANCE_ID": "replica-a",
        "MONGO_URL": mongo_url, "MONGO_DB": mongo_db.name, "LAG_INTERVAL_S": "1",
    }  # fmt: skip
    stored = mongo_db["token_usage"]
    # One GPU per key spread over the partitions, so every partition has to be resumed.
    before = [token_event("h", GPUS[i % 12], i, 10, 10) for i in range(60)]
    after = [token_event("h", GPUS[i % 12], 100 + i, 10, 10) for i in range(60)]

    first = ProcessorProcess(env, tmp_path / "first.log").start()
    try:
        wait_for("12 partitions", lambda: first.health()[1].get("consumer", {}).get(
            "assigned_partitions") == list(range(12)), 60)  # fmt: skip
        produce_events(kafka_bootstrap, topic, before)
        wait_for("the first 60 stored", lambda: stored.count_documents({}) == 60, 60)
    finally:
        first.kill()

    restarted_at = time.monotonic()
    second = ProcessorProcess(env, tmp_path / "second.log").start()
    try:
        produce_events(kafka_bootstrap, topic, after)
        wait_for("all 120 stored", lambda: stored.count_documents({}) == 120, 40)
        resumed_s = time.monotonic() - restarted_at
        print(f"restarted replica stored the new events {resumed_s:.1f} s after its start")
        assert resumed_s < RESUME_LIMIT_S, second.logs()
        ids = {d["_id"] for d in stored.find({}, {"_id": 1})}
        assert ids == {e["event_id"] for e in before + after}
        second.stop()  # SIGTERM: a graceful stop exits 0
    finally:
        second.kill()
