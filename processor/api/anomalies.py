"""GET /api/v1/anomalies: GPU readings the anomaly rules flagged (docs/anomalies.md)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from processor.api.deps import StoreDep
from processor.api.problems import problem_responses
from processor.api.readings import AnomalyFlag, EventId, Timestamp
from processor.api.times import EndQuery, HostFilter, Start24hQuery, WindowQuery, resolve_range
from schemas.contracts import epoch_us

router = APIRouter(prefix="/api/v1", tags=["anomalies"])


class FlaggedReading(BaseModel):
    """A reading with at least one flag."""

    event_id: EventId
    host: str
    gpu_uuid: str
    gpu_index: int
    gpu_key: str = Field(description="`host/gpu_uuid`.")
    gpu_name: str
    ts: Timestamp = Field(description="When the reading was taken, RFC 3339 UTC.")
    flags: list[AnomalyFlag]


class AnomalyReport(BaseModel):
    start: datetime
    end: datetime
    anomalies: list[FlaggedReading] = Field(description="Oldest first (ts, then event_id).")
    count: int = Field(description="Number of flagged readings listed.")
    truncated: bool = Field(description="True when `limit` cut the list short.")


def _flagged(doc: dict[str, Any]) -> FlaggedReading:
    ts = doc["ts"]
    return FlaggedReading(
        event_id=str(doc["_id"]),
        host=doc["host"],
        gpu_uuid=doc["gpu_uuid"],
        gpu_index=doc["gpu_index"],
        gpu_key=doc["gpu_key"],
        gpu_name=doc["gpu_name"],
        ts=ts.isoformat() if isinstance(ts, datetime) else str(ts),
        flags=[AnomalyFlag.model_validate(f) for f in doc["anomalies"]],
    )


@router.get("/anomalies", response_model=AnomalyReport, responses=problem_responses(422, 503))
def list_anomalies(
    store: StoreDep,
    start: Start24hQuery = None,
    end: EndQuery = None,
    window: WindowQuery = None,
    host: HostFilter = None,
    gpu_uuid: Annotated[
        str | None, Query(min_length=1, max_length=128, description="Only this GPU.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=10_000, description="Most readings returned.")] = 1000,
) -> AnomalyReport:
    """Flagged GPU readings in a time range: outliers against the GPU's own recent window,
    signs of power or thermal throttling."""
    start_utc, end_utc = resolve_range(start, end, timedelta(hours=24), window=window)
    match: dict[str, Any] = {}
    if host is not None:
        match["host"] = host
    if gpu_uuid is not None:
        match["gpu_uuid"] = gpu_uuid
    docs = store.anomalous_readings(match, epoch_us(start_utc), epoch_us(end_utc), limit + 1)
    listed = [_flagged(d) for d in docs[:limit]]
    return AnomalyReport(
        start=start_utc, end=end_utc, anomalies=listed, count=len(listed),
        truncated=len(docs) > limit,
    )  # fmt: skip
