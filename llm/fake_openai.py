"""A fake OpenAI at the HTTP layer, for tests, benchmarks and the demo responder.

The real ``openai.AsyncOpenAI`` is given ``http_client=fake.http_client()``: an
``httpx2.AsyncClient`` on a ``MockTransport`` whose async handler answers like the API, so
the SDK parses every byte (status codes, headers, SSE framing, multipart). This module
imports no ``openai``: it only speaks HTTP, so it can also stand in for any
OpenAI-compatible server.

Endpoints (matched on the end of the path, so any ``base_url`` works):

- ``POST …/chat/completions``. With ``stream: true``: real SSE, one ``data: {chunk}\\n\\n``
  event per token: a role chunk (after ``first_token_delay``), content deltas
  ``token_delay`` apart, a ``finish_reason`` chunk, a usage chunk with empty ``choices``
  when ``stream_options.include_usage`` is set, then ``data: [DONE]``. The body is a real
  async stream pulled by the client, so a consumer sees token N before token N+1 exists.
  Without ``stream``: one ``chat.completion`` JSON.
- ``POST …/audio/transcriptions`` (multipart): ``{"text": ...}``. The parsed form fields
  and files are recorded.
- ``POST …/audio/speech``: raw PCM s16le mono at 24 kHz (a quiet 220 Hz tone,
  ``speech_ms_per_character`` ms per input character), streamed in odd-sized blocks.

What answers: per endpoint, the next ``script()``-ed reply, else ``responder(body)`` (chat
only; the demo uses it, so replies depend on the request alone), else the default.

Tool calls: ``FakeReply(text=..., tool_calls=[FakeToolCall("book_meeting", {...})],
text_after=...)`` streams the text, then each call as OpenAI does (a first delta with
``index``, ``id`` and the name, then the JSON arguments in ``piece``-character fragments,
``token_delay`` apart), then ``text_after``, with ``finish_reason: "tool_calls"``. Like
OpenAI, a request whose messages break the tool-call pairing (an assistant ``tool_calls``
message not followed by a ``tool`` message for each id, or a ``tool`` message answering no
call) gets a 400, so a client that sends an incoherent follow-up fails here as it would there.

Faults (``Fault``): ``AUTH`` 401, ``PERMISSION_DENIED`` 403, ``NOT_FOUND`` 404,
``BAD_REQUEST`` 400, ``RATE_LIMIT`` 429 (``retry-after`` header from ``retry_after``),
``SERVER_ERROR`` 500, ``UNAVAILABLE`` 503; ``CONNECTION`` raises ``httpx2.ConnectError``;
``TIMEOUT`` raises ``httpx2.ReadTimeout`` at once; ``HANG`` waits for the request's own
read timeout (as a real transport would) then raises ``httpx2.ReadTimeout``, or hangs
until cancelled when the request has none. Mid-stream, after ``fault_after`` tokens (or
speech blocks): ``STALL`` goes silent for ``stall_seconds`` then carries on (it ignores
the client's read timeout: stall detection is the caller's job), ``DROP`` raises
``httpx2.RemoteProtocolError`` (peer closed the connection), ``TRUNCATE`` ends the body
cleanly with no finish chunk, usage or ``[DONE]``, ``ERROR_EVENT`` sends the
``data: {"error": ...}`` event OpenAI sends when it fails mid-stream. ``EMPTY`` is a
complete stream with no content delta (usage still sent).

Records: ``requests`` (one dict per request, in arrival order: ``method``, ``url``,
``path``, ``headers``, ``timeout`` (the request's timeout extension), ``json`` for JSON
bodies, ``form``/``files`` for multipart ones, ``body`` raw bytes, and for streams
``outcome``: ``"streaming"``, ``"complete"``, ``"closed"`` (the client closed it early),
``"dropped"`` or ``"truncated"``); ``emitted`` (one ``Emitted`` per content token, stamped
with ``time.monotonic()`` just before its bytes are handed to the client).

Usage::

    fake = FakeOpenAI()
    fake.script(FakeReply(text="Hi there. ||BREAK|| How are you?", first_token_delay=0.3, token_delay=0.02))
    fake.fail(Fault.RATE_LIMIT, retry_after=2)           # the second chat request gets a 429
    fake.script(FakeReply(text="I'd like a demo."), endpoint="transcriptions")
    client = openai.AsyncOpenAI(api_key="sk-test", max_retries=0, http_client=fake.http_client())
    stream = await client.chat.completions.create(model="m", messages=[...], stream=True)
    ...
    fake.requests[0]["json"]["messages"]      # what the SDK sent
    fake.emitted[-1].at                       # when the last token left the fake
    fake.tokens_of(0)                         # the tokens emitted for request 0

``keep_log=False`` keeps nothing (long-running demo use); ``on_emit`` still fires.
"""

