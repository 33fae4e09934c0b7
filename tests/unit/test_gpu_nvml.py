"""NVML source through a fake ``pynvml`` module: conversions, per-value gaps, init failures."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gpu_readers import GpuReader, NoGpuSource
from gpu_readers.nvml import NvmlSource
from schemas.contracts import validate
from tests.unit.fakes.fake_pynvml import MIB, FakeGpu, FakeNvml
from tests.unit.fakes.fake_smi import install_fake_smi

# NVML return codes (nvml.h), spelled out so a test reads as the situation it models.
NOT_SUPPORTED = 3
NO_PERMISSION = 4
DRIVER_NOT_LOADED = 9
LIBRARY_NOT_FOUND = 12
FUNCTION_NOT_FOUND = 13
GPU_IS_LOST = 15

FIXED_NOW = datetime(2026, 11, 23, 10, 32, 22, 123000, tzinfo=UTC)


def skip_lines(caplog: pytest.LogCaptureFixture, source: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.getMessage().startswith(f"gpu source skipped source={source} ")
    ]


@pytest.fixture
def two_gpus() -> FakeNvml:
    return FakeNvml([FakeGpu.a100(0), FakeGpu.rtx3090(1)])


def test_two_gpus_become_two_complete_events(two_gpus: FakeNvml) -> None:
    reader = GpuReader("inference-01", pynvml_module=two_gpus.module, clock=lambda: FIXED_NOW)

    events = reader.read()

    assert reader.active_source == "nvml"
    assert reader.skipped_sources == {}
    assert [e["gpu_index"] for e in events] == [0, 1]
    a100, rtx = events
    assert a100 == {
        "schema": "gpu.metrics.v1",
        "event_id": a100["event_id"],
        "ts": "2026-11-23T10:32:22.123000Z",
        "host": "inference-01",
        "gpu_uuid": "GPU-5f1c2d3e-aaaa-bbbb-cccc-0123456789a0",
        "gpu_index": 0,
        "source": "nvml",
        "gpu_name": "NVIDIA A100-SXM4-40GB",
        "utilization_gpu_pct": 87.0,
        "memory_used_mib": 30120.0,  # bytes -> MiB
        "memory_total_mib": 40960.0,
        "power_draw_w": 312.451,  # milliwatts -> watts
        "temperature_gpu_c": 64.0,
        "clock_sm_mhz": 1410.0,
        "power_limit_w": 400.0,
        "energy_total_mj": 987_654_321,
        "unsupported_fields": [],
    }
    assert rtx["gpu_name"] == "NVIDIA GeForce RTX 3090"
    assert rtx["memory_used_mib"] == 11000.5
    # The price comes from the processor's price map for real devices, never from NVML.
    assert all("price_per_hour_usd" not in e for e in events)
    assert a100["event_id"] != rtx["event_id"]
    for event in events:
        validate(event)


def test_nvml_is_initialised_once_and_shut_down_on_close(two_gpus: FakeNvml) -> None:
    with GpuReader("h", pynvml_module=two_gpus.module) as reader:
        for _ in range(3):
            reader.read()
        assert two_gpus.init_calls == 1
    assert two_gpus.shutdown_calls == 1


def test_bytes_from_old_bindings_are_decoded() -> None:
    uuid = b"GPU-0123abcd-0000-1111-2222-333344445555"
    gpu = FakeGpu.a100(0, name=b"Tesla V100-SXM2-16GB", uuid=uuid)
    [event] = GpuReader("h", pynvml_module=FakeNvml([gpu]).module).read()

    assert event["gpu_name"] == "Tesla V100-SXM2-16GB"
    assert event["gpu_uuid"] == "GPU-0123abcd-0000-1111-2222-333344445555"
    validate(event)


def test_not_supported_value_is_null_and_named_never_zero() -> None:
    nvml = FakeNvml(
        [
            FakeGpu.a100(0),
            FakeGpu.rtx3090(1, errors={"nvmlDeviceGetPowerUsage": NOT_SUPPORTED}),
        ]
    )
    first, second = GpuReader("h", pynvml_module=nvml.module).read()

    assert second["power_draw_w"] is None
    assert second["unsupported_fields"] == ["power_draw_w"]
    assert second["utilization_gpu_pct"] == 41.0  # the rest of the device still reports
    assert first["unsupported_fields"] == []
    validate(first)
    validate(second)


def test_no_permission_and_missing_calls_are_per_value() -> None:
    gpu = FakeGpu.a100(
        0,
        errors={
            "nvmlDeviceGetTemperature": NO_PERMISSION,
            "nvmlDeviceGetMemoryInfo": NOT_SUPPORTED,
            "nvmlDeviceGetEnforcedPowerLimit": FUNCTION_NOT_FOUND,
        },
    )
    # An old nvidia-ml-py without the total-energy call.
    nvml = FakeNvml([gpu], missing={"nvmlDeviceGetTotalEnergyConsumption"})

    [event] = GpuReader("h", pynvml_module=nvml.module).read()

    for field in (
        "temperature_gpu_c",
        "memory_used_mib",
        "memory_total_mib",
        "power_limit_w",
        "energy_total_mj",
    ):
        assert event[field] is None
        assert field in event["unsupported_fields"]
    assert event["power_draw_w"] == 312.451
    validate(event)


def test_gpu_lost_falls_back_to_smi_and_stops_asking_nvml(
    two_gpus: FakeNvml,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gpu_readers")
    install_fake_smi(tmp_path, monkeypatch, stdout="query_multi_gpu.csv")
    reader = GpuReader("h", pynvml_module=two_gpus.module)
    assert reader.read()[0]["source"] == "nvml"

    two_gpus.lose(1)
    events = reader.read()
    calls_after_fallback = len(two_gpus.calls)
    reader.read()

    assert {e["source"] for e in events} == {"nvidia-smi"}
    assert reader.active_source == "nvidia-smi"
    assert "GPU is lost" in reader.skipped_sources["nvml"]
    assert reader.skipped_sources["nvml"].startswith("GPU 1:")
    [line] = skip_lines(caplog, "nvml")
    assert "was_active=true" in line
    assert two_gpus.shutdown_calls == 1  # NVML released when abandoned
    assert len(two_gpus.calls) == calls_after_fallback  # not retried on every read


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (LIBRARY_NOT_FOUND, "NVML shared library not found (libnvidia-ml.so.1)"),
        (DRIVER_NOT_LOADED, "NVIDIA driver not loaded"),
        (NO_PERMISSION, "no permission to access the GPU devices (/dev/nvidia*)"),
    ],
)
def test_init_failure_falls_back_to_smi_logged_once(
    code: int,
    reason: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gpu_readers")
    install_fake_smi(tmp_path, monkeypatch, stdout="query_multi_gpu.csv")
    nvml = FakeNvml([FakeGpu.a100(0)], init_error=code)
    reader = GpuReader("h", pynvml_module=nvml.module)

    batches = [reader.read() for _ in range(4)]

    assert all(e["source"] == "nvidia-smi" for batch in batches for e in batch)
    assert reader.active_source == "nvidia-smi"
    assert reader.skipped_sources == {"nvml": reason}
    assert skip_lines(caplog, "nvml") == [
        f'gpu source skipped source=nvml reason="{reason}" was_active=false'
    ]
    assert nvml.init_calls == 1


def test_missing_bindings_are_a_reason_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    install_fake_smi(tmp_path, monkeypatch, stdout="query_multi_gpu.csv")
    reader = GpuReader("h")

    reader.read()

    assert reader.skipped_sources["nvml"] == "nvidia-ml-py is not installed (cannot import pynvml)"


def test_no_gpus_and_count_failure_are_specific() -> None:
    empty = NvmlSource(FakeNvml([]).module)
    broken = NvmlSource(FakeNvml([FakeGpu.a100(0)], count_error=DRIVER_NOT_LOADED).module)

    with pytest.raises(Exception, match="NVML reports no GPUs"):
        empty.read()
    with pytest.raises(Exception, match="cannot count GPUs: NVIDIA driver not loaded"):
        broken.read()


def test_all_sources_failing_lists_each_reason(tmp_path: Path) -> None:
    nvml = FakeNvml([], init_error=DRIVER_NOT_LOADED)
    reader = GpuReader(
        "h",
        pynvml_module=nvml.module,
        nvidia_smi=str(tmp_path / "no-such-nvidia-smi"),
        seed_file=tmp_path / "missing.json",
    )

    with pytest.raises(NoGpuSource) as caught:
        reader.read()

    assert set(caught.value.reasons) == {"nvml", "nvidia-smi", "seed"}
    assert "nvml: NVIDIA driver not loaded" in str(caught.value)
    assert reader.active_source is None


def test_memory_is_reported_in_mib_with_two_decimals() -> None:
    gpu = FakeGpu.a100(0, memory_used_bytes=1536 * MIB + 12345)
    [event] = GpuReader("h", pynvml_module=FakeNvml([gpu]).module).read()

    assert event["memory_used_mib"] == 1536.01
