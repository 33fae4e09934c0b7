"""GPU routes: this host's GPUs, the fleet seen on the stream, one GPU's readings over time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel

from gpu_readers import GpuReaderError
from processor.api.costs import resolve_range
from processor.api.deps import GpuReaderDep, SettingsDep, StoreDep
from schemas.contracts import epoch_us

router = APIRouter(tags=["gpus"])

# Storage-only fields a client has no use for.
_INTERNAL: Final = frozenset({"_id", "ts_us", "minute", "hour", "day", "kafka_partition",
                              "kafka_offset", "schema"})  # fmt: skip


def reading_out(doc: dict[str, Any]) -> dict[str, Any]:
    """A stored gpu_metrics document as the API shows it."""
    out = {k: v for k, v in doc.items() if k not in _INTERNAL}
    out["event_id"] = str(doc["_id"])
    ts = doc.get("ts")
    if isinstance(ts, datetime):
        out["ts"] = ts.astimezone(UTC).isoformat()
    return out


class LocalGpus(BaseModel):
    source: str | None
    skipped: dict[str, str]
    gpus: list[dict[str, Any]]
    error: str | None


class GpuInfo(BaseModel):
    host: str
    local: LocalGpus
    stream: list[dict[str, Any]]


class Readings(BaseModel):
    gpu_key: str
    start: datetime
    end: datetime
    readings: list[dict[str, Any]]


@router.get("/gpu/info", response_model=GpuInfo)
def gpu_info(settings: SettingsDep, store: StoreDep, reader: GpuReaderDep) -> GpuInfo:
    """This host's GPUs (NVML -> nvidia-smi -> seed) and the latest reading of every GPU seen."""
    try:
        gpus, error = reader.read(), None
    except GpuReaderError as exc:
        gpus, error = [], str(exc)
    local = LocalGpus(
        source=reader.active_source if gpus else None,
        skipped=dict(reader.skipped_sources),
        gpus=gpus,
        error=error,
    )
    return GpuInfo(
        host=settings.processor_host,
        local=local,
        stream=[reading_out(d) for d in store.latest_readings()],
    )


@router.get("/api/v1/gpus", response_model=list[dict[str, Any]])
def list_gpus(store: StoreDep) -> list[dict[str, Any]]:
    """Every GPU seen on the stream, with its latest reading."""
    return [reading_out(d) for d in store.latest_readings()]


@router.get("/api/v1/gpus/{host}/{gpu_uuid}/metrics", response_model=Readings)
def gpu_metrics(
    store: StoreDep,
    host: str,
    gpu_uuid: str,
    start: Annotated[datetime | None, Query(description="Inclusive; default end - 1h.")] = None,
    end: Annotated[datetime | None, Query(description="Exclusive; default now.")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000, description="Most readings returned.")] = 1000,
) -> Readings:
    """One GPU's readings in a time range, oldest first."""
    start_utc, end_utc = resolve_range(start, end, timedelta(hours=1))
    key = f"{host}/{gpu_uuid}"
    docs = store.gpu_readings(key, epoch_us(start_utc), epoch_us(end_utc), limit)
    if not docs and not store.latest_readings_of(key):
        raise HTTPException(404, f"no readings ever stored for GPU {key}")
    return Readings(gpu_key=key, start=start_utc, end=end_utc,
                    readings=[reading_out(d) for d in docs])  # fmt: skip
