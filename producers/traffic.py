"""Synthetic inference traffic: token.usage.v1 events that look like a real serving fleet.

    >>> gen = TrafficGenerator("inference-01", [GpuTarget("GPU-0a1b", 0)],
    ...                        profiles_for([("llama-3.1-8b-instruct", 1.0)]), random.Random(7))
    >>> event = gen.next_event(datetime.now(UTC))

Pure: no I/O and no clock. The caller passes the timestamp; all randomness comes from the
``rng`` it is given, so a seed reproduces the same models, token counts, latencies, statuses
and GPUs. ``event_id`` comes from ``id_factory`` (fresh UUID4s by default, so that running the
same seed twice never produces events the processor would discard as duplicates).

The shape: per model, input and output token counts are lognormal (most requests short, a long
tail), clamped to the model's context window and the contract's limits; time to first token
grows with the prompt (prefill), latency = ttft + output tokens x time per output token, both
with multiplicative jitter; most requests end ``ok``. Requests go to the host's GPUs in turn,
or, given the deployment map's ``groups`` (model -> its replicas' GPU groups), to a replica of
their model in turn (``producers.fleet``).
"""

from __future__ import annotations

import itertools
import math
import os
import random
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from producers.tenants import TenantMix
from schemas.contracts import TOKEN_USAGE_V1, format_ts

__all__ = [
    "KNOWN_PROFILES",
    "MAX_TOKENS",
    "GpuTarget",
    "ModelProfile",
    "TrafficGenerator",
    "profiles_for",
]

# token.usage.v1 caps input_tokens and output_tokens at 10 million (above that = corrupt).
MAX_TOKENS: Final = 10_000_000
# token.usage.v1 caps latency_ms and ttft_ms at one day.
MAX_LATENCY_MS: Final = 86_400_000.0

# How requests end. Errors return no tokens; timeouts and cancellations are cut short.
_STATUSES: Final = ("ok", "error", "timeout", "cancelled")
_STATUS_CUM_WEIGHTS: Final = tuple(itertools.accumulate((0.96, 0.01, 0.01, 0.02)))
# Share of requests that hit the prefix cache (a shared system prompt, a multi-turn chat).
_CACHE_HIT_SHARE: Final = 0.3
# vLLM-style servers commonly time requests out after a minute.
_REQUEST_TIMEOUT_MS: Final = 60_000.0


@dataclass(frozen=True, slots=True)
class ModelProfile:
    """How one model's requests look: token distributions and speed on the GPU."""

    name: str
    weight: float
    input_median: float  # prompt tokens, median of the lognormal
    input_sigma: float
    output_median: float  # generated tokens, median of the lognormal
    output_sigma: float
    context: int  # input + output never exceed it
    ttft_base_ms: float  # queueing + scheduling before prefill
    prefill_ms_per_1k: float  # prefill time per 1,000 prompt tokens
    tpot_ms: float  # time per output token (decode)


def _profile(
    name: str, inp: float, out: float, ctx: int, ttft: float, pre: float, tpot: float
) -> ModelProfile:
    return ModelProfile(name, 1.0, inp, 1.0, out, 0.8, ctx, ttft, pre, tpot)


# Rough single-GPU serving numbers (vLLM-class server, bf16/fp8 on A100/H100-class GPUs):
# bigger models prefill and decode more slowly. They only need to be plausible, not exact.
KNOWN_PROFILES: Final[Mapping[str, ModelProfile]] = {
    p.name: p
    for p in (
        _profile("llama-3.1-8b-instruct", 600, 180, 131_072, 25, 8, 12),
        _profile("mistral-7b-instruct", 500, 160, 32_768, 25, 7, 11),
        _profile("qwen2.5-32b", 800, 220, 32_768, 60, 30, 28),
        _profile("llama-3.1-70b-instruct", 900, 250, 131_072, 90, 60, 45),
    )
}
# Any other model name gets a mid-sized model's shape.
_GENERIC: Final = _profile("generic", 600, 200, 32_768, 50, 20, 20)


def profiles_for(models: Sequence[tuple[str, float]]) -> list[ModelProfile]:
    """Profiles for ``(name, weight)`` pairs; names not in KNOWN_PROFILES get a generic shape."""
    out: list[ModelProfile] = []
    for name, weight in models:
        base = KNOWN_PROFILES.get(name, _GENERIC)
        out.append(
            ModelProfile(
                name, weight, base.input_median, base.input_sigma, base.output_median,
                base.output_sigma, base.context, base.ttft_base_ms, base.prefill_ms_per_1k,
                base.tpot_ms,
            )
        )  # fmt: skip
    return out


@dataclass(frozen=True, slots=True)
class GpuTarget:
    """A GPU token events are attributed to."""

    gpu_uuid: str
    gpu_index: int

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> GpuTarget:
        """The GPU a gpu.metrics.v1 event describes."""
        return cls(str(event["gpu_uuid"]), int(event["gpu_index"]))


