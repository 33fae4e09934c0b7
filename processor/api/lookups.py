"""Lookups of stored events: one event's cost breakdown, one request's documents with their sum.

    GET /api/v1/events/{event_id}       -> TokenEventOut | GpuEventOut (by its ``schema``)
    GET /api/v1/requests/{request_id}   -> RequestCosts (one document per GPU of the request)

A token event's figures are the **live estimate** it got when it was processed (its GPU's
throughput in the trailing window, docs/cost-model.md), stored on the document and never
recomputed: what an event says here is what it said when it was stored.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, HTTPException, Path
from pydantic import BaseModel, Field

from processor.api.deps import StoreDep
from processor.api.problems import problem_responses
from processor.api.readings import EventId, Number, StoredReading, Timestamp, reading_out
from processor.documents import GPU_METRICS

router = APIRouter(prefix="/api/v1", tags=["lookups"])

# The contract's event_id is a UUID (validated with its format): anything else names nothing.
_UUID: Final = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
# A tensor-parallel request has one document per GPU of its group; a host has at most 1024
# GPUs (the contract's gpu_index bound), so this never cuts a real request short.
_MAX_REQUEST_DOCS: Final = 1024

EventIdPath = Annotated[
    str,
    Path(
        pattern=_UUID,
        examples=["3f2b8c1e-5a4d-4e7f-9c21-0a7b3c4d5e6f"],
        description="The event's event_id (a UUID, as the contracts require).",
    ),
]
RequestIdPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=256,
        examples=["req-00000000000000ff"],
        description="The request_id the token events carried (token.usage.v1's bounds).",
    ),
]


class TokenEventOut(BaseModel):
    """A stored token.usage.v1 event with the cost it was given (the live estimate)."""

    schema_: Literal["token.usage.v1"] = Field(alias="schema", description="Contract name.")
    event_id: EventId
    ts: Timestamp = Field(description="When the request completed, RFC 3339 UTC.")
    host: str
    gpu_uuid: str
    gpu_index: int
    gpu: str = Field(description="`host/gpu_uuid`, the GPU whose time was charged.")
    model: str
    tenant: str | None = Field(None, description="Who is billed; null: unattributed.")
    user: str | None = None
    request_id: str | None = None
    status: str | None = None
    latency_ms: Number
    ttft_ms: Number | None = None
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int | None = None
    tokens: int = Field(description="input_tokens + output_tokens.")
    price_per_hour_usd: Number = Field(description="The GPU's price used for this event.")
    price_source: Literal["event", "price_map", "default"] = Field(
        description="Where that price came from: the GPU's reading, GPU_PRICES, the default."
    )
    output_weight: float = Field(description="k: one output token costs k input tokens.")
    weighted_tokens: float = Field(description="input_tokens + k x output_tokens.")
    tps: float = Field(description="Tokens per second of the GPU in the trailing window W.")
    weighted_tps: float = Field(description="Weighted tokens per second in that window.")
    cost_per_input_token: float | None = Field(
        description="(price / 3600) / weighted_tps, USD; null without throughput."
    )
    cost_per_output_token: float | None = Field(description="k x cost_per_input_token, USD.")
    cost_per_token: float | None = Field(description="cost_usd / tokens (blended), USD.")
    input_cost_usd: float
    output_cost_usd: float
    cost_usd: float = Field(description="input_cost_usd + output_cost_usd (live estimate).")
    kafka_partition: int
    kafka_offset: int


class GpuEventOut(BaseModel):
    """A stored gpu.metrics.v1 reading with its resolved price (and anomaly flags)."""

    schema_: Literal["gpu.metrics.v1"] = Field(alias="schema", description="Contract name.")
    gpu: str = Field(description="`host/gpu_uuid`.")
    reading: StoredReading
    kafka_partition: int
    kafka_offset: int


class RequestTotals(BaseModel):
    gpus: int = Field(description="Documents (one per GPU of the request's group).")
    tokens: int
    input_tokens: int
    output_tokens: int
    weighted_tokens: float
    input_cost_usd: float
    output_cost_usd: float
    cost_usd: float = Field(description="Sum of the documents' cost_usd (live estimates).")


class RequestCosts(BaseModel):
    request_id: str
    events: list[TokenEventOut] = Field(description="By ts, then gpu_index.")
    totals: RequestTotals


def token_event_out(doc: dict[str, Any]) -> TokenEventOut:
    """A stored token_usage document as the API shows it."""
    out = dict(doc)
    out["event_id"] = str(doc["_id"])
    out["ts"] = doc["ts"].isoformat() if hasattr(doc["ts"], "isoformat") else str(doc["ts"])
    out["gpu"] = doc["gpu_key"]
    out.setdefault("tenant", None)  # shown as null: unattributed
    # Documents stored before k existed were priced with every token alike.
    out.setdefault("output_weight", 1.0)
    out.setdefault("weighted_tokens", float(doc["tokens"]))
    out.setdefault("weighted_tps", doc.get("tps", 0.0))
    out.setdefault("cost_per_input_token", doc.get("cost_per_token"))
    out.setdefault("cost_per_output_token", doc.get("cost_per_token"))
    out.setdefault("input_cost_usd", 0.0)
    out.setdefault("output_cost_usd", 0.0)
    return TokenEventOut.model_validate(out)


@router.get(
    "/events/{event_id}",
    response_model=TokenEventOut | GpuEventOut,
    response_model_exclude_unset=True,
    responses=problem_responses(404, 422, 503),
)
def get_event(store: StoreDep, event_id: EventIdPath) -> TokenEventOut | GpuEventOut:
    """One stored event: a token event with its cost breakdown, or a GPU reading."""
    found = store.find_event(event_id)
    if found is None:
        raise HTTPException(404, f"no event stored under event_id {event_id}")
    collection, doc = found
    if collection == GPU_METRICS:
        return GpuEventOut.model_validate({
            "schema": doc["schema"], "gpu": doc["gpu_key"], "reading": reading_out(doc),
            "kafka_partition": doc["kafka_partition"], "kafka_offset": doc["kafka_offset"],
        })  # fmt: skip
    return token_event_out(doc)


@router.get(
    "/requests/{request_id}",
    response_model=RequestCosts,
    response_model_exclude_unset=True,
    responses=problem_responses(404, 422, 503),
)
def get_request(store: StoreDep, request_id: RequestIdPath) -> RequestCosts:
    """Every token document of one request (one per GPU of a tensor-parallel group), summed."""
    events = [token_event_out(d) for d in store.request_events(request_id, _MAX_REQUEST_DOCS)]
    if not events:
        raise HTTPException(404, f"no token event stored with request_id {request_id}")
    totals = RequestTotals(
        gpus=len(events),
        tokens=sum(e.tokens for e in events),
        input_tokens=sum(e.input_tokens for e in events),
        output_tokens=sum(e.output_tokens for e in events),
        weighted_tokens=sum(e.weighted_tokens for e in events),
        input_cost_usd=sum(e.input_cost_usd for e in events),
        output_cost_usd=sum(e.output_cost_usd for e in events),
        cost_usd=sum(e.cost_usd for e in events),
    )
    return RequestCosts(request_id=request_id, events=events, totals=totals)


__all__ = ["GpuEventOut", "RequestCosts", "TokenEventOut", "router", "token_event_out"]
