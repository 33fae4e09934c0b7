"""A fake OpenAI-compatible server (the proxy's upstream in tests, the demo and the bench).

    python -m devtools.fake_openai --listen 127.0.0.1:8000

Speaks the wire format the proxy meters: ``POST /v1/chat/completions`` and ``/v1/completions``
(JSON, or SSE with ``stream: true``; the usage-only final chunk only with
``stream_options.include_usage``, and then ``"usage": null`` on every other chunk, as OpenAI
does), ``POST /v1/embeddings``, ``GET /v1/models``. Token counts are deterministic: input =
words of the prompt, output = ``max_tokens`` (default 8), one token per chunk.

Request headers steer it (the proxy forwards them): ``x-fake-status: 503`` answers with that
error; ``x-fake-stall-s: 5`` waits before answering; ``x-fake-token-delay-ms: 20`` spaces the
chunks; ``x-fake-stall-after: 2`` stalls for ``x-fake-stall-s`` after that many chunks.
``GET /_fake/requests`` returns the bodies received and how many streams the client cut.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from typing import Any, Final

import orjson
from aiohttp import web

__all__ = ["FakeState", "build_fake_app", "main"]

DEFAULT_OUTPUT_TOKENS: Final = 8


class FakeState:
    """What the fake saw (tests read it over HTTP or directly)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.cut_streams = 0
        self.ids = itertools.count(1)

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "cut_streams": self.cut_streams}


_STATE: Final = web.AppKey("state", FakeState)


def _prompt_words(body: dict[str, Any]) -> int:
    if isinstance(body.get("messages"), list):
        text = " ".join(str(m.get("content", "")) for m in body["messages"] if isinstance(m, dict))
    else:
        prompt = body.get("prompt", body.get("input", ""))
        text = " ".join(map(str, prompt)) if isinstance(prompt, list) else str(prompt)
    return len(text.split())


def _error(status: int, message: str) -> web.Response:
    body = {"error": {"message": message, "type": "fake_error", "code": status}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


async def _steer(request: web.Request) -> web.Response | None:
    stall = float(request.headers.get("x-fake-stall-s", "0"))
    if stall and "x-fake-stall-after" not in request.headers:
        await asyncio.sleep(stall)
    status = int(request.headers.get("x-fake-status", "200"))
    if status >= 400:
        return _error(status, f"fake upstream error {status}")
    return None


async def completions(request: web.Request) -> web.StreamResponse:
    state = request.app[_STATE]
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return _error(400, "body is not JSON")
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return _error(400, "model is required")
    state.requests.append(body)
    steered = await _steer(request)
    if steered is not None:
        return steered
    chat = request.path.endswith("/chat/completions")
    model = body["model"]
    n_out = int(
        body.get("max_tokens") or body.get("max_completion_tokens") or DEFAULT_OUTPUT_TOKENS
    )
    n_in = _prompt_words(body)
    rid = f"{'chatcmpl' if chat else 'cmpl'}-fake{next(state.ids)}"
    created = int(time.time())
    obj = "chat.completion" if chat else "text_completion"
    usage = {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}
    if not body.get("stream"):
        text = " ".join(f"tok{i}" for i in range(n_out))
        choice: dict[str, Any] = (
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "length",
            }
            if chat
            else {"index": 0, "text": text, "finish_reason": "length", "logprobs": None}
        )
        doc = {"id": rid, "object": obj, "created": created, "model": model,
               "choices": [choice], "usage": usage}  # fmt: skip
        return web.Response(body=orjson.dumps(doc), content_type="application/json")

    options = body.get("stream_options") or {}
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    delay = float(request.headers.get("x-fake-token-delay-ms", "0")) / 1000.0
    stall_after = int(request.headers.get("x-fake-stall-after", "-1"))
    stall_s = float(request.headers.get("x-fake-stall-s", "0"))
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})  # fmt: skip
    await response.prepare(request)
    chunk_obj = "chat.completion.chunk" if chat else "text_completion"

    def chunk(choices: list[dict[str, Any]], with_usage: Any = None) -> bytes:
        doc: dict[str, Any] = {"id": rid, "object": chunk_obj, "created": created,
                               "model": model, "choices": choices}  # fmt: skip
        if include_usage:
            doc["usage"] = with_usage
        return b"data: " + orjson.dumps(doc) + b"\n\n"

    try:
        if chat:
            await response.write(chunk([{"index": 0, "delta": {"role": "assistant", "content": ""},
                                         "finish_reason": None}]))  # fmt: skip
        for i in range(n_out):
            if i == stall_after:
                await asyncio.sleep(stall_s)
            if delay:
                await asyncio.sleep(delay)
            last = i == n_out - 1
            piece = f"tok{i}" if i == 0 else f" tok{i}"
            finish = "length" if last else None
            c: dict[str, Any] = (
                {"index": 0, "delta": {"content": piece}, "finish_reason": finish}
                if chat
                else {"index": 0, "text": piece, "finish_reason": finish, "logprobs": None}
            )
            await response.write(chunk([c]))
        if include_usage:
            await response.write(chunk([], usage))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
    except (ConnectionResetError, asyncio.CancelledError):
        state.cut_streams += 1
        raise
    return response


async def embeddings(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    body = orjson.loads(await request.read())
    state.requests.append(body)
    steered = await _steer(request)
    if steered is not None:
        return steered
    inputs = body.get("input")
    items = inputs if isinstance(inputs, list) else [inputs]
    n_in = _prompt_words(body)
    doc = {
        "object": "list",
        "model": body.get("model"),
        "data": [
            {"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]}
            for i in range(len(items))
        ],
        "usage": {"prompt_tokens": n_in, "total_tokens": n_in},
    }
    return web.Response(body=orjson.dumps(doc), content_type="application/json")


async def models(_request: web.Request) -> web.Response:
    doc = {"object": "list", "data": [{"id": "fake-model", "object": "model", "owned_by": "fake"}]}
    return web.Response(body=orjson.dumps(doc), content_type="application/json")


async def seen(request: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps(request.app[_STATE].as_dict()),
                        content_type="application/json")  # fmt: skip


async def echo(request: web.Request) -> web.Response:
    """Anything else: echo method, path, query, a few headers and the body (pass-through tests)."""
    body = await request.read()
    doc = {
        "method": request.method,
        "path": request.path,
        "raw_path": request.raw_path,
        "headers": {k.lower(): v for k, v in request.headers.items()},
        "body": body.decode(errors="replace"),
    }
    return web.Response(status=int(request.headers.get("x-fake-status", "200")),
                        body=orjson.dumps(doc), content_type="application/json",
                        headers={"x-fake-echo": "1"})  # fmt: skip


def build_fake_app(state: FakeState | None = None) -> web.Application:
    app = web.Application()
    app[_STATE] = state or FakeState()
    app.router.add_post("/v1/chat/completions", completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/_fake/requests", seen)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="fake OpenAI-compatible server")
    parser.add_argument("--listen", default="127.0.0.1:8000")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    web.run_app(build_fake_app(), host=host, port=int(port), access_log=None, print=None)


if __name__ == "__main__":
    main()
