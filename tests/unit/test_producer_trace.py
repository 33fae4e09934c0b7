"""The Azure trace replay (producers.trace): parsing, placement, latencies, ids, time shift."""

from __future__ import annotations

import hashlib
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from producers.cli import main
from producers.exceptions import ReplayFileError
from producers.fleet import Replica
from producers.trace import (
    TRACE_NAMESPACE,
    AzureTraceReplay,
    TraceMapper,
    read_azure_trace,
    scan_azure_trace,
)
from producers.traffic import GpuTarget
from schemas.contracts import validate

HOST = "inference-01"
GPUS = [GpuTarget(f"GPU-{i}", i) for i in range(3)]
BIG = Replica("llama-3.1-70b-instruct", (GPUS[0], GPUS[1]))
SMALL = Replica("llama-3.1-8b-instruct", (GPUS[2],))
HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
ROWS = (
    "2023-11-16 18:15:46.6805900,1001,500\n"
    "2023-11-16 18:15:50.9951690,396,109\n"
    "\n"
    "2023-11-16 18:15:51.2224670,879,55\n"
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conv.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_rows_are_read_in_order_with_utc_arrivals(tmp_path: Path) -> None:
    requests = list(read_azure_trace(write(tmp_path, HEADER + ROWS)))
    assert [(r.index, r.input_tokens, r.output_tokens) for r in requests] == [
        (0, 1001, 500),
        (1, 396, 109),
        (2, 879, 55),
    ]
    # 7 fractional digits: the 100 ns digit is dropped.
    assert requests[0].arrival == datetime(2023, 11, 16, 18, 15, 46, 680590, tzinfo=UTC)


def test_scan_counts_and_finds_first_and_last(tmp_path: Path) -> None:
    scan = scan_azure_trace(write(tmp_path, HEADER + ROWS))
    assert scan.count == 3
    assert scan.first == datetime(2023, 11, 16, 18, 15, 46, 680590, tzinfo=UTC)
    assert scan.last == datetime(2023, 11, 16, 18, 15, 51, 222467, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a,b,c\n1,2,3\n", "line 1: expected the header TIMESTAMP,ContextTokens,GeneratedTokens"),
        (HEADER + "2023-11-16 18:15:46.68,10\n", "line 2: expected 3 columns, got 2"),
        (HEADER + ROWS + "2023-11-16 18:16:00.1,-1,5\n", "line 6: ContextTokens -1 is outside"),
        (HEADER + "yesterday,1,2\n", "line 2: Invalid isoformat string"),
        (HEADER + "2023-11-16 18:15:46.6,1,x\n", "line 2: invalid literal for int()"),
        (HEADER, "no requests in the trace"),
    ],
)
def test_a_bad_trace_names_its_first_bad_line(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ReplayFileError) as caught:
        scan_azure_trace(path)
    assert str(caught.value).startswith(f"{path}: {expected}"), str(caught.value)


def test_placement_follows_the_documented_hash() -> None:
    mapper = TraceMapper(HOST, [BIG, SMALL], [(SMALL.model, 3.0), (BIG.model, 1.0)], seed=7)
    for index in range(50):
        digest = hashlib.blake2b(f"7:{index}".encode(), digest_size=16).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
        # SMALL holds [0, 3), BIG [3, 4) of the cumulative weights 3 + 1.
        assert mapper.place(index) == (SMALL if u * 4 < 3 else BIG)


def test_the_mix_follows_the_weights_and_replicas_share_a_model() -> None:
    small_a = Replica("m", (GPUS[0],))
    small_b = Replica("m", (GPUS[1],))
    mapper = TraceMapper(HOST, [small_a, small_b, BIG], [("m", 3.0), (BIG.model, 1.0)])
    counts = Counter(mapper.place(i) for i in range(20_000))
    # Expected shares: m 3/4 split over two replicas (3/8 each), BIG 1/4; 2 % tolerance.
    assert counts[small_a] / 20_000 == pytest.approx(0.375, abs=0.02)
    assert counts[small_b] / 20_000 == pytest.approx(0.375, abs=0.02)
    assert counts[BIG] / 20_000 == pytest.approx(0.25, abs=0.02)