from __future__ import annotations

import array
import asyncio
import enum
import itertools
import json
import math
import re
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2

SPEECH_SAMPLE_RATE = 24000
ENDPOINTS = ("chat", "transcriptions", "speech")


class Fault(enum.Enum):
    """A failure the fake can produce instead of (or in the middle of) a normal answer."""

    AUTH = "auth"  # 401
    PERMISSION_DENIED = "permission_denied"  # 403
    NOT_FOUND = "not_found"  # 404 (e.g. unknown model)
    BAD_REQUEST = "bad_request"  # 400
    RATE_LIMIT = "rate_limit"  # 429 with retry-after
    SERVER_ERROR = "server_error"  # 500
    UNAVAILABLE = "unavailable"  # 503
    CONNECTION = "connection"  # the connection is refused
    TIMEOUT = "timeout"  # httpx2.ReadTimeout at once, before any response
    HANG = "hang"  # no response until the request's read timeout, then httpx2.ReadTimeout
    STALL = "stall"  # after ``fault_after`` tokens, silence for ``stall_seconds``, then the rest
    DROP = "drop"  # after ``fault_after`` tokens, the connection drops (transport error)
    TRUNCATE = "truncate"  # after ``fault_after`` tokens, the body ends: no finish, no [DONE]
    ERROR_EVENT = "error_event"  # after ``fault_after`` tokens, an SSE ``{"error": ...}`` event
    EMPTY = "empty"  # a complete stream with no content at all


_STATUS = {
    Fault.AUTH: (401, "invalid_api_key", "Incorrect API key provided."),
    Fault.PERMISSION_DENIED: (403, "unsupported_country_region_territory", "Country not supported."),
    Fault.NOT_FOUND: (404, "model_not_found", "The model does not exist or you do not have access to it."),
    Fault.BAD_REQUEST: (400, "invalid_request_error", "Invalid request: messages is malformed."),
    Fault.RATE_LIMIT: (429, "rate_limit_exceeded", "Rate limit reached. Please try again later."),
    Fault.SERVER_ERROR: (500, "server_error", "The server had an error while processing your request."),
    Fault.UNAVAILABLE: (503, "overloaded", "The engine is currently overloaded, please try again later."),
}
_DROPPED = "peer closed connection without sending complete message body (incomplete chunked read)"
_MID_STREAM = (Fault.STALL, Fault.DROP, Fault.TRUNCATE, Fault.ERROR_EVENT)

_TOKEN = re.compile(r"\s*\S{1,4}|\s+")


def split_like_gpt(text: str) -> list[str]:
    """Tokens of 1-4 visible characters, each with its leading spaces, as GPT streams them.

    ``"".join(split_like_gpt(text)) == text`` always. (Other tests and benchmarks index
    into these tokens, so the rule must not change.)
    """
    return _TOKEN.findall(text)


@dataclass
class FakeToolCall:
    """One scripted tool call. ``arguments`` is sent as given (a str, possibly broken JSON)
    or JSON-encoded (a dict); it is streamed in fragments of ``piece`` characters."""

    name: str
    arguments: str | dict[str, Any] = ""
    id: str | None = None
    piece: int = 5

    def argument_text(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)

    def fragments(self) -> list[str]:
        text = self.argument_text()
        size = max(1, self.piece)
        return [text[i : i + size] for i in range(0, len(text), size)]


