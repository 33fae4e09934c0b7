"""GET /health: is the loop alive and do its dependencies answer."""

from __future__ import annotations

from typing import Literal

from confluent_kafka import KafkaException
from fastapi import APIRouter, Response
from pydantic import BaseModel

from processor.api.deps import KafkaAdmin, KafkaAdminDep, LoopDep, SettingsDep, StoreDep
from processor.api.problems import problem_responses
from processor.exceptions import StoreUnavailable

router = APIRouter(tags=["health"])

# /health must answer well inside a load balancer's probe timeout (typically 5 s).
_KAFKA_PROBE_S = 2.0


class Check(BaseModel):
    ok: bool
    detail: str


class ConsumerCheck(Check):
    assigned_partitions: list[int]
    lag: dict[int, int]
    total_lag: int
    seconds_since_poll: float | None
    batches: int


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    failing: list[str]
    kafka: Check
    mongodb: Check
    consumer: ConsumerCheck


def _kafka_check(admin: KafkaAdmin, topic: str, loop_error: str | None) -> Check:
    try:
        meta = admin.list_topics(topic, timeout=_KAFKA_PROBE_S)
    except KafkaException as exc:
        return Check(ok=False, detail=f"cannot reach Kafka: {exc}")
    found = meta.topics.get(topic)
    if found is None or found.error is not None:
        return Check(ok=False, detail=f"topic {topic} missing: {getattr(found, 'error', None)}")
    if loop_error:
        return Check(ok=False, detail=f"consumer reports: {loop_error}")
    return Check(ok=True, detail=f"topic {topic} has {len(found.partitions)} partitions")


@router.get(
    "/health",
    response_model=Health,
    # Degraded is not an error of the request: the 503 carries the same report as the 200, so
    # a load balancer sees the status and a person sees why.
    responses={
        503: {"model": Health, "description": "Degraded: `failing` names the checks that fail."},
        **problem_responses(),
    },
)
def get_health(
    response: Response,
    settings: SettingsDep,
    store: StoreDep,
    loop: LoopDep,
    admin: KafkaAdminDep,
) -> Health:
    """200 when Kafka, MongoDB and the consume loop are all fine; 503 naming what is not."""
    status = loop.status() if loop is not None else None
    try:
        store.ping()
        mongodb = Check(ok=True, detail=f"ping ok, database {settings.mongo_db}")
    except StoreUnavailable as exc:
        mongodb = Check(ok=False, detail=str(exc))
    if mongodb.ok and status is not None and status.degraded == "mongodb":
        mongodb = Check(ok=False, detail=f"consumer paused: {status.degraded_reason}")
    kafka_error = None
    if status is not None:
        kafka_error = status.kafka_error or (
            status.degraded_reason if status.degraded == "kafka" else None
        )
    kafka = _kafka_check(admin, settings.kafka_topic, kafka_error)
    if status is None:
        consumer = ConsumerCheck(
            ok=False, detail="consume loop not started", assigned_partitions=[], lag={},
            total_lag=0, seconds_since_poll=None, batches=0,
        )  # fmt: skip
    else:
        consumer = ConsumerCheck(
            ok=status.running and status.degraded is None,
            detail=(
                "consuming"
                if status.running and status.degraded is None
                else (status.degraded_reason or "consume loop is not polling")
            ),
            assigned_partitions=status.assigned_partitions,
            lag=status.lag,
            total_lag=sum(status.lag.values()),
            seconds_since_poll=status.seconds_since_poll,
            batches=status.batches,
        )
    failing = [n for n, c in (("kafka", kafka), ("mongodb", mongodb), ("consumer", consumer))
               if not c.ok]  # fmt: skip
    if failing:
        response.status_code = 503
    return Health(
        status="degraded" if failing else "ok",
        failing=failing,
        kafka=kafka,
        mongodb=mongodb,
        consumer=consumer,
    )
