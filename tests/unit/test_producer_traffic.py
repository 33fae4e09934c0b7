"""The synthetic traffic generator: deterministic under a seed, always contract-valid."""

from __future__ import annotations

import itertools
import random
import statistics
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from producers.settings import DEFAULT_MODELS
from producers.traffic import (
    KNOWN_PROFILES,
    GpuTarget,
    TrafficGenerator,
    Uuid4Source,
    _pick,
    profiles_for,
)
from schemas.contracts import format_ts, kafka_key, parse_ts, validation_errors

T0 = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
GPUS = [GpuTarget("GPU-aaaa", 0), GpuTarget("GPU-bbbb", 1), GpuTarget("GPU-cccc", 2)]
UNICODE_MODEL = "通义千问-72b-чат 🚀"


def counter_ids() -> Any:
    numbers = itertools.count()
    return lambda: f"00000000-0000-4000-8000-{next(numbers):012d}"


def generate(seed: int, n: int, models: Any = DEFAULT_MODELS) -> list[dict[str, Any]]:
    gen = TrafficGenerator(
        "inference-01", GPUS, profiles_for(models), random.Random(seed), id_factory=counter_ids()
    )
    return [gen.next_event(T0 + timedelta(milliseconds=20 * i)) for i in range(n)]


def test_same_seed_same_traffic() -> None:
    assert generate(42, 500) == generate(42, 500)


def test_different_seed_different_traffic() -> None:
    assert generate(1, 50) != generate(2, 50)


def test_default_event_ids_are_fresh_uuids() -> None:
    gen = TrafficGenerator("h", GPUS, profiles_for(DEFAULT_MODELS), random.Random(1))
    ids = {gen.next_event(T0)["event_id"] for _ in range(1000)}
    assert len(ids) == 1000


def test_every_event_is_contract_valid() -> None:
    models = [*DEFAULT_MODELS, (UNICODE_MODEL, 1.0)]
    for event in generate(7, 5000, models):
        assert validation_errors(event) == [], event


def test_unicode_model_names_are_kept() -> None:
    events = generate(3, 200, [(UNICODE_MODEL, 1.0), ("llama-3.1-8b-instruct", 1.0)])
    assert UNICODE_MODEL in {e["model"] for e in events}


def test_model_mix_follows_weights() -> None:
    events = generate(11, 20_000)
    share = Counter(e["model"] for e in events)
    total_weight = sum(w for _, w in DEFAULT_MODELS)
    for name, weight in DEFAULT_MODELS:
        assert share[name] / len(events) == pytest.approx(weight / total_weight, abs=0.02)


def test_gpus_are_used_in_turn() -> None:
    events = generate(5, 9)
    assert [e["gpu_uuid"] for e in events] == [g.gpu_uuid for g in GPUS] * 3
    assert {kafka_key(e) for e in events} == {f"inference-01/{g.gpu_uuid}" for g in GPUS}
    assert all(e["gpu_index"] == GPUS[i % 3].gpu_index for i, e in enumerate(events))


def test_token_counts_are_plausible_and_clamped() -> None:
    events = generate(13, 20_000)
    for e in events:
        context = KNOWN_PROFILES[e["model"]].context
        assert 1 <= e["input_tokens"] < context
        assert 0 <= e["output_tokens"] <= context - e["input_tokens"]
        assert e.get("cache_read_input_tokens", 0) <= e["input_tokens"]
        assert 0 <= e["ttft_ms"] <= e["latency_ms"]
    small = [e for e in events if e["model"] == "llama-3.1-8b-instruct" and e["status"] == "ok"]
    assert 400 < statistics.median(e["input_tokens"] for e in small) < 900
    assert 120 < statistics.median(e["output_tokens"] for e in small) < 250


def test_latency_grows_with_output_tokens() -> None:
    ok = [e for e in generate(17, 20_000) if e["status"] == "ok"]
    by_model = [e for e in ok if e["model"] == "llama-3.1-8b-instruct"]
    outputs = [e["output_tokens"] for e in by_model]
    latencies = [e["latency_ms"] for e in by_model]
    assert statistics.correlation(outputs, latencies) > 0.8

    # Bigger models are slower per token.
    def per_token(model: str) -> float:
        rows = [e for e in ok if e["model"] == model and e["output_tokens"] > 50]
        return float(statistics.median(e["latency_ms"] / e["output_tokens"] for e in rows))

    assert per_token("llama-3.1-70b-instruct") > 2 * per_token("llama-3.1-8b-instruct")


def test_status_is_mostly_ok_and_errors_return_no_tokens() -> None:
    events = generate(19, 20_000)
    statuses = Counter(e["status"] for e in events)
    assert statuses["ok"] / len(events) > 0.93
    assert set(statuses) <= {"ok", "error", "timeout", "cancelled"}
    assert all(e["output_tokens"] == 0 for e in events if e["status"] == "error")
    assert all(e["latency_ms"] >= 60_000 for e in events if e["status"] == "timeout")


def test_unknown_models_get_a_generic_profile() -> None:
    (profile,) = profiles_for([("my-finetune", 2.5)])
    assert (profile.name, profile.weight) == ("my-finetune", 2.5)
    assert profile.context > 0


def test_ts_is_rfc3339_utc() -> None:
    (event,) = generate(1, 1)
    assert event["ts"] == "2026-11-23T10:00:00.000000Z"
    assert parse_ts(event["ts"]) == T0
    local = datetime(2026, 11, 23, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    assert format_ts(local) == "2026-11-23T10:00:00.000000Z"
    with pytest.raises(ValueError, match="no zone"):
        format_ts(datetime(2026, 1, 1))


def test_needs_gpus_and_models() -> None:
    with pytest.raises(ValueError, match="GPU"):
        TrafficGenerator("h", [], profiles_for(DEFAULT_MODELS), random.Random())
    with pytest.raises(ValueError, match="model"):
        TrafficGenerator("h", GPUS, [], random.Random())


def test_gpu_target_from_event() -> None:
    event = {"gpu_uuid": "GPU-x", "gpu_index": 3}
    assert GpuTarget.from_event(event) == GpuTarget("GPU-x", 3)


def test_uuid4_source_gives_unique_version_4_rfc_4122_ids_across_refills() -> None:
    source = Uuid4Source(batch=4)  # 10 ids = three urandom reads
    ids = [source() for _ in range(10)]
    assert len(set(ids)) == 10
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_pick_draws_what_random_choices_draws() -> None:
    population, cum = ("a", "b", "c", "d"), (0.1, 0.5, 0.55, 1.0)
    ours, theirs = random.Random(5), random.Random(5)
    for _ in range(2000):
        assert _pick(ours, population, cum) == theirs.choices(population, cum_weights=cum)[0]
