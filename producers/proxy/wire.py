"""The OpenAI wire format as the proxy needs it; pure (no I/O).

    >>> plan = plan_request("/v1/chat/completions", b'{"model":"m","stream":true}')
    >>> plan.injected_usage, plan.stream
    (True, True)
    >>> splitter = SseSplitter()
    >>> splitter.feed(b'data: {"id":"x"}\\n\\ndata: [DO')
    [b'data: {"id":"x"}\\n\\n']

A streaming request the client sent without ``stream_options.include_usage`` gets it added, so
the upstream reports usage in one last chunk (``choices: []``, ``usage: {...}``); the proxy
drops exactly that chunk before the client sees it (:func:`is_usage_only`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import orjson

__all__ = [
    "METERED_PATHS",
    "RequestPlan",
    "SseSplitter",
    "StreamTally",
    "is_usage_only",
    "parse_sse_data",
    "plan_request",
    "usage_of",
]

METERED_PATHS: Final = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings"})
# Streaming is defined for these two; /v1/embeddings never streams.
_STREAMABLE: Final = frozenset({"/v1/chat/completions", "/v1/completions"})
_SEPARATORS: Final = (b"\r\n\r\n", b"\n\n", b"\r\r")


@dataclass(frozen=True, slots=True)
class RequestPlan:
    """What the proxy does with one metered request's body."""

    body: bytes  # what goes upstream (the client's bytes unless include_usage was added)
    model: str | None  # the requested model (the response's wins when it has one)
    stream: bool
    injected_usage: bool  # include_usage added by the proxy: drop the usage-only chunk
    user: str | None  # the OpenAI "user" field, if the client sent one


def plan_request(path: str, body: bytes) -> RequestPlan:
    """Inspect a metered request; a body that is not a JSON object is forwarded untouched."""
    try:
        doc = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict):
        return RequestPlan(body, None, False, False, None)
    model = doc.get("model") if isinstance(doc.get("model"), str) else None
    user = doc.get("user") if isinstance(doc.get("user"), str) else None
    stream = doc.get("stream") is True and path in _STREAMABLE
    if not stream:
        return RequestPlan(body, model, False, False, user)
    options = doc.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return RequestPlan(body, model, True, False, user)
    # The client did not ask (absent, null, or include_usage false): ask on its behalf.
    new_options = dict(options) if isinstance(options, dict) else {}
    new_options["include_usage"] = True
    doc["stream_options"] = new_options
    return RequestPlan(orjson.dumps(doc), model, True, True, user)


class SseSplitter:
    """Bytes as they arrive -> complete SSE events (raw, separator included).

    Only the tail of an event not yet complete is held; every complete event is returned at
    once, so the client gets each event as soon as its last byte arrived.
    """

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._pending + data if self._pending else data
        events: list[bytes] = []
        start = 0
        while True:
            cut = _next_separator(buf, start)
            if cut is None:
                break
            events.append(buf[start:cut])
            start = cut
        self._pending = buf[start:]
        return events

    def rest(self) -> bytes:
        """What is left when the stream ends (an event without its blank line)."""
        rest, self._pending = self._pending, b""
        return rest


def _next_separator(buf: bytes, start: int) -> int | None:
    """End (exclusive) of the first event separator at or after ``start``."""
    best: int | None = None
    for sep in _SEPARATORS:
        i = buf.find(sep, start)
        if i >= 0 and (best is None or i + len(sep) < best):
            best = i + len(sep)
    return best


def parse_sse_data(event: bytes) -> Any:
    """The JSON of an event's ``data:`` lines; None for ``[DONE]``, comments or non-JSON."""
    lines = [
        line[5:].removeprefix(b" ") for line in event.splitlines() if line.startswith(b"data:")
    ]
    if not lines:
        return None
    data = b"\n".join(lines)
    if data.strip() == b"[DONE]":
        return None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def is_usage_only(doc: Any) -> bool:
    """The final chunk include_usage adds: usage set, no choices."""
    return isinstance(doc, dict) and isinstance(doc.get("usage"), dict) and not doc.get("choices")


def usage_of(doc: Any) -> tuple[int, int, int | None] | None:
    """(input, output, cached input) tokens of a response's ``usage``, or None if absent/bad.

    Embeddings report only prompt_tokens (output 0). Negative or non-integer counts are bad.
    """
    if not isinstance(doc, dict):
        return None
    usage = doc.get("usage")
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
    completion = usage.get("completion_tokens", usage.get("output_tokens", 0))
    if completion is None:
        completion = 0
    if not (isinstance(prompt, int) and _count(prompt)):
        return None
    if not (isinstance(completion, int) and _count(completion)):
        return None
    cached: int | None = None
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict):
        value = details.get("cached_tokens")
        if isinstance(value, int) and _count(value):
            cached = value
    return prompt, completion, cached


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 10_000_000


@dataclass(slots=True)
class StreamTally:
    """What a stream told so far: model, id, usage, first content, content chunks."""

    model: str | None = None
    request_id: str | None = None
    usage: tuple[int, int, int | None] | None = None
    first_token: bool = False  # a chunk carrying generated content was seen
    content_chunks: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, doc: Any) -> bool:
        """Account one chunk; True if it is the first one with generated content."""
        if not isinstance(doc, dict):
            return False
        if isinstance(doc.get("model"), str) and doc["model"]:
            self.model = doc["model"]
        if isinstance(doc.get("id"), str) and doc["id"]:
            self.request_id = doc["id"]
        usage = usage_of(doc)
        if usage is not None:
            self.usage = usage
        if _has_content(doc.get("choices")):
            self.content_chunks += 1
            if not self.first_token:
                self.first_token = True
                return True
        return False


def _has_content(choices: Any) -> bool:
    if not isinstance(choices, list):
        return False
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        if choice.get("text"):  # /v1/completions
            return True
        delta = choice.get("delta")
        if isinstance(delta, dict) and (
            delta.get("content") or delta.get("tool_calls") or delta.get("reasoning_content")
        ):
            return True
    return False
