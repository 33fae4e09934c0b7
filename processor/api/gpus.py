"""GPU routes: this host's GPUs, the fleet seen on the stream, one GPU's readings over time."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Final, cast

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, Field

from gpu_readers import GpuReaderError
from processor.api.deps import GpuReaderDep, SettingsDep, StoreDep
from processor.api.problems import problem_responses
from processor.api.readings import GpuMetricsEvent, Source, StoredReading, reading_out
from processor.api.times import Rfc3339, WindowQuery, resolve_range
from schemas.contracts import epoch_us

router = APIRouter(tags=["gpus"])

# The GPU the documentation's examples name (tests/integration/test_api_schemathesis.py stores
# readings for it, so example requests find rows).
EXAMPLE_HOST: Final = "inference-01"
EXAMPLE_GPU_UUID: Final = "GPU-5f1c2b7e-8d3a-4c6f-9e21-0a7b3c4d5e6f"

# The contract's own bounds on the two halves of a gpu_key: a path beyond them can name no GPU,
# so it is refused with the reason instead of looked up.
HostPath = Annotated[
    str,
    Path(
        min_length=1, max_length=253, pattern=r"^[^/\s]+$", examples=[EXAMPLE_HOST],
        description="The GPU's host.",
    ),
]  # fmt: skip
GpuUuidPath = Annotated[
    str,
    Path(min_length=1, max_length=128, examples=[EXAMPLE_GPU_UUID], description="The GPU's UUID."),
]


class LocalGpus(BaseModel):
    source: Source | None = Field(description="The reader that answered; null when none did.")
    skipped: dict[str, str] = Field(description="Readers that failed, each with its reason.")
    gpus: list[GpuMetricsEvent] = Field(description="This host's GPUs, read just now.")
    error: str | None = Field(description="Why no reader answered, if none did.")


class GpuInfo(BaseModel):
    host: str = Field(description="This processor's host name (PROCESSOR_HOST).")
    local: LocalGpus
    stream: list[StoredReading] = Field(description="The latest reading of every GPU stored.")


class Readings(BaseModel):
    gpu_key: str
    start: datetime
    end: datetime
    readings: list[StoredReading]


@router.get(
    "/gpu/info",
    response_model=GpuInfo,
    response_model_exclude_unset=True,
    responses=problem_responses(503),
)
def get_gpu_info(settings: SettingsDep, store: StoreDep, reader: GpuReaderDep) -> GpuInfo:
    """This host's GPUs (NVML -> nvidia-smi -> seed) and the latest reading of every GPU seen."""
    try:
        events, error = reader.read(), None
    except GpuReaderError as exc:
        events, error = [], str(exc)
    local = LocalGpus(
        source=cast(Source | None, reader.active_source if events else None),
        skipped=dict(reader.skipped_sources),
        gpus=[GpuMetricsEvent.model_validate(e) for e in events],
        error=error,
    )
    return GpuInfo(
        host=settings.processor_host,
        local=local,
        stream=[reading_out(d) for d in store.latest_readings()],
    )


@router.get(
    "/api/v1/gpus",
    response_model=list[StoredReading],
    response_model_exclude_unset=True,
    responses=problem_responses(503),
)
def list_gpus(store: StoreDep) -> list[StoredReading]:
    """Every GPU seen on the stream, with its latest reading."""
    return [reading_out(d) for d in store.latest_readings()]


@router.get(
    "/api/v1/gpus/{host}/{gpu_uuid}/metrics",
    response_model=Readings,
    response_model_exclude_unset=True,
    responses=problem_responses(404, 422, 503),
)
def list_gpu_readings(
    store: StoreDep,
    host: HostPath,
    gpu_uuid: GpuUuidPath,
    start: Annotated[
        Rfc3339 | None, Query(description="Inclusive, RFC 3339; default end - 1h.")
    ] = None,
    end: Annotated[Rfc3339 | None, Query(description="Exclusive, RFC 3339; default now.")] = None,
    window: WindowQuery = None,
    limit: Annotated[int, Query(ge=1, le=10_000, description="Most readings returned.")] = 1000,
) -> Readings:
    """One GPU's readings in a time range, oldest first."""
    start_utc, end_utc = resolve_range(start, end, timedelta(hours=1), window=window)
    key = f"{host}/{gpu_uuid}"
    docs = store.gpu_readings(key, epoch_us(start_utc), epoch_us(end_utc), limit)
    if not docs and not store.latest_readings_of(key):
        raise HTTPException(404, f"no readings ever stored for GPU {key}")
    return Readings(gpu_key=key, start=start_utc, end=end_utc,
                    readings=[reading_out(d) for d in docs])  # fmt: skip
