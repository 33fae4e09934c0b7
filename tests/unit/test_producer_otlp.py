"""The OTLP/HTTP receiver: real SDK exporter (protobuf, gzip), OTLP JSON, bad bodies, drops."""

from __future__ import annotations

import gzip
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from producers.fleet import Replica
from producers.otlp_map import SpanMapping
from producers.otlp_receiver import QueuedPublisher, ServerThread, build_app
from producers.traffic import GpuTarget
from tests.unit.otlp_support import MemorySink, export_spans

GPUS = {i: GpuTarget(f"GPU-{i:08d}-aaaa-bbbb-cccc-000000000000", i) for i in range(4)}
MAPPING = SpanMapping(
    host="receiver-host",
    gpus=GPUS,
    replicas=(Replica("llama-70b", (GPUS[0], GPUS[1])), Replica("mistral-7b", (GPUS[2],))),
    tenant_attribute="tenant.id",
)
USAGE = {
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": "mistral-7b",
    "gen_ai.response.model": "mistral-7b",
    "gen_ai.response.id": "chatcmpl-123",
    "gen_ai.usage.input_tokens": 120,
    "gen_ai.usage.output_tokens": 30,
}


class Receiver:
    def __init__(self, server: ServerThread, sink: MemorySink, publisher: QueuedPublisher):
        self.server, self.sink, self.publisher = server, sink, publisher

    def wait_events(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.sink.events) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return list(self.sink.events)

    def post(self, body: bytes, content_type: str, **headers: str) -> tuple[int, bytes]:
        request = urllib.request.Request(
            f"{self.server.url}/v1/traces",
            data=body,
            method="POST",
            headers={"Content-Type": content_type, **headers},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.server.url}/health", timeout=10) as response:
            data: dict[str, Any] = orjson.loads(response.read())
            return data


def start(max_queue: int = 100) -> tuple[ServerThread, MemorySink, QueuedPublisher]:
    sink = MemorySink()
    publisher = QueuedPublisher(sink, max_queue=max_queue)
    publisher.start()
    server = ServerThread(build_app(MAPPING, publisher, max_body_bytes=64 * 1024), "127.0.0.1", 0)
    server.start()
    return server, sink, publisher


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server, sink, publisher = start()
    yield Receiver(server, sink, publisher)
    server.stop()
    sink.gate.set()
    publisher.stop(1.0)


def test_sdk_exporter_spans_become_token_usage_events(receiver: Receiver) -> None:
    export_spans(
        receiver.server.url,
        [
            {"name": "chat mistral-7b", "attributes": {**USAGE, "tenant.id": "team-a"}},
            {"name": "GET /home", "attributes": {"http.request.method": "GET"}},
            {
                "name": "chat llama-70b",
                "attributes": {
                    "gen_ai.request.model": "llama-70b",
                    "gen_ai.usage.input_tokens": 101,
                    "gen_ai.usage.output_tokens": 7,
                },
                "error": True,
            },
        ],
        {"host.name": "app-node-3", "service.name": "chat-api"},
    )
    events = receiver.wait_events(3)
    assert len(events) == 3  # 1 + a tensor-parallel pair; the HTTP span is ignored
    mistral = next(e for e in events if e["model"] == "mistral-7b")
    assert (mistral["input_tokens"], mistral["output_tokens"]) == (120, 30)
    assert mistral["gpu_uuid"] == GPUS[2].gpu_uuid
    assert mistral["gpu_index"] == 2
    assert mistral["host"] == "app-node-3"
    assert mistral["tenant"] == "team-a"
    assert mistral["request_id"] == "chatcmpl-123"
    assert mistral["status"] == "ok"
    assert 0 <= mistral["latency_ms"] < 5_000
    llama = sorted((e for e in events if e["model"] == "llama-70b"), key=lambda e: e["gpu_index"])
    assert [e["gpu_index"] for e in llama] == [0, 1]
    assert [e["input_tokens"] for e in llama] == [51, 50]
    assert [e["output_tokens"] for e in llama] == [4, 3]
    assert all(e["status"] == "error" and "tenant" not in e for e in llama)
    health = receiver.health()
    assert health["spans"] == {"usage": 2, "ignored": 1, "rejected": 0}
    assert health["events_dropped"] == 0


