"""nvidia-smi source through a fake executable on PATH: shapes, null tokens, failures."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from gpu_readers import GpuReader, SourceUnavailable
from gpu_readers.smi import NULL_TOKENS, SmiSource, parse_smi_query, parse_smi_value, smi_command
from schemas.contracts import validate
from tests.unit.fakes.fake_pynvml import FakeNvml
from tests.unit.fakes.fake_smi import OUTPUTS_DIR, hide_smi, install_fake_smi

LIBRARY_NOT_FOUND = 12
QUERY = (
    "--query-gpu=index,uuid,name,utilization.gpu,memory.used,memory.total,"
    "power.draw,temperature.gpu,clocks.sm,power.limit"
)


def smi_reader(tmp_path: Path, smi_timeout_s: float = 5.0) -> GpuReader:
    """A reader whose NVML is missing, so nvidia-smi is the first source that can work."""
    no_nvml = FakeNvml([], init_error=LIBRARY_NOT_FOUND).module
    return GpuReader(
        "inference-01",
        pynvml_module=no_nvml,
        seed_file=tmp_path / "no-seed.json",
        smi_timeout_s=smi_timeout_s,
    )


def test_several_gpus_and_a_mig_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    smi = install_fake_smi(tmp_path, monkeypatch, stdout="query_multi_gpu.csv")
    reader = smi_reader(tmp_path)

    events = reader.read()

    assert smi.argv() == [QUERY, "--format=csv,noheader,nounits"]
    assert reader.active_source == "nvidia-smi"
    assert [e["gpu_index"] for e in events] == [0, 1, 2, 3]
    first = events[0]
    assert first["gpu_uuid"] == "GPU-5f1c2d3e-aaaa-bbbb-cccc-0123456789a0"
    assert first["gpu_name"] == "NVIDIA A100-SXM4-40GB"
    assert (
        first["utilization_gpu_pct"],
        first["memory_used_mib"],
        first["memory_total_mib"],
        first["power_draw_w"],
        first["temperature_gpu_c"],
        first["clock_sm_mhz"],
        first["power_limit_w"],
    ) == (87, 30120, 40960, 312.45, 64, 1410, 400.0)
    assert first["unsupported_fields"] == []
    assert "energy_total_mj" not in first  # nvidia-smi is not asked for it
    assert "price_per_hour_usd" not in first
    mig = events[3]
    assert mig["gpu_uuid"] == "MIG-1a2b3c4d-5e6f-5a7b-8c9d-0e1f2a3b4c5d"
    assert mig["memory_total_mib"] == 19968
    assert mig["unsupported_fields"] == [
        "utilization_gpu_pct",
        "power_draw_w",
        "temperature_gpu_c",
        "clock_sm_mhz",
        "power_limit_w",
    ]
    assert all(mig[field] is None for field in mig["unsupported_fields"])
    for event in events:
        assert event["source"] == "nvidia-smi"
        validate(event)


def test_every_null_token_is_null_never_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake_smi(tmp_path, monkeypatch, stdout="query_null_tokens.csv")

    t4, gtx = smi_reader(tmp_path).read()

    assert t4["utilization_gpu_pct"] is None  # [N/A]
    assert t4["power_draw_w"] is None  # [Not Supported]
    assert t4["unsupported_fields"] == ["utilization_gpu_pct", "power_draw_w"]
    assert gtx["utilization_gpu_pct"] is None  # N/A
    assert gtx["power_draw_w"] is None  # [Insufficient Permissions]
    assert gtx["temperature_gpu_c"] is None  # [Unknown Error]
    assert gtx["power_limit_w"] is None  # [N/A]
    assert gtx["unsupported_fields"] == [
        "utilization_gpu_pct",
        "power_draw_w",
        "temperature_gpu_c",
        "power_limit_w",
    ]
    assert gtx["clock_sm_mhz"] == 1607
    validate(t4)
    validate(gtx)


def test_the_fixture_uses_every_documented_null_token() -> None:
    text = (OUTPUTS_DIR / "query_null_tokens.csv").read_text()
    cells = {cell.strip() for line in text.splitlines() for cell in line.split(",")}
    assert cells >= NULL_TOKENS


def test_non_zero_exit_reports_stderr_and_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gpu_readers")
    install_fake_smi(tmp_path, monkeypatch, stderr="driver_failure_stderr.txt", exit_code=9)
    seed = tmp_path / "seed.json"
    seed.write_text(
        '[{"gpu_index": 0, "name": "NVIDIA L4", "utilization": 0.5, "mem_used_mb": 100,'
        ' "mem_total_mb": 23034, "power_w": 40, "price_per_hour_usd": 0.7}]'
    )
    no_nvml = FakeNvml([], init_error=LIBRARY_NOT_FOUND).module
    reader = GpuReader("h", pynvml_module=no_nvml, seed_file=seed)

    for _ in range(3):
        [event] = reader.read()

    assert event["source"] == "seed"
    reason = reader.skipped_sources["nvidia-smi"]
    assert reason.startswith("nvidia-smi exited with status 9: NVIDIA-SMI has failed because")
    skipped = [r.getMessage() for r in caplog.records if "source=nvidia-smi" in r.getMessage()]
    assert len(skipped) == 1


def test_failure_on_stdout_only_is_still_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake_smi(
        tmp_path,
        monkeypatch,
        stdout="Failed to initialize NVML: Unknown Error\n",
        exit_code=255,
    )

    with pytest.raises(SourceUnavailable, match=r"status 255: Failed to initialize NVML"):
        SmiSource().read()


@pytest.mark.parametrize(
    ("stdout", "detail"),
    [
        ("garbage_table.txt", "line 1: expected 10 fields, got 1"),
        (
            "0, GPU-1, NVIDIA A10, lots, 1, 2, 3, 4, 5, 6\n",
            "line 1: utilization.gpu: not a number: 'lots'",
        ),
        ("0, GPU-1, NVIDIA A10, nan, 1, 2, 3, 4, 5, 6\n", "not a number: 'nan'"),
        ("0, [N/A], NVIDIA A10, 1, 1, 2, 3, 4, 5, 6\n", "uuid: missing GPU UUID"),
        ("\n\n", "no GPU rows"),
        ("0, GPU-" + "f" * 130 + ", NVIDIA A10, 1, 1, 2, 3, 4, 5, 6\n", "longer than 128"),
    ],
)
def test_garbage_output_is_a_parse_error(
    stdout: str, detail: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake_smi(tmp_path, monkeypatch, stdout=stdout)

    with pytest.raises(SourceUnavailable) as caught:
        SmiSource().read()

    assert caught.value.reason.startswith("cannot parse nvidia-smi output: ")
    assert detail in caught.value.reason


def test_hang_is_cut_by_the_timeout_and_leaves_no_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    smi = install_fake_smi(tmp_path, monkeypatch, hang=True)
    reader = smi_reader(tmp_path, smi_timeout_s=0.5)

    started = time.monotonic()
    with pytest.raises(Exception, match="no GPU source works"):
        reader.read()
    elapsed = time.monotonic() - started

    assert reader.skipped_sources["nvidia-smi"] == "nvidia-smi timed out after 0.5s"
    assert elapsed < 5
    assert smi.pid() is not None
    assert not smi.still_running()  # killed and reaped, not left behind


def test_missing_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hide_smi(tmp_path, monkeypatch)

    with pytest.raises(SourceUnavailable, match=r"nvidia-smi not found \(binary missing\)"):
        SmiSource().read()


def test_binary_without_execute_permission(tmp_path: Path) -> None:
    binary = tmp_path / "nvidia-smi"
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o644)

    with pytest.raises(SourceUnavailable, match="no permission to execute"):
        SmiSource(str(binary)).read()


def test_explicit_path_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    smi = install_fake_smi(tmp_path, monkeypatch, stdout="query_multi_gpu.csv")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # only the explicit path can find it now

    readings = SmiSource(str(smi.bin_dir / "nvidia-smi")).read()

    assert len(readings) == 4


def test_smi_command_is_the_documented_query() -> None:
    assert smi_command("/usr/bin/nvidia-smi") == [
        "/usr/bin/nvidia-smi",
        QUERY,
        "--format=csv,noheader,nounits",
    ]


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timeout"):
        SmiSource(timeout_s=0)


@pytest.mark.parametrize(
    ("cell", "value"),
    [
        ("45", 45),
        ("250.10", 250.1),
        ("45 %", 45),
        ("1234 MiB", 1234),
        ("250.10 W", 250.1),
        ("1410 MHz", 1410),
        ("[N/A]", None),
        ("N/A", None),
        ("[Not Supported]", None),
        ("[Insufficient Permissions]", None),
        ("[Unknown Error]", None),
        ("[GPU requires reset]", None),  # any bracketed token: nvidia-smi's "no value"
    ],
)
def test_parse_smi_value(cell: str, value: float | None) -> None:
    assert parse_smi_value(cell, "x") == value


@pytest.mark.parametrize("cell", ["", "abc", "nan", "inf", "1,5", "12 furlongs"])
def test_parse_smi_value_rejects_garbage(cell: str) -> None:
    with pytest.raises(ValueError, match="not a number"):
        parse_smi_value(cell, "power.draw")


def test_parse_smi_query_skips_blank_lines() -> None:
    text = "\n" + (OUTPUTS_DIR / "query_multi_gpu.csv").read_text() + "\n\n"
    assert [r.gpu_index for r in parse_smi_query(text)] == [0, 1, 2, 3]
