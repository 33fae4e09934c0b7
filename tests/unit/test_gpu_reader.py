"""GpuReader: source order, once-only skip logging, event shape, reset and thread safety."""

from __future__ import annotations

import logging
import random
import threading
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from gpu_readers import SOURCE_ORDER, GpuReader, GpuReaderError, NoGpuSource
from schemas.contracts import parse_ts, validate
from tests.unit.fakes.fake_pynvml import FakeGpu, FakeNvml
from tests.unit.fakes.fake_smi import install_fake_smi

LIBRARY_NOT_FOUND = 12
DRIVER_NOT_LOADED = 9


def messages(caplog: pytest.LogCaptureFixture, prefix: str) -> list[str]:
    return [m for m in caplog.messages if m.startswith(prefix)]


def test_order_is_nvml_then_smi_then_seed() -> None:
    assert SOURCE_ORDER == ("nvml", "nvidia-smi", "seed")


def test_nvml_wins_when_it_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    smi = install_fake_smi(tmp_path, monkeypatch, stdout="query_multi_gpu.csv")
    reader = GpuReader("h", pynvml_module=FakeNvml([FakeGpu.a100(0)]).module)

    [event] = reader.read()

    assert event["source"] == "nvml"
    assert smi.argv() == []  # nvidia-smi never ran


@pytest.mark.parametrize("source", SOURCE_ORDER)
def test_every_source_produces_valid_events(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake_smi(tmp_path, monkeypatch, stdout="query_multi_gpu.csv")
    nvml = FakeNvml([FakeGpu.a100(0), FakeGpu.rtx3090(1)])
    if source != "nvml":
        nvml.init_error = LIBRARY_NOT_FOUND
    reader = GpuReader(
        "inference-01",
        pynvml_module=nvml.module,
        nvidia_smi="nvidia-smi" if source != "seed" else str(tmp_path / "absent"),
        rng=random.Random(3),
    )

    for _ in range(5):
        events = reader.read()
        assert events
        assert {e["source"] for e in events} == {source}
        assert len({e["ts"] for e in events}) == 1  # one read, one instant
        for event in events:
            assert validate(event) is event
            assert uuid.UUID(event["event_id"]).version == 4
            assert event["ts"].endswith("Z")
            assert set(event["unsupported_fields"]) == {k for k, v in event.items() if v is None}


def test_event_ids_are_fresh_on_every_read() -> None:
    reader = GpuReader("h", pynvml_module=FakeNvml([FakeGpu.a100(0)]).module)

    ids = {reader.read()[0]["event_id"] for _ in range(50)}

    assert len(ids) == 50


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2026, 11, 23, 10, 0, 0, 250000, tzinfo=UTC), "2026-11-23T10:00:00.250000Z"),
        (
            datetime(2026, 11, 23, 12, 0, 0, tzinfo=timezone(timedelta(hours=2))),
            "2026-11-23T10:00:00.000000Z",
        ),
    ],
)
def test_ts_comes_from_the_clock_in_utc(moment: datetime, expected: str) -> None:
    reader = GpuReader("h", pynvml_module=FakeNvml([FakeGpu.a100(0)]).module, clock=lambda: moment)

    [event] = reader.read()

    assert event["ts"] == expected
    assert parse_ts(event["ts"]) == parse_ts(expected)


@pytest.mark.parametrize("host", ["", "two words", "a/b", "x" * 254])
def test_host_must_fit_the_contract(host: str) -> None:
    with pytest.raises(ValueError, match="host"):
        GpuReader(host)


def test_skips_are_logged_once_across_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gpu_readers")
    nvml = FakeNvml([], init_error=DRIVER_NOT_LOADED)
    reader = GpuReader("h", pynvml_module=nvml.module, nvidia_smi=str(tmp_path / "absent"))

    for _ in range(5):
        reader.read()

    assert messages(caplog, "gpu source skipped") == [
        'gpu source skipped source=nvml reason="NVIDIA driver not loaded" was_active=false',
        f'gpu source skipped source=nvidia-smi reason="{tmp_path / "absent"} not found '
        '(binary missing)" was_active=false',
    ]
    assert messages(caplog, "gpu source active") == ["gpu source active source=seed gpus=2"]
    assert reader.active_source == "seed"
    assert list(reader.skipped_sources) == ["nvml", "nvidia-smi"]