def _json_request(trace_id: str, span_id: str, attributes: list[dict[str, Any]]) -> bytes:
    return orjson.dumps(
        {
            "resourceSpans": [
                {
                    "resource": {
                        "attributes": [
                            {"key": "host.name", "value": {"stringValue": "json-host"}},
                            {"key": "tenant.id", "value": {"stringValue": "team-json"}},
                        ]
                    },
                    "scopeSpans": [
                        {
                            "scope": {"name": "openlit"},
                            "spans": [
                                {
                                    "traceId": trace_id,
                                    "spanId": span_id,
                                    "name": "chat",
                                    "kind": 3,
                                    "startTimeUnixNano": "1764000000000000000",
                                    "endTimeUnixNano": "1764000001500000000",
                                    "attributes": attributes,
                                    "futureField": {"ignored": True},
                                }
                            ],
                        }
                    ],
                }
            ]
        }
    )


def test_otlp_json_with_hex_ids_and_string_int64(receiver: Receiver) -> None:
    trace_id, span_id = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174"
    body = _json_request(
        trace_id,
        span_id,
        [
            {"key": "gen_ai.response.model", "value": {"stringValue": "mistral-7b"}},
            {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "2048"}},
            {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "512"}},
            {"key": "gen_ai.usage.cache_read.input_tokens", "value": {"intValue": "1024"}},
            {"key": "gen_ai.server.time_to_first_token", "value": {"doubleValue": 0.25}},
        ],
    )
    status, raw = receiver.post(body, "application/json")
    assert status == 200, raw
    assert orjson.loads(raw) == {}  # no partialSuccess: nothing rejected
    (event,) = receiver.wait_events(1)
    assert event["ts"] == "2025-11-24T16:00:01.500000Z"
    assert event["latency_ms"] == 1500.0
    assert (event["input_tokens"], event["output_tokens"]) == (2048, 512)
    assert event["cache_read_input_tokens"] == 1024
    assert event["ttft_ms"] == 250.0
    assert event["host"] == "json-host"
    assert event["tenant"] == "team-json"
    namespace = uuid.UUID("5b0b2f4e-8d0a-4c55-9a57-0c7f3f1e6a10")
    assert event["event_id"] == str(uuid.uuid5(namespace, trace_id + span_id))
    # The same span again (an exporter retry) keeps its event id: stored once downstream.
    receiver.post(gzip.compress(body), "application/json", **{"Content-Encoding": "gzip"})
    assert [e["event_id"] for e in receiver.wait_events(2)] == [event["event_id"]] * 2


def test_invalid_usage_spans_are_rejected_in_partial_success(receiver: Receiver) -> None:
    body = _json_request(
        "5b8efff798038103d269b633813fc60c",
        "eee19b7ec3c1b175",
        [
            {"key": "gen_ai.request.model", "value": {"stringValue": "not-deployed"}},
            {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "5"}},
        ],
    )
    status, raw = receiver.post(body, "application/json")
    assert status == 200
    partial = orjson.loads(raw)["partialSuccess"]
    assert partial["rejectedSpans"] == "1"
    assert "not-deployed" in partial["errorMessage"]
    assert "deployment map" in partial["errorMessage"]
    assert receiver.health()["spans"]["rejected"] == 1


