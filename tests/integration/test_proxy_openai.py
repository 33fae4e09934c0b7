"""The official openai SDK against the proxy in front of the fake upstream (no Kafka here)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam

from schemas.contracts import validate
from tests.support.proxy import HOST, RecordingPublisher, Running, proxied


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
def running(publisher: RecordingPublisher) -> Iterator[Running]:
    with proxied(publisher, timeout_s=2.0) as r:
        yield r


def client(
    running: Running, key: str = "sk-team-a-secret", default_headers: dict[str, str] | None = None
) -> OpenAI:
    return OpenAI(
        base_url=f"{running.proxy_url}/v1",
        api_key=key,
        max_retries=0,
        default_headers=default_headers,
    )


MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "one two three four five"}
]


def test_non_streaming_chat_publishes_usage(
    running: Running, publisher: RecordingPublisher
) -> None:
    reply = client(running).chat.completions.create(
        model="fake-model",
        messages=MESSAGES,
        max_tokens=6,
    )
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 6
    (event,) = publisher.wait_for(1)
    validate(event)
    assert event["model"] == "fake-model"
    assert event["request_id"] == reply.id
    assert (event["input_tokens"], event["output_tokens"]) == (5, 6)
    assert event["status"] == "ok"
    assert event["tenant"] == "team-a"
    assert (event["host"], event["gpu_uuid"], event["gpu_index"]) == (HOST, "GPU-aaaa", 0)
    assert "ttft_ms" not in event
    assert event["latency_ms"] > 0


def test_streaming_without_include_usage_hides_the_usage_chunk(
    running: Running, publisher: RecordingPublisher
) -> None:
    chunks = list(
        client(running).chat.completions.create(
            model="fake-model",
            messages=MESSAGES,
            max_tokens=4,
            stream=True,
        )
    )
    # The client never asked for usage: no usage-only chunk reaches it.
    assert all(c.choices for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "tok0 tok1 tok2 tok3"
    # ... but the upstream was asked for it, and the event has it.
    assert running.fake.requests[-1]["stream_options"] == {"include_usage": True}
    (event,) = publisher.wait_for(1)
    assert (event["input_tokens"], event["output_tokens"]) == (5, 4)
    assert event["request_id"] == chunks[0].id
    assert 0 < event["ttft_ms"] <= event["latency_ms"]


def test_streaming_with_include_usage_keeps_the_usage_chunk(
    running: Running, publisher: RecordingPublisher
) -> None:
    chunks = list(
        client(running, key="sk-team-b-secret").chat.completions.create(
            model="llama-70b",
            messages=MESSAGES,
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5
    events = publisher.wait_for(2)
    # Tensor parallel over GPUs 1 and 2: split like producers.fleet, sums exact.
    assert [e["gpu_index"] for e in events] == [1, 2]
    assert sum(e["output_tokens"] for e in events) == 5
    assert sum(e["input_tokens"] for e in events) == 5
    assert {e["tenant"] for e in events} == {"team-b"}
    assert len({e["event_id"] for e in events}) == 2


def test_completions_and_embeddings_are_metered(
    running: Running, publisher: RecordingPublisher
) -> None:
    c = client(running, key="unknown-key", default_headers={"X-Tenant": "team-c"})
    list(c.completions.create(model="fake-model", prompt="a b c", max_tokens=3, stream=True))
    c.embeddings.create(model="fake-model", input=["x y", "z"])
    streamed, embedded = publisher.wait_for(2)
    assert (streamed["input_tokens"], streamed["output_tokens"]) == (3, 3)
    assert (embedded["input_tokens"], embedded["output_tokens"]) == (3, 0)
    # The key is not in the map: the header names the tenant.
    assert streamed["tenant"] == embedded["tenant"] == "team-c"


@pytest.mark.parametrize("status", [400, 404, 429, 500, 503])
def test_upstream_errors_pass_through_and_are_recorded(
    running: Running, publisher: RecordingPublisher, status: int
) -> None:
    c = client(running, default_headers={"x-fake-status": str(status)})
    with pytest.raises(openai.APIStatusError) as caught:
        c.chat.completions.create(model="fake-model", messages=MESSAGES)
    assert caught.value.status_code == status
    assert caught.value.body == {  # the upstream's own error body, untouched
        "message": f"fake upstream error {status}",
        "type": "fake_error",
        "code": status,
    }
    (event,) = publisher.wait_for(1)
    assert event["status"] == "error"
    assert event["model"] == "fake-model"
    assert (event["input_tokens"], event["output_tokens"]) == (0, 0)


def test_upstream_timeout_is_a_504_and_recorded(
    running: Running, publisher: RecordingPublisher
) -> None:
    c = client(running, default_headers={"x-fake-stall-s": "4"})
    with pytest.raises(openai.APIStatusError) as caught:
        c.chat.completions.create(model="fake-model", messages=MESSAGES)
    assert caught.value.status_code == 504
    (event,) = publisher.wait_for(1)
    assert event["status"] == "timeout"
    assert 2000 <= event["latency_ms"] < 4000


def test_timeout_mid_stream_cuts_the_client_and_is_recorded(
    running: Running, publisher: RecordingPublisher
) -> None:
    c = client(running, default_headers={"x-fake-stall-after": "2", "x-fake-stall-s": "4"})
    seen: list[str] = []
    stream = c.chat.completions.create(
        model="fake-model", messages=MESSAGES, max_tokens=6, stream=True
    )

    def read_all() -> None:
        seen.extend(chunk.choices[0].delta.content or "" for chunk in stream)

    with pytest.raises(openai.APIConnectionError):
        read_all()
    assert "".join(seen) == "tok0 tok1"
    (event,) = publisher.wait_for(1)
    assert event["status"] == "timeout"
    assert event["output_tokens"] == 2  # content chunks seen: no usage chunk came


def test_client_disconnect_mid_stream_is_cancelled(
    running: Running, publisher: RecordingPublisher
) -> None:
    c = client(running, default_headers={"x-fake-token-delay-ms": "50"})
    stream = c.chat.completions.create(
        model="fake-model",
        messages=MESSAGES,
        max_tokens=200,
        stream=True,
    )
    for n, _chunk in enumerate(stream, 1):
        if n == 3:
            break
    stream.close()
    (event,) = publisher.wait_for(1)
    assert event["status"] == "cancelled"
    assert 1 <= event["output_tokens"] < 200
    # The proxy closed its upstream stream too (the server stops generating).
    deadline = time.monotonic() + 5
    while running.fake.cut_streams < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running.fake.cut_streams == 1


def test_other_paths_pass_through_untouched(
    running: Running, publisher: RecordingPublisher
) -> None:
    models = client(running).models.list()
    assert [m.id for m in models] == ["fake-model"]
    r = httpx.request(
        "PATCH",
        f"{running.proxy_url}/anything/here?x=1&y=%20",
        content=b"raw body",
        headers={"x-custom": "v", "Connection": "keep-alive", "x-fake-status": "418"},
    )
    assert r.status_code == 418
    assert r.headers["x-fake-echo"] == "1"
    echo = r.json()
    assert (echo["method"], echo["raw_path"]) == ("PATCH", "/anything/here?x=1&y=%20")
    assert echo["body"] == "raw body"
    assert echo["headers"]["x-custom"] == "v"
    # GET of a metered path is not metered, nor is anything else.
    time.sleep(0.2)
    assert publisher.events == []


def test_health_and_metrics_are_the_proxys_own(running: Running) -> None:
    health = httpx.get(f"{running.proxy_url}/_proxy/health").json()
    assert health["status"] == "ok"
    assert health["upstream"] == running.fake_url
    text = httpx.get(f"{running.proxy_url}/_proxy/metrics").text
    assert "proxy_usage_events_dropped_total" in text


def test_the_api_key_is_never_in_an_event(running: Running, publisher: RecordingPublisher) -> None:
    client(running).chat.completions.create(model="fake-model", messages=MESSAGES)
    (event,) = publisher.wait_for(1)
    assert "sk-team-a-secret" not in repr(event)
