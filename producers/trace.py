"""Replay a real LLM request trace (Azure LLM inference trace 2023) onto this host's fleet.

    >>> trace = scan_azure_trace(Path("azure-llm-inference-2023-conv.csv"))
    >>> mapper = TraceMapper("inference-01", replicas, [("llama-3.1-8b-instruct", 5.0)], seed=0)
    >>> replay = AzureTraceReplay(trace, mapper, shift=timedelta(0))
    >>> for event, offset in replay.items(): ...

The trace (columns ``TIMESTAMP,ContextTokens,GeneratedTokens``; CC-BY 4.0, see
``docs/producers.md``) has arrival times and token counts but no model, host or GPU. Rules:

* **Model**: request *i* (0-based, file order) gets ``u = blake2b("{seed}:{i}")`` as a number in
  [0, 1) and takes the model whose cumulative weight range holds ``u`` (weights from
  ``PRODUCER_MODELS``, among the deployed models, in that order). **Replica**: a second hash of
  the same key modulo the model's replica count. Each request's placement depends only on
  ``seed`` and ``i``: deterministic, and the same whichever part of the file is read.
* **Tenant** (``PRODUCER_TENANTS``): ``TenantMix.pick`` of the event-id key below, so the same
  request is billed to the same tenant in every replay.
* **Latency** from the model's :class:`ThroughputProfile`:
  ``ttft_ms = overhead_ms + input_tokens / prefill_tps x 1000`` and
  ``latency_ms = ttft_ms + output_tokens / decode_tps x 1000`` (no jitter: the trace already
  carries the real variation, in its token counts and arrivals).
* **Time**: ``ts`` = the request's arrival time + ``shift`` (``--end-now``: the last request's
  arrival becomes the moment the replay starts); the replay sends request *i* at
  ``(arrival_i - arrival_0) / speed`` after its start, keeping the trace's spacing.
* **Ids**: ``event_id = uuid5(TRACE_NAMESPACE, "{host}/{file name}/{seed}/{i}")``,
  ``request_id = "{file stem}-{i}"``: replaying the trace again re-sends the same ids. A
  tensor-parallel replica splits the request (``producers.fleet.split_request``).

The file is streamed twice: once to check every row (an invalid file is rejected before
anything is sent, like the other replay formats), once while sending. Nothing is held in memory.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from producers.exceptions import ReplayFileError
from producers.fleet import Replica, split_request
from producers.tenants import TenantMix
from producers.traffic import MAX_LATENCY_MS
from schemas.contracts import TOKEN_USAGE_V1, format_ts

__all__ = [
    "AZURE_TRACE_COLUMNS",
    "KNOWN_THROUGHPUT",
    "TRACE_NAMESPACE",
    "AzureTraceReplay",
    "ThroughputProfile",
    "TraceMapper",
    "TraceRequest",
    "TraceScan",
    "read_azure_trace",
    "scan_azure_trace",
]

AZURE_TRACE_COLUMNS: Final = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
# Namespace of the trace's event ids (uuid5 of the DNS namespace and this project's name).
TRACE_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_DNS, "trace.gpu-token-cost")
_MAX_TOKENS: Final = 10_000_000  # token.usage.v1's bound


@dataclass(frozen=True, slots=True)
class ThroughputProfile:
    """How fast one replica of a model serves one request under a typical serving batch."""

    prefill_tps: float  # prompt tokens per second (compute bound)
    decode_tps: float  # generated tokens per second, per request (memory-bandwidth bound)
    overhead_ms: float  # queueing + scheduling before prefill starts


# Roofline reasoning for one H100-class GPU (≈1,000 dense bf16 TFLOP/s, ≈3.35 TB/s), bf16
# weights, per replica (the 70B model on its 2-GPU tensor-parallel group): prefill costs about
# 2 x parameters FLOPs per token, so 8B ≈ 60k tokens/s at full use; decode reads every weight
# per step, so a batch-1 8B request tops out near 3.35 TB/s / 16 GB ≈ 200 tokens/s. A loaded
# vLLM-class server batches many requests: each request gets roughly a quarter of the prefill
# bound and 40 % of the decode bound. Plausible, not measured; see docs/producers.md.
KNOWN_THROUGHPUT: Final[Mapping[str, ThroughputProfile]] = {
    "llama-3.1-8b-instruct": ThroughputProfile(8_000, 80, 25),
    "mistral-7b-instruct": ThroughputProfile(9_000, 90, 25),
    "qwen2.5-32b": ThroughputProfile(3_000, 35, 60),
    "llama-3.1-70b-instruct": ThroughputProfile(2_500, 25, 90),
}
# Any other model: between the 8B and the 32B.
GENERIC_THROUGHPUT: Final = ThroughputProfile(5_000, 50, 50)


@dataclass(frozen=True, slots=True)
class TraceRequest:
    """One row of the trace: the i-th request (0-based), its arrival and tokens."""

    index: int
    arrival: datetime
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class TraceScan:
    """What the checking pass learnt: the file, its request count, first and last arrival."""

    path: Path
    count: int
    first: datetime
    last: datetime


def _arrival(text: str) -> datetime:
    # "2023-11-16 18:15:46.6805900": 7 fractional digits (100 ns); Python keeps 6.
    head, dot, fraction = text.strip().partition(".")
    value = datetime.fromisoformat(f"{head}.{fraction[:6]}" if dot else head)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)  # the trace's times are UTC
    return value


def _count(text: str, column: str) -> int:
    value = int(text)
    if not 0 <= value <= _MAX_TOKENS:
        raise ValueError(f"{column} {value} is outside 0..{_MAX_TOKENS}")
    return value


def read_azure_trace(path: Path) -> Iterator[TraceRequest]:
    """The trace's requests in file order, streamed; ReplayFileError names the first bad line."""
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise ReplayFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    with handle:
        rows = csv.reader(handle)
        header = next(rows, None)
        if header is None or tuple(h.strip() for h in header) != AZURE_TRACE_COLUMNS:
            raise ReplayFileError(
                f"{path}: line 1: expected the header {','.join(AZURE_TRACE_COLUMNS)}, "
                f"got {','.join(header or [])!r}; nothing was sent"
            )
        index = 0
        for line, row in enumerate(rows, start=2):
            if not row or not "".join(row).strip():
                continue
            try:
                if len(row) != len(AZURE_TRACE_COLUMNS):
                    raise ValueError(f"expected 3 columns, got {len(row)}")
                request = TraceRequest(
                    index,
                    _arrival(row[0]),
                    _count(row[1], "ContextTokens"),
                    _count(row[2], "GeneratedTokens"),
                )
            except ValueError as exc:
                raise ReplayFileError(f"{path}: line {line}: {exc}; nothing was sent") from None
            yield request
            index += 1