@pytest.mark.parametrize(
    ("body", "content_type", "headers", "status", "reason"),
    [
        (b"\xff\xff\xff", "application/x-protobuf", {}, 400, "protobuf"),
        (b"{not json", "application/json", {}, 400, "not JSON"),
        (b"[1, 2]", "application/json", {}, 400, "JSON object"),
        (b'{"resourceSpans": 3}', "application/json", {}, 400, "OTLP JSON"),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}',
            "application/json", {}, 400, "not hex",
        ),
        (b"{}", "text/plain", {}, 415, "content type"),
        (b"not gzip at all", "application/json", {"Content-Encoding": "gzip"}, 400, "body"),
        (gzip.compress(b"{" + b" " * 200_000 + b"}"), "application/json",
         {"Content-Encoding": "gzip"}, 413, "larger"),
    ],
)  # fmt: skip
def test_bad_bodies_get_a_4xx_with_a_reason(
    receiver: Receiver,
    body: bytes,
    content_type: str,
    headers: dict[str, str],
    status: int,
    reason: str,
) -> None:
    got, raw = receiver.post(body, content_type, **headers)
    assert got == status, raw
    assert reason in orjson.loads(raw)["error"]


def test_protobuf_response_for_protobuf_request(receiver: Receiver) -> None:
    status, raw = receiver.post(b"", "application/x-protobuf")  # an empty request is valid
    assert status == 200
    response = ExportTraceServiceResponse()
    response.ParseFromString(raw)
    assert not response.HasField("partial_success")


def test_a_stuck_sink_never_blocks_the_response_and_drops_are_counted() -> None:
    server, sink, publisher = start(max_queue=2)
    try:
        sink.gate.clear()  # the "broker" hangs: the publisher thread blocks in send()
        first = [{"name": "chat 0", "attributes": USAGE}]
        export_spans(server.url, first, {"host.name": "h"}, gzip=False)
        assert sink.entered.wait(10)  # the thread holds event 1, stuck in send()
        spans = [{"name": f"chat {i}", "attributes": USAGE} for i in range(1, 6)]
        started = time.monotonic()
        export_spans(server.url, spans, {"host.name": "h"}, gzip=False)
        assert time.monotonic() - started < 5.0
        receiver = Receiver(server, sink, publisher)
        health = receiver.health()
        # One event is held by the blocked send, two wait in the queue, the rest are dropped.
        assert health["events_dropped"] == 3
        assert health["events_queued"] == 3
        with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as response:
            text = response.read().decode()
        assert "otlp_events_dropped_total 3.0" in text
        sink.gate.set()
        assert len(receiver.wait_events(3)) == 3
    finally:
        server.stop()
        sink.gate.set()
        publisher.stop(1.0)


def test_older_prompt_and_completion_token_names_are_read(receiver: Receiver) -> None:
    attributes = {
        "gen_ai.request.model": "mistral-7b",
        "gen_ai.usage.prompt_tokens": 40,
        "gen_ai.usage.completion_tokens": 9,
    }
    export_spans(receiver.server.url, [{"name": "chat", "attributes": attributes}], {})
    (event,) = receiver.wait_events(1)
    assert (event["input_tokens"], event["output_tokens"]) == (40, 9)
    assert event["host"] == "receiver-host"  # no host.name resource attribute


def test_gpu_index_attribute_overrides_the_deployment_map(receiver: Receiver) -> None:
    spans = [
        {"name": "a", "attributes": {**USAGE, "gen_ai.response.id": "on-3"}},
        {"name": "b", "attributes": {**USAGE, "gen_ai.response.id": "tp", "gpu.index": "1,3"}},
        {"name": "c", "attributes": {**USAGE, "gen_ai.response.id": "bad", "gpu.index": "7"}},
    ]
    export_spans(receiver.server.url, spans, {"gpu.index": 3})
    events = receiver.wait_events(3)
    assert sorted((e["request_id"], e["gpu_index"]) for e in events) == [
        ("on-3", 3),
        ("tp", 1),
        ("tp", 3),
    ]
    time.sleep(0.2)
    assert receiver.health()["spans"] == {"usage": 2, "ignored": 0, "rejected": 1}


def test_bad_listen_address_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    from producers.cli import EXIT_USAGE, main

    assert main(["otlp", "--listen", "no-port"]) == EXIT_USAGE
    assert "PRODUCER_OTLP_LISTEN (--listen)" in capsys.readouterr().err
