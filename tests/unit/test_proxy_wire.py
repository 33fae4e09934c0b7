"""Pure parts of the proxy: request planning, SSE splitting, usage extraction, stream tally."""

from __future__ import annotations

import orjson
import pytest

from producers.proxy.wire import (
    SseSplitter,
    StreamTally,
    is_usage_only,
    parse_sse_data,
    plan_request,
    usage_of,
)


def test_a_stream_without_include_usage_gets_it_added() -> None:
    plan = plan_request("/v1/chat/completions", b'{"model":"m","stream":true,"user":"u-1"}')
    assert (plan.stream, plan.injected_usage, plan.model, plan.user) == (True, True, "m", "u-1")
    assert orjson.loads(plan.body)["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    "options", [None, {}, {"include_usage": False}, {"continuous_usage_stats": False}]
)
def test_other_stream_options_are_kept_and_include_usage_set(options: object) -> None:
    body = orjson.dumps({"model": "m", "stream": True, "stream_options": options})
    plan = plan_request("/v1/completions", body)
    assert plan.injected_usage
    sent = orjson.loads(plan.body)["stream_options"]
    assert sent["include_usage"] is True
    if isinstance(options, dict):
        assert {k: v for k, v in sent.items() if k != "include_usage"} == {
            k: v for k, v in options.items() if k != "include_usage"
        }


def test_a_client_that_asked_for_usage_is_forwarded_byte_for_byte() -> None:
    body = b'{"model":"m", "stream": true, "stream_options": {"include_usage": true}}'
    plan = plan_request("/v1/chat/completions", body)
    assert plan.body is body
    assert (plan.stream, plan.injected_usage) == (True, False)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", b'{"model":"m"}'),
        ("/v1/embeddings", b'{"model":"m","stream":true}'),  # embeddings never stream
        ("/v1/chat/completions", b"not json"),
        ("/v1/chat/completions", b"[1,2]"),
        ("/v1/chat/completions", b""),
    ],
)
def test_non_streaming_or_unreadable_bodies_go_untouched(path: str, body: bytes) -> None:
    plan = plan_request(path, body)
    assert plan.body is body
    assert not plan.stream
    assert not plan.injected_usage


def test_sse_events_are_split_across_arbitrary_chunk_boundaries() -> None:
    stream = b'data: {"a":1}\n\ndata: {"b":2}\r\n\r\n: comment\n\ndata: [DONE]\n\n'
    for size in (1, 2, 3, 7, len(stream)):
        splitter = SseSplitter()
        events: list[bytes] = []
        for i in range(0, len(stream), size):
            events += splitter.feed(stream[i : i + size])
        assert b"".join(events) == stream  # nothing lost, nothing reordered
        assert [parse_sse_data(e) for e in events] == [{"a": 1}, {"b": 2}, None, None]
        assert splitter.rest() == b""


def test_an_unterminated_last_event_is_returned_by_rest() -> None:
    splitter = SseSplitter()
    assert splitter.feed(b'data: {"a":1}\n\ndata: {"b"') == [b'data: {"a":1}\n\n']
    assert splitter.rest() == b'data: {"b"'


def test_multi_line_data_is_joined() -> None:
    assert parse_sse_data(b'event: x\ndata: {"a":\ndata: 1}\n\n') == {"a": 1}
    assert parse_sse_data(b"data: nope\n\n") is None


def test_usage_extraction() -> None:
    assert usage_of({"usage": {"prompt_tokens": 3, "completion_tokens": 4}}) == (3, 4, None)
    assert usage_of({"usage": {"prompt_tokens": 3, "total_tokens": 3}}) == (
        3,
        0,
        None,
    )  # embeddings
    cached = {
        "prompt_tokens": 9,
        "completion_tokens": 1,
        "prompt_tokens_details": {"cached_tokens": 8},
    }
    assert usage_of({"usage": cached}) == (9, 1, 8)
    assert usage_of({"usage": None}) is None
    assert usage_of({"usage": {"prompt_tokens": -1, "completion_tokens": 1}}) is None
    assert usage_of({"usage": {"prompt_tokens": True, "completion_tokens": 1}}) is None
    assert usage_of({"usage": {"prompt_tokens": 1.5, "completion_tokens": 1}}) is None
    assert usage_of([1]) is None


def test_the_usage_only_chunk_is_recognised() -> None:
    assert is_usage_only({"choices": [], "usage": {"prompt_tokens": 1}})
    assert not is_usage_only({"choices": [{"delta": {}}], "usage": {"prompt_tokens": 1}})
    assert not is_usage_only({"choices": [], "usage": None})
    assert not is_usage_only(None)


def test_the_tally_marks_the_first_content_and_keeps_the_last_usage() -> None:
    tally = StreamTally()
    role = {"id": "c1", "model": "m", "choices": [{"delta": {"role": "assistant", "content": ""}}]}
    assert not tally.add(role)  # a role-only chunk is not a token
    assert tally.add({"id": "c1", "model": "m", "choices": [{"delta": {"content": "hi"}}]})
    assert not tally.add({"id": "c1", "model": "m", "choices": [{"text": " there"}]})
    assert not tally.add(
        {
            "id": "c1",
            "model": "m2",
            "choices": [],
            "usage": {"prompt_tokens": 2, "completion_tokens": 2},
        }
    )
    assert (tally.model, tally.request_id, tally.usage, tally.content_chunks) == (
        "m2",
        "c1",
        (2, 2, None),
        2,
    )