def scan_azure_trace(path: Path) -> TraceScan:
    """Check every row (ReplayFileError names the first bad one); count, first and last arrival."""
    count = 0
    first: datetime | None = None
    last: datetime | None = None
    for request in read_azure_trace(path):
        count += 1
        first = first or request.arrival
        last = request.arrival if last is None else max(last, request.arrival)
    if first is None or last is None:
        raise ReplayFileError(f"{path}: no requests in the trace")
    return TraceScan(path, count, first, last)


def _unit(digest: bytes) -> float:
    return int.from_bytes(digest[:8], "big") / 2**64


class TraceMapper:
    """Places trace requests on replicas and turns them into token.usage.v1 events."""

    def __init__(
        self,
        host: str,
        replicas: Sequence[Replica],
        mix: Sequence[tuple[str, float]],
        *,
        seed: int = 0,
        name: str = "trace",
        throughput: Mapping[str, ThroughputProfile] = KNOWN_THROUGHPUT,
        tenants: TenantMix | None = None,
        fleet_share: bool = False,
    ) -> None:
        self.host = host
        self._tenants = tenants
        self.seed = seed
        self.name = name
        self._replicas: dict[str, list[Replica]] = {}
        for replica in replicas:
            self._replicas.setdefault(replica.model, []).append(replica)
        # fleet_share: the mix is the whole fleet's; requests drawn for a model not deployed
        # here belong to another host replaying the same trace with the same seed and mix.
        self._models = [(m, w) for m, w in mix if fleet_share or m in self._replicas]
        if not any(m in self._replicas for m, _ in self._models):
            raise ValueError("no deployed model in the mix")
        self._cum = list(itertools.accumulate(w for _, w in self._models))
        self._throughput = throughput

    def place(self, index: int) -> Replica | None:
        """The replica request ``index`` goes to (see the module doc); None when the request's
        model is served by another host (``fleet_share``)."""
        digest = hashlib.blake2b(f"{self.seed}:{index}".encode(), digest_size=16).digest()
        target = _unit(digest) * self._cum[-1]
        model = self._models[-1][0]
        for (name, _), bound in zip(self._models, self._cum, strict=True):
            if target < bound:
                model = name
                break
        replicas = self._replicas.get(model)
        if replicas is None:
            return None
        return replicas[int.from_bytes(digest[8:], "big") % len(replicas)]

    def latencies(self, model: str, input_tokens: int, output_tokens: int) -> tuple[float, float]:
        """``(ttft_ms, latency_ms)`` of a request from the model's throughput profile."""
        p = self._throughput.get(model, GENERIC_THROUGHPUT)
        ttft = p.overhead_ms + input_tokens / p.prefill_tps * 1000
        latency = ttft + output_tokens / p.decode_tps * 1000
        return round(min(ttft, MAX_LATENCY_MS), 1), round(min(latency, MAX_LATENCY_MS), 1)

    def events(self, request: TraceRequest, shift: timedelta) -> list[dict[str, Any]]:
        """The token.usage.v1 events of one request (one per GPU of its replica; none when
        another host serves it)."""
        replica = self.place(request.index)
        if replica is None:
            return []
        ttft, latency = self.latencies(replica.model, request.input_tokens, request.output_tokens)
        key = f"{self.host}/{self.name}/{self.seed}/{request.index}"
        event: dict[str, Any] = {
            "schema": TOKEN_USAGE_V1,
            "event_id": str(uuid.uuid5(TRACE_NAMESPACE, key)),
            "ts": format_ts(request.arrival + shift),
            "host": self.host,
            "gpu_uuid": replica.gpus[0].gpu_uuid,
            "gpu_index": replica.gpus[0].gpu_index,
            "model": replica.model,
            "input_tokens": request.input_tokens,
            "output_tokens": request.output_tokens,
            "latency_ms": latency,
            "ttft_ms": ttft,
            "request_id": f"{Path(self.name).stem}-{request.index}",
            "status": "ok",
        }
        if self._tenants is not None and (tenant := self._tenants.pick(key)):
            event["tenant"] = tenant
        return split_request(event, replica.gpus)

    def stamp_reading(self, reading: Mapping[str, Any], at: datetime, tick: int) -> dict[str, Any]:
        """A GPU reading placed in trace time: ``ts = at``, and an id that the same replay
        re-sends (``uuid5(ns, "{host}/{name}/{seed}/gpu/{tick}/{gpu_uuid}")``)."""
        key = f"{self.host}/{self.name}/{self.seed}/gpu/{tick}/{reading['gpu_uuid']}"
        return {
            **reading,
            "ts": format_ts(at),
            "event_id": str(uuid.uuid5(TRACE_NAMESPACE, key)),
        }


