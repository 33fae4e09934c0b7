"""The deployment map and the tensor-parallel split (producers.fleet), by hand-computed values."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from producers.exceptions import SettingsError
from producers.fleet import (
    DeploymentEntry,
    Replica,
    default_deployment,
    parse_deployment,
    resolve,
    split_request,
)
from producers.traffic import GpuTarget
from schemas.contracts import validate

GPUS = [GpuTarget(f"GPU-{i}", i) for i in range(4)]
REQUEST_ID = "6f1c2a4e-8d3b-4c5a-9e7f-0a1b2c3d4e5f"


def request(**fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "schema": "token.usage.v1",
        "event_id": REQUEST_ID,
        "ts": "2026-11-23T10:00:00.000Z",
        "host": "inference-01",
        "gpu_uuid": "GPU-0",
        "gpu_index": 0,
        "model": "llama-3.1-70b-instruct",
        "input_tokens": 1001,
        "output_tokens": 500,
        "latency_ms": 4200.0,
        "ttft_ms": 310.0,
        "request_id": "req-00000000000000aa",
        "status": "ok",
    }
    event.update(fields)
    return event


def test_parse_keeps_order_names_and_groups() -> None:
    assert parse_deployment(" llama-3.1-70b=0, 1 ; org:m=x=2;mistral-7b=3; ") == [
        ("llama-3.1-70b", (0, 1)),
        ("org:m=x", (2,)),  # the name is everything before the last '='
        ("mistral-7b", (3,)),
    ]


def test_parse_lists_every_malformed_entry() -> None:
    with pytest.raises(ValueError, match="empty model name") as caught:
        parse_deployment("a=0;=1;b=-1;c")
    assert str(caught.value) == (
        "'=1': empty model name; 'b=-1': GPU index '-1' is not a number >= 0; "
        "'c': must be model=gpu_index[,gpu_index...]"
    )


def test_default_is_one_model_per_gpu_round_robin() -> None:
    assert default_deployment(["a", "b", "c"], list(reversed(GPUS))) == [
        ("a", (0,)),
        ("b", (1,)),
        ("c", (2,)),
        ("a", (3,)),
    ]


def test_resolve_binds_indexes_to_the_readers_gpus() -> None:
    assert resolve([DeploymentEntry("big", (1, 0)), DeploymentEntry("small", (3,))], GPUS) == (
        Replica("big", (GPUS[0], GPUS[1])),
        Replica("small", (GPUS[3],)),
    )


def test_resolve_lists_every_problem() -> None:
    entries = [
        DeploymentEntry("a", (0, 1)),
        DeploymentEntry("b", (1, 9)),
        DeploymentEntry("c", (0,)),
    ]
    with pytest.raises(SettingsError) as caught:
        resolve(entries, GPUS[:2])
    assert str(caught.value).splitlines() == [
        "PRODUCER_DEPLOYMENT['b']: GPU 1 already serves 'a'",
        "PRODUCER_DEPLOYMENT['b']: GPU 9 is not on this host (GPUs: 0, 1)",
        "PRODUCER_DEPLOYMENT['c']: GPU 0 already serves 'a'",
    ]


def test_tensor_parallel_request_is_split_exactly_over_its_gpus() -> None:
    # 1001 input tokens over 2 GPUs: 501 + 500 (the remainder to the first GPU);
    # 500 output tokens: 250 + 250; 7 cached: 4 + 3.
    events = split_request(request(cache_read_input_tokens=7), GPUS[:2])
    assert [(e["gpu_uuid"], e["gpu_index"]) for e in events] == [("GPU-0", 0), ("GPU-1", 1)]
    assert [e["input_tokens"] for e in events] == [501, 500]
    assert [e["output_tokens"] for e in events] == [250, 250]
    assert [e["cache_read_input_tokens"] for e in events] == [4, 3]
    for e in events:
        validate(e)
        assert e["request_id"] == "req-00000000000000aa"
        assert (e["latency_ms"], e["ttft_ms"], e["ts"]) == (
            4200.0,
            310.0,
            "2026-11-23T10:00:00.000Z",
        )
    ns = uuid.UUID(REQUEST_ID)
    assert [e["event_id"] for e in events] == [
        str(uuid.uuid5(ns, "GPU-0")),
        str(uuid.uuid5(ns, "GPU-1")),
    ]


def test_split_over_three_gpus_gives_the_remainder_to_the_first() -> None:
    # 1001 = 334 + 334 + 333; 500 = 167 + 167 + 166.
    events = split_request(request(), GPUS[1:4])
    assert [e["input_tokens"] for e in events] == [334, 334, 333]
    assert [e["output_tokens"] for e in events] == [167, 167, 166]
    assert [e["gpu_index"] for e in events] == [1, 2, 3]
    # Only rank 0 counts the request; each rank its own tokens.
    assert [(e["tp_rank"], e["tp_size"]) for e in events] == [(0, 3), (1, 3), (2, 3)]


def test_single_gpu_request_keeps_its_event_id() -> None:
    (event,) = split_request(request(), [GPUS[2]])
    assert (event["event_id"], event["gpu_index"], event["input_tokens"]) == (REQUEST_ID, 2, 1001)
    assert "tp_rank" not in event
    assert "tp_size" not in event