def test_latencies_come_from_the_throughput_profile() -> None:
    mapper = TraceMapper(HOST, [BIG, SMALL], [(BIG.model, 1.0)])
    # 70B: 90 ms + 1001 / 2500 s = 90 + 400.4 = 490.4 ms; + 500 / 25 s = 20,000 ms.
    assert mapper.latencies(BIG.model, 1001, 500) == (490.4, 20490.4)
    # 8B: 25 ms + 396 / 8000 s = 25 + 49.5 = 74.5 ms; + 109 / 80 s = 1,362.5 ms.
    assert mapper.latencies(SMALL.model, 396, 109) == (74.5, 1437.0)
    # Unknown model: the generic profile, 50 ms + 1000 / 5000 s = 250 ms; + 50 / 50 s.
    assert mapper.latencies("other", 1000, 50) == (250.0, 1250.0)


def test_a_tensor_parallel_request_becomes_one_event_per_gpu(tmp_path: Path) -> None:
    scan = scan_azure_trace(write(tmp_path, HEADER + ROWS))
    mapper = TraceMapper(HOST, [BIG], [(BIG.model, 1.0)], seed=0, name="conv.csv")
    shift = timedelta(days=1)
    first = list(AzureTraceReplay(scan, mapper, shift).items())[:2]
    events = [e for e, _ in first]
    for e in events:
        validate(e)
    request_uuid = uuid.uuid5(TRACE_NAMESPACE, f"{HOST}/conv.csv/0/0")
    assert [e["event_id"] for e in events] == [
        str(uuid.uuid5(request_uuid, "GPU-0")),
        str(uuid.uuid5(request_uuid, "GPU-1")),
    ]
    # 1001 input + 500 output over 2 GPUs: 501 + 250 and 500 + 250.
    assert [(e["input_tokens"], e["output_tokens"]) for e in events] == [(501, 250), (500, 250)]
    assert {e["request_id"] for e in events} == {"conv-0"}
    assert {e["ts"] for e in events} == {"2023-11-17T18:15:46.680590Z"}
    assert {(e["ttft_ms"], e["latency_ms"]) for e in events} == {(490.4, 20490.4)}


def test_offsets_keep_the_traces_spacing_and_never_go_back(tmp_path: Path) -> None:
    rows = ROWS + "2023-11-16 18:15:50.0,10,10\n"  # earlier than its predecessor
    scan = scan_azure_trace(write(tmp_path, HEADER + rows))
    mapper = TraceMapper(HOST, [SMALL], [(SMALL.model, 1.0)])
    offsets = [offset for _, offset in AzureTraceReplay(scan, mapper, timedelta(0)).items()]
    # 50.995169 - 46.680590 = 4.314579; 51.222467 - 46.680590 = 4.541877.
    assert offsets == pytest.approx([0.0, 4.314579, 4.541877, 4.541877])


def test_replaying_twice_gives_the_same_events(tmp_path: Path) -> None:
    scan = scan_azure_trace(write(tmp_path, HEADER + ROWS))
    mapper = TraceMapper(HOST, [BIG, SMALL], [(SMALL.model, 1.0), (BIG.model, 1.0)])
    replay = AzureTraceReplay(scan, mapper, timedelta(0))
    assert list(replay.items()) == list(replay.items())


def test_cli_rejects_a_bad_trace_before_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, HEADER + ROWS + "2023-11-16 18:16:00.1,5\n")
    # Port 1: nothing listens there; the file is rejected before any connection attempt.
    code = main(["replay", "--format", "azure-trace", str(path), "--bootstrap", "127.0.0.1:1"])
    assert code == 2
    assert f"producers: error: {path}: line 6: expected 3 columns, got 2" in capsys.readouterr().err


