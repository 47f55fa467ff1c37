"""The event-stream decoder (llm/sse.py), and the adapter reading raw bodies through the real SDK."""

from __future__ import annotations

import json

import httpx2
import openai
import pytest

from llm.config import ModelParams
from llm.openai_adapter import OpenAIChatProvider
from llm.providers import ChatDelta, ErrorKind, ProviderError
from llm.sse import ServerSentEvent, SSEDecoder, SSEError, is_done, json_object, stream_error

BODY = (
    b": keep-alive\n\n"
    b'data: {"a": 1}\n\n'
    b"event: ping\ndata: line one\ndata: line two\n\n"
    b"data:no-space\n\n"
    b"data: [DONE]\n\n"
)
EVENTS = [
    ServerSentEvent(None, b'{"a": 1}'),
    ServerSentEvent("ping", b"line one\nline two"),
    ServerSentEvent(None, b"no-space"),
    ServerSentEvent(None, b"[DONE]"),
]


def _decode(parts: list[bytes]) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for part in parts:
        events.extend(decoder.feed(part))
    return events + decoder.finish()


def test_events_of_a_body_read_whole():
    assert _decode([BODY]) == EVENTS


def test_every_split_of_the_body_gives_the_same_events():
    for cut in range(len(BODY) + 1):
        assert _decode([BODY[:cut], BODY[cut:]]) == EVENTS, cut
    assert _decode([BODY[i : i + 1] for i in range(len(BODY))]) == EVENTS


@pytest.mark.parametrize("ending", [b"\r\n", b"\r"])
def test_crlf_and_cr_line_endings_in_any_split(ending):
    body = BODY.replace(b"\n", ending)
    assert _decode([body]) == EVENTS
    for cut in range(len(body) + 1):
        assert _decode([body[:cut], body[cut:]]) == EVENTS, cut


def test_a_crlf_split_between_two_reads_is_one_line_ending():
    decoder = SSEDecoder()
    assert decoder.feed(b"data: x\r") == []
    assert decoder.feed(b"\n\r") == []
    assert decoder.feed(b"\ndata: y\r\n\r\n") == [ServerSentEvent(None, b"x"), ServerSentEvent(None, b"y")]


def test_comments_and_unknown_fields_dispatch_nothing():
    assert _decode([b": ping\n\n:\n\nid: 7\nretry: 100\nfoo: bar\n\n"]) == []


def test_an_event_without_its_blank_line_is_dropped_at_the_end():
    assert _decode([b'data: {"a": 1}\n\ndata: {"cut": ']) == [ServerSentEvent(None, b'{"a": 1}')]
    assert _decode([b"data: x\n"]) == []


def test_a_final_cr_is_a_line_ending():
    assert _decode([b"data: x\r\r"]) == [ServerSentEvent(None, b"x")]


def test_an_empty_data_line_is_an_event_with_empty_data():
    assert _decode([b"data:\n\n"]) == [ServerSentEvent(None, b"")]
    assert _decode([b"data\n\n"]) == [ServerSentEvent(None, b"")]


def test_a_byte_order_mark_at_the_start_is_ignored():
    assert _decode([b"\xef\xbb\xbfdata: x\n\n"]) == [ServerSentEvent(None, b"x")]


def test_an_endless_line_is_an_error_not_a_memory_leak():
    decoder = SSEDecoder(max_event_bytes=100)
    decoder.feed(b"data: " + b"x" * 90)
    with pytest.raises(SSEError, match="longer than 100 bytes"):
        decoder.feed(b"x" * 20)
    decoder = SSEDecoder(max_event_bytes=100)
    with pytest.raises(SSEError, match="event is longer than 100 bytes"):
        decoder.feed(b"data: " + b"x" * 60 + b"\ndata: " + b"x" * 60 + b"\n")


def test_json_payloads_done_and_error_events():
    assert json_object(ServerSentEvent(None, b'{"a": [1, "\\u00e9"]}')) == {"a": [1, "é"]}
    assert is_done(ServerSentEvent(None, b"[DONE]"))
    assert not is_done(ServerSentEvent(None, b'{"done": true}'))
    with pytest.raises(SSEError, match="not JSON"):
        json_object(ServerSentEvent(None, b"{garbage"))
    with pytest.raises(SSEError, match="not a JSON object"):
        json_object(ServerSentEvent(None, b"[1, 2]"))
    assert stream_error({"error": {"message": "boom", "type": "server_error"}}) == (
        "boom",
        {"message": "boom", "type": "server_error"},
    )
    assert stream_error({"error": "text"}) == ("An error occurred during streaming", "text")
    assert stream_error({"choices": [], "error": None}) is None


