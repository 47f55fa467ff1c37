"""A fake OpenAI at the HTTP layer, for tests, benchmarks and the demo responder.

The real ``openai.AsyncOpenAI`` is given ``http_client=fake.http_client()``: an
``httpx2.AsyncClient`` on a ``MockTransport`` whose handler answers like the API does, so
the SDK parses every byte (status codes, headers, SSE framing). Imports no ``openai``.

Endpoints:
- ``POST /chat/completions`` with ``stream=True``: real SSE ``chat.completion.chunk`` lines,
  a role chunk, content deltas spaced in time, a finish chunk, a usage chunk when
  ``stream_options.include_usage`` is set, then ``data: [DONE]``.
- ``POST /audio/transcriptions``: ``{"text": ...}``.
- ``POST /audio/speech``: raw PCM s16le at 24 kHz, streamed.

Usage::

    fake = FakeOpenAI()
    fake.script(FakeReply(text="Hi there. ||BREAK|| How are you?", first_token_delay=0.3, token_delay=0.02))
    fake.script(FakeReply(fault=Fault.RATE_LIMIT, retry_after=2))
    client = openai.AsyncOpenAI(api_key="test", http_client=fake.http_client())
    ...
    fake.requests[0]["json"]["messages"]      # what the SDK sent
    fake.emitted[0].at                         # time.monotonic() when token 0 left the fake

Replies come from ``script()``-ed replies in order, else from ``responder(request_json)``
when given (the demo uses this: no per-call state), else ``default``.
"""

from __future__ import annotations

import array
import asyncio
import enum
import itertools
import json
import math
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2

SPEECH_SAMPLE_RATE = 24000


class Fault(enum.Enum):
    AUTH = "auth"  # 401
    RATE_LIMIT = "rate_limit"  # 429 with retry-after
    SERVER_ERROR = "server_error"  # 500
    UNAVAILABLE = "unavailable"  # 503
    BAD_REQUEST = "bad_request"  # 400
    CONNECTION = "connection"  # the connection is refused
    TIMEOUT = "timeout"  # the request times out before any response
    STALL = "stall"  # after ``fault_after`` tokens, silence for ``stall_seconds``
    DROP = "drop"  # after ``fault_after`` tokens, the connection drops
    EMPTY = "empty"  # a completion with no content at all


_STATUS = {
    Fault.AUTH: (401, "invalid_api_key", "Incorrect API key provided."),
    Fault.RATE_LIMIT: (429, "rate_limit_exceeded", "Rate limit reached. Please try again later."),
    Fault.SERVER_ERROR: (500, "server_error", "The server had an error while processing your request."),
    Fault.UNAVAILABLE: (503, "overloaded", "The engine is currently overloaded, please try again later."),
    Fault.BAD_REQUEST: (400, "invalid_request_error", "Invalid request: messages is malformed."),
}

_TOKEN = re.compile(r"\s*\S{1,4}|\s+")


def split_like_gpt(text: str) -> list[str]:
    """Tokens of 1-4 visible characters, each with its leading spaces, as GPT streams them."""
    return _TOKEN.findall(text)


@dataclass
class FakeReply:
    text: str = ""
    tokens: list[str] | None = None
    first_token_delay: float = 0.0
    token_delay: float = 0.0
    fault: Fault | None = None
    fault_after: int = 0
    stall_seconds: float = 30.0
    retry_after: float | None = None
    prompt_tokens: int | None = None

    def token_list(self) -> list[str]:
        return list(self.tokens) if self.tokens is not None else split_like_gpt(self.text)


@dataclass(frozen=True, slots=True)
class Emitted:
    request: int  # index into FakeOpenAI.requests
    index: int
    token: str
    at: float  # time.monotonic()
    wall: float  # time.time()