@dataclass
class FakeReply:
    """One scripted answer. Times are seconds.

    ``text`` is split with ``split_like_gpt`` unless ``tokens`` gives the exact tokens.
    For transcriptions ``text`` is the transcript; for speech, the delays apply to the
    first audio block and between blocks, and ``fault_after`` counts blocks.
    ``prompt_tokens``/``completion_tokens`` override the usage the fake computes (a rough
    chars/4 estimate of the messages, and the number of content tokens).
    """

    text: str = ""
    tokens: list[str] | None = None
    first_token_delay: float = 0.0
    token_delay: float = 0.0
    fault: Fault | None = None
    fault_after: int = 0
    stall_seconds: float = 30.0
    retry_after: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str = "stop"
    tool_calls: list[FakeToolCall] = field(default_factory=list)
    text_after: str = ""

    def token_list(self) -> list[str]:
        return list(self.tokens) if self.tokens is not None else split_like_gpt(self.text)

    def final_finish_reason(self) -> str:
        return "tool_calls" if self.tool_calls and self.finish_reason == "stop" else self.finish_reason

    def stream_deltas(self, call_ids: list[str]) -> list[dict[str, Any]]:
        """Every delta after the role chunk, in order: text, tool calls, text after."""
        deltas: list[dict[str, Any]] = [{"content": token} for token in self.token_list()]
        for index, (call, call_id) in enumerate(zip(self.tool_calls, call_ids, strict=True)):
            head = {"index": index, "id": call_id, "type": "function"}
            deltas.append({"tool_calls": [{**head, "function": {"name": call.name, "arguments": ""}}]})
            for fragment in call.fragments():
                deltas.append({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})
        deltas.extend({"content": token} for token in split_like_gpt(self.text_after))
        return deltas


@dataclass(frozen=True, slots=True)
class Emitted:
    """One content token handed to the client."""

    request: int  # index into FakeOpenAI.requests (counts requests even with keep_log=False)
    index: int  # position of the token in its reply
    token: str
    at: float  # time.monotonic(), just before the bytes were handed over
    wall: float  # time.time(), same moment


def _default_chat() -> FakeReply:
    return FakeReply(text="Hello from the fake model.")


