"""Replay files: format sniffing, whole-file validation with every bad line, CSV logs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest

from producers.cli import EXIT_USAGE, build_parser, main
from producers.exceptions import ReplayFileError
from producers.replay import detect_format, load_replay, parse_jsonl, parse_smi_csv
from schemas.contracts import validation_errors

TOKEN: dict[str, Any] = {
    "schema": "token.usage.v1",
    "event_id": "0b6f8a5e-3c1d-4c7e-9a55-1f2e3d4c5b6a",
    "ts": "2026-11-23T10:00:00.000Z",
    "host": "inference-01",
    "gpu_uuid": "GPU-aaaa",
    "gpu_index": 0,
    "model": "通义千问-7b",
    "input_tokens": 812,
    "output_tokens": 164,
    "latency_ms": 1530.5,
}
GPU: dict[str, Any] = {
    "schema": "gpu.metrics.v1",
    "event_id": "7d1e2f3a-4b5c-4d6e-8f90-a1b2c3d4e5f6",
    "ts": "2026-11-23T09:59:59.500Z",
    "host": "inference-01",
    "gpu_uuid": "GPU-aaaa",
    "gpu_index": 0,
    "source": "nvml",
    "gpu_name": "NVIDIA A100-SXM4-40GB",
    "utilization_gpu_pct": 87.0,
    "memory_used_mib": 30120,
    "memory_total_mib": 40960,
    "power_draw_w": 312.4,
    "temperature_gpu_c": 64,
    "clock_sm_mhz": 1410,
}
SMI_LOG = """\
timestamp, index, uuid, name, utilization.gpu [%], memory.used [MiB], memory.total [MiB], \
power.draw [W], temperature.gpu, clocks.current.sm [MHz]
2026/11/23 10:32:22.123, 0, GPU-5f1c2d3e-aaaa, NVIDIA A100-SXM4-40GB, 45 %, 1234 MiB, \
40960 MiB, 250.10 W, 54, 1410 MHz
2026/11/23 10:32:22.125, 1, GPU-0d9e8f7a-1111, NVIDIA GeForce RTX 3090, 0 %, 2 MiB, \
24576 MiB, [N/A], 38, 210 MHz
2026/11/23 10:32:23.127, 0, GPU-5f1c2d3e-aaaa, NVIDIA A100-SXM4-40GB, 47 %, 1236 MiB, \
40960 MiB, 251.93 W, 54, 1410 MHz
"""


def token(**changes: Any) -> dict[str, Any]:
    event = copy.deepcopy(TOKEN)
    event.update(changes)
    return event


def jsonl(*events: Any) -> str:
    return "".join(orjson.dumps(e).decode() + "\n" for e in events)


def test_detect_format() -> None:
    assert detect_format('\n  {"schema": 1}\n') == "jsonl"
    assert detect_format("\ufeff{}") == "jsonl"
    assert detect_format(SMI_LOG) == "smi-csv"
    assert detect_format("2026/11/23 10:32:22.123, 0, GPU-x") == "smi-csv"


def test_jsonl_keeps_events_and_ids_in_file_order() -> None:
    second = token(event_id="2b6f8a5e-3c1d-4c7e-9a55-1f2e3d4c5b6a", ts="2026-11-23T10:00:01Z")
    events = parse_jsonl(jsonl(GPU, TOKEN, second) + "\n   \n")
    assert events == [GPU, TOKEN, second]


def test_jsonl_normalises_aliases() -> None:
    aliased = token()
    aliased["prompt_tokens"] = aliased.pop("input_tokens")
    aliased["completion_tokens"] = aliased.pop("output_tokens")
    (event,) = parse_jsonl(jsonl(aliased))
    assert (event["input_tokens"], event["output_tokens"]) == (812, 164)
    assert "prompt_tokens" not in event


def test_jsonl_lists_every_bad_line_with_its_number() -> None:
    text = (
        jsonl(TOKEN)  # 1 ok
        + "{not json\n"  # 2
        + jsonl(token(input_tokens=-1, model=""))  # 3: two reasons
        + "\n"  # 4 blank, ignored
        + jsonl([1, 2])  # 5
        + jsonl({"schema": "token.usage.v9"})  # 6
        + jsonl(GPU)  # 7 ok
    )
    with pytest.raises(ReplayFileError) as info:
        parse_jsonl(text, "events.jsonl")
    message = str(info.value)
    assert message.startswith("events.jsonl: 4 invalid line(s), nothing was sent:")
    lines = message.splitlines()[1:]
    assert [line.split(":")[0].strip() for line in lines] == [
        "line 2",
        "line 3",
        "line 5",
        "line 6",
    ]
    assert "malformed JSON" in lines[0]
    assert "input_tokens" in lines[1]
    assert "model" in lines[1]
    assert "must be a JSON object" in lines[2]
    assert "unknown schema 'token.usage.v9'" in lines[3]


def test_jsonl_error_list_is_capped() -> None:
    with pytest.raises(ReplayFileError) as info:
        parse_jsonl("x\n" * 1500)
    message = str(info.value)
    assert "1500 invalid line(s)" in message
    assert message.endswith("... and 500 more bad line(s)")


def test_empty_file_is_an_error() -> None:
    with pytest.raises(ReplayFileError, match="no events"):
        parse_jsonl("\n\n")


def test_smi_csv_becomes_valid_gpu_events_for_the_host() -> None:
    events = parse_smi_csv(SMI_LOG, "inference-09")
    assert len(events) == 3
    assert all(validation_errors(e) == [] for e in events)
    assert {e["host"] for e in events} == {"inference-09"}
    assert [e["gpu_uuid"] for e in events] == [
        "GPU-5f1c2d3e-aaaa",
        "GPU-0d9e8f7a-1111",
        "GPU-5f1c2d3e-aaaa",
    ]
    assert events[1]["power_draw_w"] is None
    # Event ids derive from host, GPU and ts: the same log replays to the same ids.
    assert [e["event_id"] for e in events] == [
        e["event_id"] for e in parse_smi_csv(SMI_LOG, "inference-09")
    ]


def test_smi_csv_bad_row_is_named() -> None:
    bad = SMI_LOG + "2026/11/23 10:32:24.000, 0, GPU-5f1c2d3e-aaaa\n"
    with pytest.raises(ReplayFileError, match=r"gpu\.csv: line 5: .*nothing was sent"):
        parse_smi_csv(bad, "inference-09", "gpu.csv")


def test_load_replay_computes_offsets(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(
        jsonl(
            GPU,
            token(ts="2026-11-23T10:00:00.000Z"),
            token(ts="2026-11-23T10:00:02.500+00:00"),
            token(ts="2026-11-23T10:00:01Z"),  # out of order: due with its predecessor
        ),
        encoding="utf-8",
    )
    replay = load_replay(path, host="ignored-for-jsonl")
    assert replay.format == "jsonl"
    assert replay.offsets == [0.0, 0.5, 3.0, 3.0]


def test_load_replay_sniffs_csv(tmp_path: Path) -> None:
    path = tmp_path / "gpu.log"
    path.write_text(SMI_LOG, encoding="utf-8")
    replay = load_replay(path, host="inference-09")
    assert replay.format == "smi-csv"
    assert replay.offsets == pytest.approx([0.0, 0.002, 1.004])


def test_load_replay_format_can_be_forced(tmp_path: Path) -> None:
    path = tmp_path / "gpu.jsonl"
    path.write_text(SMI_LOG, encoding="utf-8")
    with pytest.raises(ReplayFileError, match="malformed JSON"):
        load_replay(path, host="h", fmt="jsonl")


def test_missing_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(ReplayFileError, match="cannot read"):
        load_replay(tmp_path / "nope.jsonl", host="h")
    binary = tmp_path / "bin.jsonl"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ReplayFileError, match="not UTF-8"):
        load_replay(binary, host="h")


def test_cli_rejects_an_invalid_file_before_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # main() configures the root logger for a CLI process; not inside the test session.
    monkeypatch.setattr("producers.cli.configure_logging", lambda level, fmt: None)
    path = tmp_path / "bad.jsonl"
    path.write_text(jsonl(TOKEN) + "{oops\n" + jsonl(token(latency_ms=-5)), encoding="utf-8")
    # An unreachable broker: the file is rejected first, so this returns at once with 2.
    code = main(["replay", str(path), "--bootstrap", "127.0.0.1:1", "--connect-timeout", "30"])
    assert code == EXIT_USAGE
    err = capsys.readouterr().err
    assert "2 invalid line(s), nothing was sent" in err
    assert "line 2: malformed JSON" in err
    assert "line 3: latency_ms" in err


@pytest.mark.parametrize(
    ("argv", "loops"),
    [([], 1), (["--loop"], 0), (["--loops", "3"], 3), (["--loops", "0"], 0)],
)
def test_cli_replay_loop_flags(argv: list[str], loops: int) -> None:
    args = build_parser().parse_args(["replay", "f.jsonl", *argv])
    assert args.loops == loops
    assert (args.speed, args.new_ids, args.retime, args.format) == (1.0, False, False, "auto")
