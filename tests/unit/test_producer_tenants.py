"""The tenant mix of synthetic and replayed traffic."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime

import pytest

from producers.settings import DEFAULT_MODELS
from producers.tenants import DEFAULT_TENANTS, TenantMix
from producers.traffic import GpuTarget, TrafficGenerator, profiles_for
from schemas.contracts import validation_errors

GPUS = [GpuTarget("GPU-0", 0), GpuTarget("GPU-1", 1)]


def test_parse_and_print_round_trip() -> None:
    mix = TenantMix.parse("team-search:5, team-chat:3,org:ml:2,-")
    assert mix.names == ["team-search", "team-chat", "org:ml", None]
    assert str(mix) == "team-search:5,team-chat:3,org:ml:2,-:1"
    assert str(TenantMix.parse(DEFAULT_TENANTS)) == DEFAULT_TENANTS


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "at least one"),
        ("a:1,a:2", "more than once"),
        ("(idle):1", "letter or digit first"),
        ("team a:1", "letter or digit first"),
        ("a:0", "weight must be > 0"),
        ("t" * 129, "1-128 characters"),
    ],
)
def test_bad_mixes_are_refused_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason.replace("(", r"\(")):
        TenantMix.parse(text)


def test_pick_is_deterministic_and_follows_the_weights() -> None:
    mix = TenantMix.parse("a:6,b:3,-:1")
    picks = [mix.pick(f"request-{i}") for i in range(20_000)]
    assert picks == [mix.pick(f"request-{i}") for i in range(20_000)]
    shares = Counter(picks)
    # 20,000 draws: each share within 1.5 points of its weight (3+ standard deviations).
    assert abs(shares["a"] / 20_000 - 0.6) < 0.015
    assert abs(shares["b"] / 20_000 - 0.3) < 0.015
    assert abs(shares[None] / 20_000 - 0.1) < 0.015


def test_synthetic_events_carry_valid_tenants_without_changing_the_random_stream() -> None:
    plain = TrafficGenerator("h", GPUS, profiles_for(DEFAULT_MODELS), random.Random(5))
    billed = TrafficGenerator(
        "h", GPUS, profiles_for(DEFAULT_MODELS), random.Random(5),
        tenants=TenantMix.parse(DEFAULT_TENANTS),
    )  # fmt: skip
    now = datetime(2026, 12, 1, tzinfo=UTC)
    tenants: Counter[str | None] = Counter()
    for _ in range(500):
        a, b = plain.next_event(now), billed.next_event(now)
        assert "tenant" not in a
        assert {k: v for k, v in b.items() if k not in {"tenant", "event_id"}} == {
            k: v for k, v in a.items() if k != "event_id"
        }
        assert validation_errors(b) == []
        tenants[b.get("tenant")] += 1
    assert set(tenants) == {"team-search", "team-chat", "team-batch", None}
