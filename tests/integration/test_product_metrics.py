"""/metrics product series against the real broker and FerretDB: equal to what was stored.

The registry is the process's default one (as /metrics serves it): every test uses its own host
name, so the label sets it reads are its own.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pymongo.database import Database

from devtools.events import gpu_event, token_event
from processor.consumer import PipelineLoop
from processor.settings import ProcessorSettings
from processor.store import MongoStore
from tests.support.kafka_io import produce_events
from tests.support.processes import wait_for

pytestmark = pytest.mark.integration

GPU = "GPU-dddddddd-0000-0000-0000-000000000004"
Doc = dict[str, Any]


@pytest.fixture
def loop(
    kafka_bootstrap: str, mongo_url: str, topic: str, dlq_topic: str, group_id: str,
    mongo_db: Database[Doc],
) -> Iterator[PipelineLoop]:  # fmt: skip
    settings = ProcessorSettings(
        kafka_bootstrap=kafka_bootstrap, kafka_topic=topic, kafka_dlq_topic=dlq_topic,
        kafka_group_id=group_id, mongo_url=mongo_url, mongo_db=mongo_db.name,
        tenant_budgets_usd_per_day=json.dumps({"team-budget": 12.5}),
    )  # fmt: skip
    store = MongoStore(mongo_url, mongo_db.name)
    pipeline = PipelineLoop(settings, store)
    pipeline.start()
    yield pipeline
    pipeline.stop()
    store.close()


def sample(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


def usage_total(name: str, host: str, tenant: str, **extra: str) -> float:
    labels = {"model": "llama-3.1-8b-instruct", "gpu": GPU, "host": host, "tenant": tenant}
    return sample(name, **labels, **extra)


def test_metrics_equal_stored_documents_and_redelivery_does_not_count(
    kafka_bootstrap: str, topic: str, mongo_db: Database[Doc], loop: PipelineLoop
) -> None:
    host = f"pm-{uuid.uuid4().hex[:8]}"
    events = [
        gpu_event(host, GPU, 0, price_per_hour_usd=3.6, energy_total_mj=1_000_000),
        *(token_event(host, GPU, 1 + i, 100 + i, 10 * i, tenant="team-a") for i in range(6)),
        *(token_event(host, GPU, 10 + i, 50, 5) for i in range(3)),  # no tenant
        gpu_event(host, GPU, 20, price_per_hour_usd=3.6, energy_total_mj=1_400_000),
    ]
    produce_events(kafka_bootstrap, topic, events)
    wait_for("9 token docs", lambda: mongo_db["token_usage"].count_documents({}) == 9, 60)
    wait_for("2 gpu docs", lambda: mongo_db["gpu_metrics"].count_documents({}) == 2, 30)
    wait_for(
        "metrics recorded",
        lambda: usage_total("tokencost_requests_total", host, "(unattributed)") == 3,
        30,
    )

    def check() -> None:
        for tenant, query in (("team-a", {"tenant": "team-a"}),
                              ("(unattributed)", {"tenant": {"$exists": False}})):  # fmt: skip
            docs = list(mongo_db["token_usage"].find({**query, "host": host}))
            assert usage_total("tokencost_requests_total", host, tenant) == len(docs)
            for direction in ("input", "output"):
                assert usage_total(
                    "tokencost_tokens_total", host, tenant, direction=direction
                ) == sum(d[f"{direction}_tokens"] for d in docs)
                stored = sum(d[f"{direction}_cost_usd"] for d in docs)
                assert usage_total(
                    "tokencost_throughput_cost_by_direction_usd_total", host, tenant,
                    direction=direction,
                ) == pytest.approx(stored, rel=1e-12)  # fmt: skip
            assert usage_total(
                "tokencost_throughput_cost_usd_total", host, tenant
            ) == pytest.approx(sum(d["cost_usd"] for d in docs), rel=1e-12)
            assert usage_total("tokencost_throughput_cost_usd_total", host, tenant) > 0
        gpus = list(mongo_db["gpu_metrics"].find({"host": host}))
        energy = sum(d["energy_delta_j"] or 0.0 for d in gpus)
        assert energy == pytest.approx(400.0)  # 400,000 mJ between the two readings
        assert sample("tokencost_gpu_energy_joules_total", gpu=GPU, host=host) == energy
        dcgm = {"gpu": "0", "UUID": GPU, "Hostname": host, "modelName": "NVIDIA A100-SXM4-40GB"}
        assert sample("DCGM_FI_DEV_GPU_UTIL", **dcgm) == 80.0
        assert sample("DCGM_FI_DEV_POWER_USAGE", **dcgm) == 300.0
        assert sample("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", **dcgm) == 1_400_000
        # Unsupported on the device (null in the event): no sample, not a false 0.
        assert REGISTRY.get_sample_value("DCGM_FI_DEV_GPU_TEMP", dcgm) is None
        assert sample("tokencost_gpu_price_per_hour_usd", gpu=GPU, host=host) == 3.6

    check()
    assert sample("tokencost_tenant_budget_usd_per_day", tenant="team-budget") == 12.5
    assert sample("pipeline_consume_last_poll_timestamp_seconds") > 1.7e9

    # Redelivery: the same events again (same event_ids). The store answers duplicate-key;
    # the counters must not move.
    def duplicates() -> float:
        return sum(
            sample("pipeline_events_duplicate_total", collection=c)
            for c in ("token_usage", "gpu_metrics")
        )

    before = duplicates()
    produce_events(kafka_bootstrap, topic, events)
    wait_for("every redelivered event seen as duplicate", lambda: duplicates() >= before + 11, 60)
    assert mongo_db["token_usage"].count_documents({}) == 9
    check()
