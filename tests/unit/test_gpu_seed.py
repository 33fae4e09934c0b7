"""Seed source: the original deployment's format, stable UUIDs, bounded deterministic jitter."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

import pytest

from gpu_readers import GpuReader, NoGpuSource, SeedFileError, load_seed_file, seed_gpu_uuid
from gpu_readers.seed import (
    MEMORY_JITTER_FRACTION,
    POWER_JITTER_FRACTION,
    UTILIZATION_JITTER_POINTS,
    SeedGpu,
    jittered_reading,
    parse_seed,
)
from schemas.contracts import validate
from tests.unit.fakes.fake_pynvml import FakeNvml

LIBRARY_NOT_FOUND = 12

ORIGINAL_FORMAT: list[dict[str, Any]] = [
    {
        "gpu_index": 0,
        "name": "NVIDIA GeForce RTX 3090",
        "utilization": 0.85,
        "mem_used_mb": 20000,
        "mem_total_mb": 24576,
        "power_w": 300.0,
        "price_per_hour_usd": 0.85,
    },
    {
        "gpu_index": 1,
        "name": "NVIDIA A100-SXM4-40GB",
        "utilization": 0.4,
        "mem_used_mb": 10000,
        "mem_total_mb": 40960,
        "power_w": 250.0,
        "price_per_hour_usd": 3.2,
        "temperature_c": 60,
        "clock_sm_mhz": 1410,
        "uuid": "GPU-a1b2c3d4-0000-4000-8000-000000000001",
    },
]


def write(tmp_path: Path, content: Any) -> Path:
    path = tmp_path / "gpu_seed.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def seed_reader(
    seed_file: Path | None, tmp_path: Path, rng: random.Random | None = None, host: str = "h"
) -> GpuReader:
    """A reader on which NVML and nvidia-smi are both unavailable."""
    return GpuReader(
        host,
        seed_file=seed_file,
        rng=rng,
        pynvml_module=FakeNvml([], init_error=LIBRARY_NOT_FOUND).module,
        nvidia_smi=str(tmp_path / "absent-nvidia-smi"),
    )


def test_default_seed_has_the_original_cards(tmp_path: Path) -> None:
    entries = {entry.name: entry for entry in load_seed_file(None)}

    assert entries["NVIDIA GeForce RTX 3090"].price_per_hour_usd == 0.85
    assert entries["NVIDIA GeForce RTX 3090"].mem_total_mib == 24576
    assert entries["NVIDIA A100-SXM4-40GB"].price_per_hour_usd == 3.20
    assert entries["NVIDIA A100-SXM4-40GB"].mem_total_mib == 40960

    reader = seed_reader(None, tmp_path)
    events = reader.read()
    assert reader.active_source == "seed"
    assert {e["gpu_name"] for e in events} >= set(entries)
    for event in events:
        assert event["source"] == "seed"
        validate(event)


def test_original_format_becomes_events(tmp_path: Path) -> None:
    reader = seed_reader(write(tmp_path, ORIGINAL_FORMAT), tmp_path, random.Random(1))

    rtx, a100 = reader.read()

    assert rtx["gpu_name"] == "NVIDIA GeForce RTX 3090"
    assert rtx["price_per_hour_usd"] == 0.85
    assert rtx["memory_total_mib"] == 24576
    assert abs(rtx["utilization_gpu_pct"] - 85) <= UTILIZATION_JITTER_POINTS  # ratio -> percent
    # Not in the original format: null and named, never 0.
    assert rtx["temperature_gpu_c"] is None
    assert rtx["clock_sm_mhz"] is None
    assert rtx["unsupported_fields"] == ["temperature_gpu_c", "clock_sm_mhz"]
    assert "power_limit_w" not in rtx
    assert "energy_total_mj" not in rtx
    assert a100["gpu_uuid"] == "GPU-a1b2c3d4-0000-4000-8000-000000000001"
    assert (a100["temperature_gpu_c"], a100["clock_sm_mhz"]) == (60, 1410)
    assert a100["unsupported_fields"] == []
    validate(rtx)
    validate(a100)


def test_synthetic_uuid_is_stable_per_host_index_and_name(tmp_path: Path) -> None:
    path = write(tmp_path, ORIGINAL_FORMAT)

    first = seed_reader(path, tmp_path, host="host-a").read()[0]["gpu_uuid"]
    again = seed_reader(path, tmp_path, host="host-a").read()[0]["gpu_uuid"]
    other_host = seed_reader(path, tmp_path, host="host-b").read()[0]["gpu_uuid"]

    assert first == again == seed_gpu_uuid("host-a", 0, "NVIDIA GeForce RTX 3090")
    assert first.startswith("GPU-")
    assert other_host != first
    assert seed_gpu_uuid("host-a", 1, "NVIDIA GeForce RTX 3090") != first


def test_jitter_is_deterministic_under_a_fixed_rng(tmp_path: Path) -> None:
    path = write(tmp_path, ORIGINAL_FORMAT)
    metrics = ("utilization_gpu_pct", "memory_used_mib", "power_draw_w")

    def series(seed: int) -> list[tuple[Any, ...]]:
        reader = seed_reader(path, tmp_path, random.Random(seed))
        return [tuple(e[m] for m in metrics) for _ in range(20) for e in reader.read()]

    assert series(7) == series(7)
    assert series(7) != series(8)
    assert len(set(series(7))) > 1  # it moves: dashboards are not flat


@pytest.mark.parametrize(
    ("utilization", "used", "total", "power"),
    [
        (0.5, 10_000, 40_960, 250.0),
        (1.0, 24_576, 24_576, 350.0),  # clamps at 100 % and at the card's memory
        (0.0, 0, 16_384, 0.0),  # clamps at 0
        (0.97, 24_000, 24_576, 1.0),
    ],
)
def test_jitter_stays_within_bounds(
    utilization: float, used: float, total: float, power: float
) -> None:
    entry = SeedGpu(0, "NVIDIA L40S", utilization, used, total, power)
    rng = random.Random(42)

    for _ in range(2_000):
        reading = jittered_reading(entry, "h", rng)
        assert reading.utilization_gpu_pct is not None
        assert reading.memory_used_mib is not None
        assert reading.power_draw_w is not None
        assert 0 <= reading.utilization_gpu_pct <= 100
        assert abs(reading.utilization_gpu_pct - utilization * 100) <= UTILIZATION_JITTER_POINTS
        assert 0 <= reading.memory_used_mib <= total
        assert abs(reading.memory_used_mib - used) <= used * MEMORY_JITTER_FRACTION + 1
        assert reading.power_draw_w >= 0
        assert abs(reading.power_draw_w - power) <= power * POWER_JITTER_FRACTION + 0.01
        assert reading.memory_total_mib == total


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("[]", "the list is empty (no GPUs)"),
        ('[{"gpu_index": 0,', "not valid JSON (line 1 column"),
        ('{"gpu_index": 0}', "must be a JSON list of GPU objects, got dict"),
        ("[3]", "entry 1: must be an object, got int"),
    ],
)
def test_unusable_files_fail_with_a_clear_reason(content: str, reason: str, tmp_path: Path) -> None:
    path = write(tmp_path, content)

    with pytest.raises(SeedFileError, match=str(path)) as caught:
        load_seed_file(path)
    assert reason in str(caught.value)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"utilization": "85%"}, "'utilization' must be a number, got '85%'"),
        ({"utilization": 85}, "'utilization' is a 0-1 ratio"),
        ({"utilization": True}, "'utilization' must be a number, got True"),
        ({"gpu_index": "0"}, "'gpu_index' must be an integer 0-1023"),
        ({"gpu_index": -1}, "'gpu_index' must be an integer 0-1023"),
        ({"name": ""}, "'name' must be a non-empty string"),
        ({"mem_used_mb": None}, "'mem_used_mb' must be a number, got None"),
        ({"mem_used_mb": 30000}, "'mem_used_mb' 30000 exceeds 'mem_total_mb' 24576"),
        ({"power_w": -5}, "'power_w' must not be negative"),
        ({"price_per_hour_usd": "cheap"}, "'price_per_hour_usd' must be a number"),
        ({"uuid": 7}, "'uuid' must be a non-empty string"),
        ({"uuid": "GPU-" + "0" * 130}, "'uuid' must be a non-empty string of at most 128"),
    ],
)
def test_wrong_types_name_the_entry_and_key(change: dict[str, Any], reason: str) -> None:
    entry = {**ORIGINAL_FORMAT[0], **change}

    with pytest.raises(SeedFileError, match="entry 1: ") as caught:
        parse_seed(json.dumps([entry]), "seed.json")
    assert reason in str(caught.value)


def test_missing_keys_and_duplicate_indexes() -> None:
    entry = dict(ORIGINAL_FORMAT[0])
    del entry["power_w"]
    with pytest.raises(SeedFileError, match="entry 1: missing 'power_w'"):
        parse_seed(json.dumps([entry]))
    with pytest.raises(SeedFileError, match=r"gpu_index listed more than once: \[0\]"):
        parse_seed(json.dumps([ORIGINAL_FORMAT[0], ORIGINAL_FORMAT[0]]))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SeedFileError, match="seed file not found"):
        load_seed_file(tmp_path / "nope.json")


def test_unknown_keys_are_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="gpu_readers")
    entry = {**ORIGINAL_FORMAT[0], "model": "llama-3.1-8b", "host": "legacy-01"}

    [parsed] = parse_seed(json.dumps([entry]), "seed.json")

    assert parsed.name == "NVIDIA GeForce RTX 3090"
    assert caplog.messages == [
        "seed file keys ignored file=seed.json entry=1 keys=['host', 'model']"
    ]


@pytest.mark.parametrize("content", ["[]", "not json", None])
def test_a_bad_seed_file_with_no_gpu_raises_no_gpu_source(
    content: str | None, tmp_path: Path
) -> None:
    path = tmp_path / "seed.json" if content is None else write(tmp_path, content)
    reader = seed_reader(path, tmp_path)

    with pytest.raises(NoGpuSource) as caught:
        reader.read()

    assert list(caught.value.reasons) == ["nvml", "nvidia-smi", "seed"]
    assert str(path) in caught.value.reasons["seed"]
    for source in ("nvml", "nvidia-smi", "seed"):
        assert f"{source}: " in str(caught.value)