def test_no_source_raises_under_the_package_root(tmp_path: Path) -> None:
    reader = GpuReader(
        "h",
        pynvml_module=FakeNvml([], init_error=LIBRARY_NOT_FOUND).module,
        nvidia_smi=str(tmp_path / "absent"),
        seed_file=tmp_path / "absent.json",
    )

    for _ in range(2):  # stays failed, and says why each time
        with pytest.raises(GpuReaderError) as caught:
            reader.read()
        assert isinstance(caught.value, NoGpuSource)
        assert "nvml: NVML shared library not found" in str(caught.value)
        assert "seed: " in str(caught.value)


def test_reset_tries_nvml_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gpu_readers")
    install_fake_smi(tmp_path, monkeypatch, stdout="query_multi_gpu.csv")
    nvml = FakeNvml([FakeGpu.a100(0)], init_error=DRIVER_NOT_LOADED)
    reader = GpuReader("h", pynvml_module=nvml.module)
    assert reader.read()[0]["source"] == "nvidia-smi"

    nvml.init_error = None  # the driver was loaded
    assert reader.read()[0]["source"] == "nvidia-smi"  # not retried on its own
    reader.reset()

    assert reader.read()[0]["source"] == "nvml"
    assert reader.skipped_sources == {}
    assert messages(caplog, "gpu source active") == [
        "gpu source active source=nvidia-smi gpus=4",
        "gpu source active source=nvml gpus=1",
    ]


def test_out_of_range_value_is_null_and_warned_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="gpu_readers")
    gpu = FakeGpu.a100(0, uuid="GPU-out-of-range-test", power_mw=4_294_967_295)  # 0xFFFFFFFF
    reader = GpuReader("h", pynvml_module=FakeNvml([gpu]).module)

    for _ in range(3):
        [event] = reader.read()

    assert event["power_draw_w"] is None
    assert event["unsupported_fields"] == ["power_draw_w"]
    validate(event)
    assert messages(caplog, "gpu value out of range") == [
        "gpu value out of range, reported as null gpu=GPU-out-of-range-test field=power_draw_w "
        "value=4294967.295"
    ]


def test_concurrent_reads_share_one_nvml_init() -> None:
    nvml = FakeNvml([FakeGpu.a100(0), FakeGpu.rtx3090(1)])
    reader = GpuReader("h", pynvml_module=nvml.module)
    results: list[int] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(20):
            events = reader.read()
            for event in events:
                validate(event)
            with lock:
                results.append(len(events))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert results == [2] * 80
    assert nvml.init_calls == 1


def test_close_releases_nvml_and_the_reader_can_read_again() -> None:
    nvml = FakeNvml([FakeGpu.a100(0)])
    reader = GpuReader("h", pynvml_module=nvml.module)
    reader.read()

    reader.close()
    reader.close()  # idempotent
    reader.read()

    assert (nvml.init_calls, nvml.shutdown_calls) == (2, 1)


def test_an_unexpected_error_in_a_source_falls_back_with_its_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gpu_readers")
    install_fake_smi(tmp_path, monkeypatch, stdout="query_multi_gpu.csv")
    nvml = FakeNvml([FakeGpu.a100(0)])

    def broken(handle: object) -> object:
        raise OSError("ctypes: bad handle")

    monkeypatch.setattr(nvml.module, "nvmlDeviceGetPowerUsage", broken)
    reader = GpuReader("h", pynvml_module=nvml.module)

    assert reader.read()[0]["source"] == "nvidia-smi"
    assert reader.skipped_sources["nvml"] == "unexpected OSError: ctypes: bad handle"
    [record] = [r for r in caplog.records if "source=nvml" in r.getMessage()]
    assert record.exc_info is not None