def test_cli_reports_a_deployment_that_does_not_fit_the_gpus(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, HEADER + ROWS)
    code = main(
        ["replay", "--format", "azure-trace", str(path), "--bootstrap", "127.0.0.1:1",
         "--deployment", "a=0;b=0;c=99"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "producers: 2 invalid settings:\n" in err
    assert "  PRODUCER_DEPLOYMENT (--deployment)['b']: GPU 0 already serves 'a'\n" in err
    assert "  PRODUCER_DEPLOYMENT (--deployment)['c']: GPU 99 is not on this host (GPUs: " in err


def test_replayed_requests_are_billed_to_the_same_tenant_on_every_gpu_and_replay(
    tmp_path: Path,
) -> None:
    from producers.tenants import TenantMix

    path = write(tmp_path, HEADER + ROWS)
    mix = TenantMix.parse("team-a:1,team-b:1,-:1")
    events = [
        list(
            AzureTraceReplay(
                scan_azure_trace(path),
                TraceMapper(HOST, [BIG, SMALL], [(BIG.model, 1.0)], name=path.name, tenants=mix),
                timedelta(0),
            ).items()
        )
        for _ in range(2)
    ]
    assert events[0] == events[1]
    by_request: dict[str, set[str | None]] = {}
    for event, _ in events[0]:
        validate(dict(event))
        by_request.setdefault(event["request_id"], set()).add(event.get("tenant"))
    # Both GPUs of the tensor-parallel replica carry the request's one tenant.
    assert all(len(tenants) == 1 for tenants in by_request.values())
    key = f"{HOST}/{path.name}/0/0"
    assert by_request[f"{path.stem}-0"] == {mix.pick(key)}


def test_two_hosts_sharing_a_fleet_send_each_request_exactly_once() -> None:
    """--fleet-share: both hosts draw every request from the fleet's whole mix (3:1) and keep
    only those whose model they serve; together they place each request once."""
    mix = [(SMALL.model, 3.0), (BIG.model, 1.0)]
    small_host = TraceMapper("host-a", [SMALL], mix, seed=7, fleet_share=True)
    big_host = TraceMapper("host-b", [BIG], mix, seed=7, fleet_share=True)
    for index in range(200):
        digest = hashlib.blake2b(f"7:{index}".encode(), digest_size=16).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
        small_serves = u * 4 < 3  # SMALL holds [0, 3) of the cumulative weights 3 + 1
        assert (small_host.place(index) is not None) == small_serves
        assert (big_host.place(index) is not None) == (not small_serves)


def test_a_fleet_share_needs_one_deployed_model_in_the_mix() -> None:
    with pytest.raises(ValueError, match="no deployed model in the mix"):
        TraceMapper(HOST, [SMALL], [("other", 1.0)], fleet_share=True)


def test_gpu_readings_repeat_every_interval_of_trace_time(tmp_path: Path) -> None:
    """Arrivals at 0, 4.31, 4.54 s with a 2 s interval: readings at ticks 1 (2 s) and 2 (4 s)
    go out before the request at 4.31 s, stamped first arrival + shift + tick x 2 s."""
    scan = scan_azure_trace(write(tmp_path, HEADER + ROWS))
    mapper = TraceMapper(HOST, [SMALL], [(SMALL.model, 1.0)], name="conv.csv")
    reading = {"schema": "gpu.metrics.v1", "gpu_uuid": "GPU-2", "event_id": "x", "ts": "y"}
    shift = timedelta(hours=1)
    replay = AzureTraceReplay(
        scan, mapper, shift, gpu_interval_s=2.0, read_gpus=lambda: [dict(reading)]
    )
    items = list(replay.items())
    kinds = [(e["schema"].split(".")[0], offset) for e, offset in items]
    assert kinds == [
        ("token", 0.0), ("gpu", 2.0), ("gpu", 4.0), ("token", pytest.approx(4.314579)),
        ("token", pytest.approx(4.541877)),
    ]  # fmt: skip
    gpu = [e for e, _ in items if e["schema"] == "gpu.metrics.v1"]
    assert [e["ts"] for e in gpu] == ["2023-11-16T19:15:48.680590Z", "2023-11-16T19:15:50.680590Z"]
    assert gpu[0]["event_id"] == str(uuid.uuid5(TRACE_NAMESPACE, f"{HOST}/conv.csv/0/gpu/1/GPU-2"))
    assert list(replay.items()) == items  # the same ids and stamps on every replay