class Uuid4Source:
    """Random (version 4) UUID strings from the OS's CSPRNG, ``batch`` ids per urandom call.

    ``str(uuid.uuid4())`` makes one system call and one UUID object per id, the largest single
    cost of a synthetic event; this reads the same kind of randomness in bulk and formats it
    directly (version nibble 4, RFC 4122 variant bits 10).
    """

    def __init__(self, batch: int = 256) -> None:
        self._size = 16 * batch
        self._buf = b""
        self._at = 0

    def __call__(self) -> str:
        if self._at >= len(self._buf):
            self._buf, self._at = os.urandom(self._size), 0
        at = self._at
        self._at = at + 16
        h = self._buf[at : at + 16].hex()
        variant = "89ab"[self._buf[at + 8] >> 4 & 3]
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}"


def _pick(rng: random.Random, population: Sequence[Any], cum_weights: Sequence[float]) -> Any:
    """``rng.choices(population, cum_weights=cum_weights)[0]`` (the same draw, the same
    result for a seeded rng) without building a list per call."""
    return population[
        bisect_right(cum_weights, rng.random() * cum_weights[-1], 0, len(population) - 1)
    ]


class TrafficGenerator:
    """Makes token.usage.v1 events for ``host``'s GPUs, one request at a time."""

    def __init__(
        self,
        host: str,
        gpus: Sequence[GpuTarget],
        models: Sequence[ModelProfile],
        rng: random.Random,
        *,
        id_factory: Callable[[], str] | None = None,
        groups: Mapping[str, Sequence[Sequence[GpuTarget]]] | None = None,
        tenants: TenantMix | None = None,
    ) -> None:
        if groups is not None:  # the deployment map: only deployed models get traffic
            models = [m for m in models if groups.get(m.name)]
            gpus = [gpu for m in models for group in groups[m.name] for gpu in group]
        if not gpus:
            raise ValueError("need at least one GPU to attribute traffic to")
        if not models:
            raise ValueError("need at least one model")
        self.host = host
        self.gpus = tuple(gpus)
        self.models = tuple(models)
        self._cum_weights = list(itertools.accumulate(m.weight for m in self.models))
        self._rng = rng
        self._id_factory = id_factory if id_factory is not None else Uuid4Source()
        self._next_gpu = 0
        self._groups = (
            None
            if groups is None
            else {name: [tuple(g) for g in replicas] for name, replicas in groups.items()}
        )
        self._next_replica: dict[str, int] = {}
        self._tenants = tenants

    def _lognormal(self, median: float, sigma: float) -> float:
        return self._rng.lognormvariate(math.log(median), sigma)

    def _jitter(self, sigma: float) -> float:
        # Multiplicative noise with median 1.
        return self._rng.lognormvariate(0.0, sigma)

    def next_event(self, ts: datetime) -> dict[str, Any]:
        """The next request's token.usage.v1 event, completed at ``ts``."""
        return self.next_request(ts)[0]

    def next_request(self, ts: datetime) -> tuple[dict[str, Any], tuple[GpuTarget, ...]]:
        """The next request's event (on the first GPU of its group) and its GPU group.

        Without ``groups`` requests go to the GPUs in turn, one GPU each; with them, the
        model's replicas take its requests in turn (``producers.fleet.split_request`` turns
        a group of several GPUs into one event per GPU).
        """
        rng = self._rng
        model = _pick(rng, self.models, self._cum_weights)
        if self._groups is None:
            group: tuple[GpuTarget, ...] = (self.gpus[self._next_gpu],)
            self._next_gpu = (self._next_gpu + 1) % len(self.gpus)
        else:
            replicas = self._groups[model.name]
            turn = self._next_replica.get(model.name, 0)
            group = replicas[turn % len(replicas)]
            self._next_replica[model.name] = turn + 1
        gpu = group[0]

        limit = min(model.context, MAX_TOKENS)
        input_tokens = min(
            max(1, round(self._lognormal(model.input_median, model.input_sigma))), limit - 1
        )
        output_tokens = min(
            max(1, round(self._lognormal(model.output_median, model.output_sigma))),
            limit - input_tokens,
        )
        status = _pick(rng, _STATUSES, _STATUS_CUM_WEIGHTS)
        ttft_ms = (
            model.ttft_base_ms + model.prefill_ms_per_1k * input_tokens / 1000
        ) * self._jitter(0.25)
        if status == "error":
            output_tokens = 0
        elif status in ("timeout", "cancelled"):
            output_tokens = int(output_tokens * rng.random())
        latency_ms = ttft_ms + output_tokens * model.tpot_ms * self._jitter(0.15)
        if status == "timeout":  # the server gave up at its request timeout
            latency_ms = max(latency_ms, _REQUEST_TIMEOUT_MS)
        cached = 0
        if rng.random() < _CACHE_HIT_SHARE:
            cached = int(input_tokens * rng.uniform(0.2, 0.9))

        event: dict[str, Any] = {
            "schema": TOKEN_USAGE_V1,
            "event_id": self._id_factory(),
            "ts": format_ts(ts),
            "host": self.host,
            "gpu_uuid": gpu.gpu_uuid,
            "gpu_index": gpu.gpu_index,
            "model": model.name,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "latency_ms": round(min(latency_ms, MAX_LATENCY_MS), 1),
            "ttft_ms": round(min(ttft_ms, MAX_LATENCY_MS), 1),
            "request_id": f"req-{rng.getrandbits(64):016x}",
            "status": status,
        }
        if cached:
            event["cache_read_input_tokens"] = cached
        if self._tenants is not None and (tenant := self._tenants.pick(event["request_id"])):
            event["tenant"] = tenant
        return event, group