@dataclass
class FakeOpenAI:
    default: FakeReply = field(default_factory=lambda: FakeReply(text="Hello from the fake model."))
    responder: Callable[[dict[str, Any]], FakeReply] | None = None
    transcription_text: str = "Hello, can you tell me about your pricing?"
    speech_ms_per_character: int = 60
    keep_log: bool = True
    requests: list[dict[str, Any]] = field(default_factory=list)
    emitted: list[Emitted] = field(default_factory=list)
    on_emit: Callable[[dict[str, Any], Emitted], None] | None = None
    _scripted: list[FakeReply] = field(default_factory=list)
    _ids: itertools.count = field(default_factory=itertools.count)

    def script(self, *replies: FakeReply) -> FakeOpenAI:
        self._scripted.extend(replies)
        return self

    def fail(self, fault: Fault, **options: Any) -> FakeOpenAI:
        return self.script(FakeReply(fault=fault, **options))

    def http_client(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(
            transport=httpx2.MockTransport(self._handle), base_url="https://fake.openai.local/v1"
        )

    # ------------------------------------------------------------------ routing
    async def _handle(self, request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        record: dict[str, Any] = {"method": request.method, "url": str(request.url), "path": path}
        if request.headers.get("content-type", "").startswith("application/json"):
            record["json"] = json.loads(request.content or b"{}")
        else:
            record["body"] = request.content
            record["content_type"] = request.headers.get("content-type", "")
        record["headers"] = dict(request.headers)
        request_index = len(self.requests)
        if self.keep_log:
            self.requests.append(record)
        if path.endswith("/chat/completions"):
            return await self._chat(request, record, request_index)
        if path.endswith("/audio/transcriptions"):
            return httpx2.Response(200, json={"text": self.transcription_text})
        if path.endswith("/audio/speech"):
            return self._speech(record.get("json") or {})
        return httpx2.Response(
            404, json={"error": {"message": f"no route {path}", "type": "invalid_request_error"}}
        )

    def _next_reply(self, body: dict[str, Any]) -> FakeReply:
        if self._scripted:
            return self._scripted.pop(0)
        if self.responder is not None:
            return self.responder(body)
        return self.default

    async def _chat(
        self, request: httpx2.Request, record: dict[str, Any], request_index: int
    ) -> httpx2.Response:
        body = record.get("json") or {}
        reply = self._next_reply(body)
        if reply.fault in _STATUS:
            status, code, message = _STATUS[reply.fault]
            headers = {}
            if reply.retry_after is not None:
                headers["retry-after"] = f"{reply.retry_after:g}"
            error = {"error": {"message": message, "type": code, "code": code, "param": None}}
            return httpx2.Response(status, json=error, headers=headers)
        if reply.fault is Fault.CONNECTION:
            raise httpx2.ConnectError("Connection refused", request=request)
        if reply.fault is Fault.TIMEOUT:
            raise httpx2.ReadTimeout("The read operation timed out", request=request)
        stream = self._sse(body, reply, record, request_index)
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=stream)

    async def _sse(
        self, body: dict[str, Any], reply: FakeReply, record: dict[str, Any], request_index: int
    ) -> AsyncIterator[bytes]:
        completion_id = f"chatcmpl-fake{next(self._ids)}"
        model = body.get("model", "fake-model")
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            payload = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
            }
            return b"data: " + json.dumps(payload).encode() + b"\n\n"

        tokens = [] if reply.fault is Fault.EMPTY else reply.token_list()
        if reply.first_token_delay:
            await asyncio.sleep(reply.first_token_delay)
        yield chunk({"role": "assistant", "content": ""})
        for index, token in enumerate(tokens):
            if reply.fault in (Fault.STALL, Fault.DROP) and index == reply.fault_after:
                if reply.fault is Fault.STALL:
                    await asyncio.sleep(reply.stall_seconds)
                else:
                    raise httpx2.RemoteProtocolError(
                        "peer closed connection without sending complete message body"
                    )
            if index and reply.token_delay:
                await asyncio.sleep(reply.token_delay)
            yield chunk({"content": token})
            emitted = Emitted(request_index, index, token, time.monotonic(), time.time())
            if self.keep_log:
                self.emitted.append(emitted)
            if self.on_emit is not None:
                self.on_emit(body, emitted)
        yield chunk({}, finish="stop")
        if (body.get("stream_options") or {}).get("include_usage"):
            prompt_tokens = reply.prompt_tokens or sum(
                len(m.get("content", "")) // 4 + 4 for m in body["messages"]
            )
            usage = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": len(tokens),
                    "total_tokens": prompt_tokens + len(tokens),
                },
            }
            yield b"data: " + json.dumps(usage).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"

    def _speech(self, body: dict[str, Any]) -> httpx2.Response:
        text = str(body.get("input", ""))
        samples = SPEECH_SAMPLE_RATE * self.speech_ms_per_character * len(text) // 1000
        tone = array.array(
            "h", (int(2000 * math.sin(2 * math.pi * 220 * n / SPEECH_SAMPLE_RATE)) for n in range(samples))
        ).tobytes()

        async def blocks() -> AsyncIterator[bytes]:
            for start in range(0, len(tone), 4801):  # odd sizes on purpose, as real servers send
                yield tone[start : start + 4801]

        return httpx2.Response(200, headers={"content-type": "audio/pcm"}, content=blocks())
