"""parse_smi_log: nvidia-smi CSV logs (with header and units, or without) -> events."""

from __future__ import annotations

import pytest

from gpu_readers import GpuReaderError, SmiLogParseError, parse_smi_log
from schemas.contracts import validate
from tests.unit.fakes.fake_smi import LOGS_DIR

A100 = "GPU-5f1c2d3e-aaaa-bbbb-cccc-0123456789a0"
HEADER = (
    "timestamp, index, uuid, name, utilization.gpu [%], memory.used [MiB], memory.total [MiB], "
    "power.draw [W], temperature.gpu, clocks.current.sm [MHz]"
)
ROW = (
    f"2026/11/23 10:32:22.123, 0, {A100}, NVIDIA A100-SXM4-40GB, 45 %, 1234 MiB, 40960 MiB, "
    "250.10 W, 54, 1410 MHz"
)


def test_log_with_header_and_units() -> None:
    text = (LOGS_DIR / "with_header.csv").read_text()

    events = list(parse_smi_log(text, "inference-01"))

    assert len(events) == 4
    first = events[0]
    assert first["ts"] == "2026-11-23T10:32:22.123000Z"  # the row's time, taken as UTC
    assert first["source"] == "nvidia-smi"
    assert first["host"] == "inference-01"
    assert (first["gpu_index"], first["gpu_uuid"], first["gpu_name"]) == (
        0,
        A100,
        "NVIDIA A100-SXM4-40GB",
    )
    assert (
        first["utilization_gpu_pct"],
        first["memory_used_mib"],
        first["memory_total_mib"],
        first["power_draw_w"],
        first["temperature_gpu_c"],
        first["clock_sm_mhz"],
    ) == (45, 1234, 40960, 250.1, 54, 1410)
    assert first["unsupported_fields"] == []
    assert "power_limit_w" not in first  # the log did not record it
    rtx = events[1]
    assert rtx["power_draw_w"] is None
    assert rtx["unsupported_fields"] == ["power_draw_w"]
    assert [e["ts"] for e in events[2:]] == [
        "2026-11-23T10:32:23.127000Z",
        "2026-11-23T10:32:23.129000Z",
    ]
    for event in events:
        validate(event)


def test_log_without_header_in_the_readers_column_order() -> None:
    text = (LOGS_DIR / "noheader.csv").read_text()

    events = list(parse_smi_log(text, "inference-01"))

    assert [e["gpu_index"] for e in events] == [0, 3, 0]
    assert events[0]["power_limit_w"] == 400.0
    assert events[0]["utilization_gpu_pct"] == 45
    mig = events[1]
    assert mig["gpu_uuid"].startswith("MIG-")
    assert mig["unsupported_fields"] == [
        "utilization_gpu_pct",
        "power_draw_w",
        "temperature_gpu_c",
        "clock_sm_mhz",
        "power_limit_w",
    ]
    for event in events:
        validate(event)


def test_header_less_rows_may_omit_power_limit() -> None:
    row = f"2026/11/23 10:32:22, 0, {A100}, NVIDIA A100-SXM4-40GB, 45, 1234, 40960, 250.1, 54, 1410"

    [event] = parse_smi_log(row, "h")

    assert event["ts"] == "2026-11-23T10:32:22.000000Z"
    assert "power_limit_w" not in event
    validate(event)


def test_replayed_event_ids_are_deterministic() -> None:
    text = (LOGS_DIR / "with_header.csv").read_text()

    first = [e["event_id"] for e in parse_smi_log(text, "host-a")]
    again = [e["event_id"] for e in parse_smi_log(text, "host-a")]
    other_host = [e["event_id"] for e in parse_smi_log(text, "host-b")]

    assert first == again  # replaying twice stores nothing new (event_id is MongoDB _id)
    assert len(set(first)) == len(first)
    assert not set(first) & set(other_host)


def test_repeated_header_blank_lines_bom_and_extra_columns() -> None:
    header = "\ufefftimestamp, pstate, index, uuid, name, power.draw.instant [W]"
    text = "\n".join(
        [
            header,
            f"2026/11/23 10:00:00.000, P0, 0, {A100}, NVIDIA A100-SXM4-40GB, 300.00 W",
            "",
            "timestamp, index, uuid, name, clocks.sm [MHz]",
            f"2026/11/23 10:00:01.000, 0, {A100}, NVIDIA A100-SXM4-40GB, 1410 MHz",
        ]
    )

    first, second = parse_smi_log(text, "h")

    assert first["power_draw_w"] == 300.0
    assert "pstate" not in first
    assert first["utilization_gpu_pct"] is None  # no such column in this log
    assert "utilization_gpu_pct" in first["unsupported_fields"]
    assert second["clock_sm_mhz"] == 1410
    assert second["power_draw_w"] is None
    validate(first)
    validate(second)


@pytest.mark.parametrize(
    ("lines", "line", "reason"),
    [
        ([HEADER, ROW, "2026/11/23 10:32:23.000, 0, x"], 3, "expected 10 fields like the header"),
        ([HEADER, ROW.replace("45 %", "lots")], 2, "utilization.gpu: not a number: 'lots'"),
        ([HEADER, ROW.replace("2026/11/23", "23.11.2026")], 2, "timestamp: not a date and time"),
        (["timestamp, index, name", "x, 0, A10"], 1, "header lacks column(s) uuid"),
        (["0, 1, 2"], 1, "expected a header or 10 or 11 fields"),
        ([HEADER, ROW.replace(A100, "[N/A]")], 2, "uuid: missing GPU UUID"),
    ],
)
def test_bad_rows_name_their_line(lines: list[str], line: int, reason: str) -> None:
    with pytest.raises(SmiLogParseError) as caught:
        list(parse_smi_log("\n".join(lines), "h"))

    assert caught.value.line == line
    assert reason in caught.value.reason
    assert str(caught.value).startswith(f"line {line}: ")
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, GpuReaderError)


def test_rows_before_a_bad_line_are_yielded() -> None:
    events = parse_smi_log("\n".join([HEADER, ROW, ROW, "garbage"]), "h")

    assert next(events)["gpu_uuid"] == A100
    assert next(events)["gpu_uuid"] == A100
    with pytest.raises(SmiLogParseError, match="line 4"):
        next(events)


def test_invalid_host_fails_at_once() -> None:
    with pytest.raises(ValueError, match="host"):
        parse_smi_log(ROW, "bad/host")