@dataclass(frozen=True, slots=True)
class AzureTraceReplay:
    """A checked trace, ready to stream: ``items()`` yields (event, seconds after the start).

    GPU readings: ``prelude`` (tick 0, at the first arrival) goes out before the first
    request; with ``gpu_interval_s`` > 0 and ``read_gpus``, the GPUs are read again every
    ``gpu_interval_s`` of trace time, each reading stamped at its tick's trace time, so every
    minute of the replayed hour has readings (power, hence energy) as a live host would send.
    """

    scan: TraceScan
    mapper: TraceMapper
    shift: timedelta
    prelude: tuple[dict[str, Any], ...] = ()  # GPU readings sent before the first request
    gpu_interval_s: float = 0.0
    read_gpus: Callable[[], list[dict[str, Any]]] | None = None

    @property
    def name(self) -> str:
        return str(self.scan.path)

    def items(self) -> Iterator[tuple[dict[str, Any], float]]:
        """Every event with its offset at 1x; an arrival earlier than its predecessor's is
        due right after it (the schedule never goes backwards)."""
        latest = 0.0
        tick = 1
        periodic = self.gpu_interval_s > 0 and self.read_gpus is not None
        for request in read_azure_trace(self.scan.path):
            latest = max(latest, (request.arrival - self.scan.first).total_seconds())
            while periodic and tick * self.gpu_interval_s <= latest:
                yield from self._readings(tick)
                tick += 1
            for event in self.mapper.events(request, self.shift):
                yield event, latest

    def _readings(self, tick: int) -> Iterator[tuple[dict[str, Any], float]]:
        assert self.read_gpus is not None
        offset = tick * self.gpu_interval_s
        at = self.scan.first + self.shift + timedelta(seconds=offset)
        for reading in self.read_gpus():
            yield self.mapper.stamp_reading(reading, at, tick), offset