@dataclass
class FakeOpenAI:
    """The fake server. Construct, ``script``/``fail``, then pass ``http_client()`` to the SDK."""

    default: FakeReply = field(default_factory=_default_chat)
    responder: Callable[[dict[str, Any]], FakeReply] | None = None
    transcription_text: str = "Hello, can you tell me about your pricing?"
    speech_ms_per_character: int = 60
    keep_log: bool = True
    requests: list[dict[str, Any]] = field(default_factory=list)
    emitted: list[Emitted] = field(default_factory=list)
    on_emit: Callable[[dict[str, Any], Emitted], None] | None = None
    _scripted: dict[str, list[FakeReply]] = field(
        default_factory=lambda: {e: [] for e in ENDPOINTS}, init=False, repr=False
    )
    _ids: itertools.count = field(default_factory=itertools.count, init=False, repr=False)
    _request_count: itertools.count = field(default_factory=itertools.count, init=False, repr=False)

    # ------------------------------------------------------------------ public API
    def script(self, *replies: FakeReply, endpoint: str = "chat") -> FakeOpenAI:
        """Queue replies for the next requests to ``endpoint`` ("chat", "transcriptions", "speech")."""
        if endpoint not in ENDPOINTS:
            raise ValueError(f"endpoint must be one of {ENDPOINTS}, got {endpoint!r}")
        self._scripted[endpoint].extend(replies)
        return self

    def fail(self, fault: Fault, *, endpoint: str = "chat", **options: Any) -> FakeOpenAI:
        """Queue one failing reply: ``fail(Fault.RATE_LIMIT, retry_after=1)``; options are FakeReply's."""
        return self.script(FakeReply(fault=fault, **options), endpoint=endpoint)

    def pending(self, endpoint: str = "chat") -> int:
        """Scripted replies not yet used for ``endpoint``."""
        return len(self._scripted[endpoint])

    def tokens_of(self, request: int) -> list[str]:
        """The content tokens emitted so far for ``requests[request]``."""
        return [e.token for e in self.emitted if e.request == request]

    def http_client(self) -> httpx2.AsyncClient:
        """A new client on this fake. The SDK's own ``base_url`` decides the URLs it posts to."""
        return httpx2.AsyncClient(
            transport=httpx2.MockTransport(self._handle), base_url="https://fake.openai.local/v1"
        )

    # ------------------------------------------------------------------ routing
    async def _handle(self, request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        content_type = request.headers.get("content-type", "")
        record: dict[str, Any] = {
            "method": request.method,
            "url": str(request.url),
            "path": path,
            "headers": dict(request.headers),
            "timeout": dict(request.extensions.get("timeout") or {}),
            "body": request.content,
        }
        if content_type.startswith("application/json"):
            record["json"] = json.loads(request.content or b"{}")
        elif content_type.startswith("multipart/form-data"):
            record["form"], record["files"] = parse_multipart(request.content, content_type)
        request_index = next(self._request_count)
        if self.keep_log:
            self.requests.append(record)
        if request.method == "POST" and path.endswith("/chat/completions"):
            return await self._chat(request, record, request_index)
        if request.method == "POST" and path.endswith("/audio/transcriptions"):
            return await self._transcription(request, record)
        if request.method == "POST" and path.endswith("/audio/speech"):
            return await self._speech(request, record)
        return _error_response(404, "invalid_request_error", f"Unknown request URL: {request.method} {path}")

    def _next(self, endpoint: str) -> FakeReply | None:
        queue = self._scripted[endpoint]
        return queue.pop(0) if queue else None

    async def _before_response(self, request: httpx2.Request, reply: FakeReply) -> httpx2.Response | None:
        """Faults that happen before any response; None when the request goes through."""
        if reply.fault in _STATUS:
            status, code, message = _STATUS[reply.fault]
            headers = {"retry-after": f"{reply.retry_after:g}"} if reply.retry_after is not None else {}
            return _error_response(status, code, message, headers)
        if reply.fault is Fault.CONNECTION:
            raise httpx2.ConnectError("[Errno 111] Connection refused", request=request)
        if reply.fault is Fault.TIMEOUT:
            raise httpx2.ReadTimeout("The read operation timed out", request=request)
        if reply.fault is Fault.HANG:
            read = (request.extensions.get("timeout") or {}).get("read")
            if read is None:
                await asyncio.Event().wait()  # forever, until the caller is cancelled
            await asyncio.sleep(read)
            raise httpx2.ReadTimeout("The read operation timed out", request=request)
        return None

    # ------------------------------------------------------------------ chat
    async def _chat(
        self, request: httpx2.Request, record: dict[str, Any], request_index: int
    ) -> httpx2.Response:
        body = record.get("json") or {}
        problem = tool_message_problem(body.get("messages") or [])
        if problem is not None:
            return _error_response(400, "invalid_request_error", problem)
        reply = self._next("chat")
        if reply is None:
            reply = self.responder(body) if self.responder is not None else self.default
        failed = await self._before_response(request, reply)
        if failed is not None:
            return failed
        if not body.get("stream"):
            return await self._completion(body, reply)
        record["outcome"] = "streaming"
        stream = _Body(self._sse(body, reply, record, request_index), record)
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, stream=stream)

    def _usage(self, body: dict[str, Any], reply: FakeReply, completion: int) -> dict[str, int]:
        prompt = reply.prompt_tokens
        if prompt is None:
            prompt = sum(len(str(m.get("content") or "")) // 4 + 4 for m in body.get("messages") or [])
        if reply.completion_tokens is not None:
            completion = reply.completion_tokens
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    async def _completion(self, body: dict[str, Any], reply: FakeReply) -> httpx2.Response:
        tokens = [] if reply.fault is Fault.EMPTY else reply.token_list()
        await asyncio.sleep(reply.first_token_delay + reply.token_delay * max(0, len(tokens) - 1))
        message: dict[str, Any] = {"role": "assistant", "content": "".join(tokens) + reply.text_after}
        if reply.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id or f"call_fake{next(self._ids)}",
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.argument_text()},
                }
                for call in reply.tool_calls
            ]
        return httpx2.Response(
            200,
            json={
                "id": f"chatcmpl-fake{next(self._ids)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "fake-model"),
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": reply.final_finish_reason(),
                        "logprobs": None,
                    }
                ],
                "usage": self._usage(body, reply, len(tokens)),
            },
        )

    async def _sse(
        self, body: dict[str, Any], reply: FakeReply, record: dict[str, Any], request_index: int
    ) -> AsyncIterator[bytes]:
        completion_id = f"chatcmpl-fake{next(self._ids)}"
        base = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model", "fake-model"),
        }

        def event(payload: dict[str, Any]) -> bytes:
            return b"data: " + json.dumps(payload).encode() + b"\n\n"

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            return event({**base, "choices": [choice]})

        call_ids = [call.id or f"call_fake{next(self._ids)}" for call in reply.tool_calls]
        deltas = [] if reply.fault is Fault.EMPTY else reply.stream_deltas(call_ids)
        if reply.first_token_delay:
            await asyncio.sleep(reply.first_token_delay)
        yield chunk({"role": "assistant", "content": ""})
        for index, delta in enumerate(deltas):
            if reply.fault in _MID_STREAM and index == reply.fault_after:
                if reply.fault is Fault.STALL:
                    await asyncio.sleep(reply.stall_seconds)
                elif reply.fault is Fault.DROP:
                    record["outcome"] = "dropped"
                    raise httpx2.RemoteProtocolError(_DROPPED)
                elif reply.fault is Fault.TRUNCATE:
                    record["outcome"] = "truncated"
                    return
                else:
                    record["outcome"] = "error_event"
                    _, code, message = _STATUS[Fault.SERVER_ERROR]
                    yield event({"error": {"message": message, "type": code, "code": None, "param": None}})
                    return
            if index and reply.token_delay:
                await asyncio.sleep(reply.token_delay)
            if "content" in delta:
                emitted = Emitted(request_index, index, delta["content"], time.monotonic(), time.time())
                if self.keep_log:
                    self.emitted.append(emitted)
                if self.on_emit is not None:
                    self.on_emit(body, emitted)
            yield chunk(delta)
        yield chunk({}, finish=reply.final_finish_reason())
        if (body.get("stream_options") or {}).get("include_usage"):
            yield event({**base, "choices": [], "usage": self._usage(body, reply, len(deltas))})
        record["outcome"] = "complete"  # before [DONE]: a client may close as soon as it sees it
        yield b"data: [DONE]\n\n"

    # ------------------------------------------------------------------ audio
    async def _transcription(self, request: httpx2.Request, record: dict[str, Any]) -> httpx2.Response:
        reply = self._next("transcriptions") or FakeReply(text=self.transcription_text)
        failed = await self._before_response(request, reply)
        if failed is not None:
            return failed
        if "file" not in record.get("files", {}):
            return _error_response(400, "invalid_request_error", "Missing required parameter: 'file'.")
        if reply.first_token_delay:
            await asyncio.sleep(reply.first_token_delay)
        return httpx2.Response(200, json={"text": reply.text})

    async def _speech(self, request: httpx2.Request, record: dict[str, Any]) -> httpx2.Response:
        reply = self._next("speech") or FakeReply()
        failed = await self._before_response(request, reply)
        if failed is not None:
            return failed
        text = str((record.get("json") or {}).get("input", ""))
        pcm = speech_tone(SPEECH_SAMPLE_RATE * self.speech_ms_per_character * len(text) // 1000)
        record["outcome"] = "streaming"
        body = _Body(_speech_blocks(pcm, reply, record), record)
        return httpx2.Response(200, headers={"content-type": "audio/pcm"}, stream=body)


async def _speech_blocks(pcm: bytes, reply: FakeReply, record: dict[str, Any]) -> AsyncIterator[bytes]:
    if reply.first_token_delay:
        await asyncio.sleep(reply.first_token_delay)
    block = 4801  # odd on purpose: real servers split samples across network reads
    for index, start in enumerate(range(0, len(pcm), block)):
        if reply.fault in _MID_STREAM and index == reply.fault_after:
            if reply.fault is Fault.STALL:
                await asyncio.sleep(reply.stall_seconds)
            elif reply.fault is Fault.DROP:
                record["outcome"] = "dropped"
                raise httpx2.RemoteProtocolError(_DROPPED)
            else:
                record["outcome"] = "truncated"
                return
        if index and reply.token_delay:
            await asyncio.sleep(reply.token_delay)
        yield pcm[start : start + block]
    record["outcome"] = "complete"


def speech_tone(samples: int, *, frequency: float = 220.0, amplitude: int = 2000) -> bytes:
    """``samples`` of a sine tone as PCM s16le at ``SPEECH_SAMPLE_RATE``."""
    step = 2 * math.pi * frequency / SPEECH_SAMPLE_RATE
    tone = array.array("h", (int(amplitude * math.sin(step * n)) for n in range(samples)))
    if sys.byteorder == "big":
        tone.byteswap()
    return tone.tobytes()


class _Body(httpx2.AsyncByteStream):
    """A streamed response body that notices when the client closes it early."""

    def __init__(self, parts: AsyncIterator[bytes], record: dict[str, Any]) -> None:
        self._parts = parts
        self._record = record

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for part in self._parts:
            yield part

    async def aclose(self) -> None:
        await self._parts.aclose()  # type: ignore[attr-defined]
        if self._record.get("outcome") == "streaming":
            self._record["outcome"] = "closed"


def _error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> httpx2.Response:
    error = {"error": {"message": message, "type": code, "code": code, "param": None}}
    return httpx2.Response(status, json=error, headers=headers or {})


def tool_message_problem(messages: list[dict[str, Any]]) -> str | None:
    """OpenAI's 400 for messages whose tool calls and tool results do not pair up; None if fine."""
    waiting: list[str] = []  # ids of the last tool_calls message still without a result
    for message in messages:
        role = message.get("role")
        if role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in waiting:
                return (
                    "Invalid parameter: messages with role 'tool' must be a response to a preceding "
                    f"message with 'tool_calls' (tool_call_id {call_id!r})."
                )
            waiting.remove(call_id)
            continue
        if waiting:
            return (
                "An assistant message with 'tool_calls' must be followed by tool messages responding "
                f"to each 'tool_call_id'. The following tool_call_ids did not have response messages: "
                f"{', '.join(waiting)}"
            )
        if role == "assistant" and message.get("tool_calls"):
            waiting = [str(call.get("id")) for call in message["tool_calls"]]
    if waiting:
        return (
            "An assistant message with 'tool_calls' must be followed by tool messages responding "
            f"to each 'tool_call_id'. The following tool_call_ids did not have response messages: "
            f"{', '.join(waiting)}"
        )
    return None


Files = dict[str, tuple[str, str, bytes]]


def parse_multipart(body: bytes, content_type: str) -> tuple[dict[str, str], Files]:
    """``multipart/form-data`` -> (fields, files), files as name -> (filename, content type, bytes).

    Exact for binary parts (no line-ending normalisation), which the stdlib ``email``
    parser does not promise.
    """
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if match is None:
        raise ValueError(f"no boundary in {content_type!r}")
    delimiter = b"--" + match.group(1).encode()
    fields: dict[str, str] = {}
    files: Files = {}
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break  # the closing delimiter
        head, _, content = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        content = content.removesuffix(b"\r\n")
        headers = head.decode("utf-8", "replace")
        name = re.search(r'\bname="([^"]*)"', headers)
        if name is None:
            continue
        filename = re.search(r'\bfilename="([^"]*)"', headers)
        if filename is None:
            fields[name.group(1)] = content.decode("utf-8")
            continue
        part_type = re.search(r"(?im)^content-type:\s*(\S+)", headers)
        files[name.group(1)] = (filename.group(1), part_type.group(1) if part_type else "", content)
    return fields, files