# ---------------------------------------------------------------- the adapter on raw bodies


def _chunk(delta: dict, finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    chunk = {"id": "c1", "object": "chat.completion.chunk", "choices": [choice]}
    return b"data: " + json.dumps(chunk).encode()


def _provider(parts: list[bytes]) -> OpenAIChatProvider:
    async def body():
        for part in parts:
            yield part

    class Body(httpx2.AsyncByteStream):
        async def __aiter__(self):
            async for part in body():
                yield part

    def handle(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, stream=Body())

    client = httpx2.AsyncClient(transport=httpx2.MockTransport(handle))
    return OpenAIChatProvider(api_key="sk-test", http_client=client)


async def _collect(parts: list[bytes]) -> list[ChatDelta]:
    provider = _provider(parts)
    return [d async for d in provider.stream_chat(messages=[], params=ModelParams(model="m"), call_id="c")]


async def test_the_adapter_reads_crlf_comments_and_splits_through_the_sdk():
    body = (
        b": OPENROUTER PROCESSING\r\n\r\n"
        + _chunk({"role": "assistant", "content": ""})
        + b"\r\n\r\n"
        + _chunk({"content": "Hel"})
        + b"\r\n\r\n: keep-alive\r\n\r\n"
        + _chunk({"content": "lo"})
        + b"\r\n\r\n"
        + _chunk({}, "stop")
        + b'\r\n\r\ndata: {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}}\r\n\r\n'
        + b"data: [DONE]\r\n\r\n"
    )
    parts = [body[i : i + 7] for i in range(0, len(body), 7)]  # lines split across reads
    assert await _collect(parts) == [
        ChatDelta(text="Hel"),
        ChatDelta(text="lo"),
        ChatDelta(finish_reason="stop"),
        ChatDelta(prompt_tokens=5, completion_tokens=2),
    ]


async def test_tool_call_pieces_and_their_finish_reason_pass_through_raw():
    call = [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "book", "arguments": ""}}]
    more = [{"index": 0, "function": {"arguments": '{"day": "mon"}'}}]
    events = [
        _chunk({"role": "assistant", "content": None, "tool_calls": call}),
        _chunk({"tool_calls": more}),
        _chunk({}, "tool_calls"),
        b"data: [DONE]",
    ]
    body = b"\n\n".join(events) + b"\n\n"
    assert await _collect([body]) == [
        ChatDelta(tool_calls=call),
        ChatDelta(tool_calls=more),
        ChatDelta(finish_reason="tool_calls"),
    ]


async def test_a_multi_line_data_field_is_one_chunk():
    body = (
        b'data: {"choices": [{"index": 0,\ndata:  "delta": {"content": "Hi"}, "finish_reason": "stop"}]}\n\n'
    )
    assert await _collect([body]) == [ChatDelta(text="Hi", finish_reason="stop")]


async def test_garbage_in_the_stream_is_a_server_error_after_the_text_so_far():
    received: list[ChatDelta] = []
    provider = _provider([_chunk({"content": "One"}) + b"\n\n", b"data: <html>502 Bad Gateway</html>\n\n"])
    with pytest.raises(ProviderError) as raised:
        async for delta in provider.stream_chat(messages=[], params=ModelParams(model="m"), call_id="c"):
            received.append(delta)
    assert received == [ChatDelta(text="One")]
    assert raised.value.kind is ErrorKind.SERVER
    assert raised.value.message.startswith(
        "malformed stream from the model server: an event's data is not JSON"
    )


async def test_an_error_event_after_text_is_the_sdks_api_error():
    body = (
        _chunk({"content": "One"})
        + b'\n\ndata: {"error": {"message": "overloaded", "type": "server_error"}}\n\n'
    )
    with pytest.raises(ProviderError) as raised:
        await _collect([body])
    assert (raised.value.kind, raised.value.message) == (ErrorKind.SERVER, "overloaded")
    assert type(raised.value.__cause__) is openai.APIError
