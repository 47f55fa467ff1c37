"""The HTTP-level fake OpenAI, checked through raw HTTP and through the real SDK."""

from __future__ import annotations

import asyncio
import json
import time

import httpx2
import openai
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llm.fake_openai import SPEECH_SAMPLE_RATE, FakeOpenAI, FakeReply, Fault, parse_multipart, split_like_gpt

MESSAGES = [{"role": "user", "content": "hi"}]


def _sdk(fake: FakeOpenAI, timeout: float = 5.0) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        api_key="sk-test",
        base_url="https://api.openai.com/v1",
        max_retries=0,
        timeout=timeout,
        http_client=fake.http_client(),
    )


async def _raw_events(fake: FakeOpenAI, body: dict) -> list[str]:
    async with fake.http_client() as client:
        response = await client.post("/chat/completions", json=body)
        text = (await response.aread()).decode()
    assert response.headers["content-type"] == "text/event-stream"
    assert text.endswith("\n\n")
    return text.split("\n\n")[:-1]


@given(st.text())
def test_gpt_like_tokens_put_back_together_give_the_text(text):
    tokens = split_like_gpt(text)
    assert "".join(tokens) == text
    assert all(len(token.strip()) <= 4 for token in tokens)


def test_tokens_carry_their_leading_space():
    assert split_like_gpt("Hi there, friend.") == ["Hi", " ther", "e,", " frie", "nd."]


async def test_the_stream_is_real_sse_role_deltas_finish_usage_done():
    fake = FakeOpenAI().script(FakeReply(tokens=["Hel", "lo."], prompt_tokens=7))
    events = await _raw_events(
        fake,
        {"model": "m1", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}},
    )
    assert all(event.startswith("data: ") for event in events)
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(event.removeprefix("data: ")) for event in events[:-1]]
    assert [c["choices"][0]["delta"] if c["choices"] else None for c in chunks] == [
        {"role": "assistant", "content": ""},
        {"content": "Hel"},
        {"content": "lo."},
        {},
        None,
    ]
    assert chunks[3]["choices"][0]["finish_reason"] == "stop"
    assert chunks[4]["usage"] == {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert {c["model"] for c in chunks} == {"m1"}
    assert len({c["id"] for c in chunks}) == 1
    assert fake.requests[0]["outcome"] == "complete"


async def test_no_usage_chunk_unless_the_request_asks_for_it():
    fake = FakeOpenAI().script(FakeReply(tokens=["Hi"]))
    events = await _raw_events(fake, {"model": "m", "messages": MESSAGES, "stream": True})
    assert len(events) == 4  # role, "Hi", finish, [DONE]
    assert "usage" not in events[-2]


async def test_the_real_sdk_parses_the_stream_and_the_usage():
    fake = FakeOpenAI().script(FakeReply(text="Hello there, friend.", prompt_tokens=11))
    client = _sdk(fake)
    stream = await client.chat.completions.create(
        model="gpt-4.1", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    texts, usage = [], None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            texts.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage
    assert "".join(texts) == "Hello there, friend."
    assert texts == split_like_gpt("Hello there, friend.")
    assert (usage.prompt_tokens, usage.completion_tokens) == (11, 6)  # Hell|o| ther|e,| frie|nd.
    assert fake.tokens_of(0) == texts


async def test_tokens_are_produced_only_as_the_client_reads():
    fake = FakeOpenAI().script(FakeReply(text="one two three four five six", token_delay=0.02))
    stream = await _sdk(fake).chat.completions.create(model="m", messages=MESSAGES, stream=True)
    seen_at = []
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            seen_at.append(time.monotonic())
            if len(seen_at) == 1:
                # Token 0 is in our hands; token 1 does not exist yet.
                assert len(fake.emitted) == 1
    assert len(seen_at) == len(fake.emitted) == 7
    assert seen_at[0] < fake.emitted[-1].at
    assert all(a.at <= b.at for a, b in zip(fake.emitted, fake.emitted[1:], strict=False))


async def test_first_token_delay_and_token_delay_are_honoured():
    fake = FakeOpenAI().script(FakeReply(tokens=["a", "b", "c"], first_token_delay=0.2, token_delay=0.1))
    started = time.monotonic()
    await _raw_events(fake, {"model": "m", "messages": MESSAGES, "stream": True})
    first, _, last = fake.emitted
    assert first.at - started >= 0.2
    assert last.at - first.at >= 0.2
    assert time.monotonic() - started < 3.0


async def test_scripts_are_used_in_order_then_the_responder_then_the_default():
    fake = FakeOpenAI(default=FakeReply(text="default"))
    fake.script(FakeReply(text="first"), FakeReply(text="second"))
    client = _sdk(fake)
    assert fake.pending() == 2

    async def ask() -> str:
        result = await client.chat.completions.create(model="m", messages=MESSAGES)
        return result.choices[0].message.content

    assert [await ask(), await ask(), await ask()] == ["first", "second", "default"]
    fake.responder = lambda body: FakeReply(text=f"you said {body['messages'][-1]['content']}")
    assert await ask() == "you said hi"
    assert fake.pending() == 0


async def test_a_non_streamed_completion_is_one_json():
    fake = FakeOpenAI().script(FakeReply(text="Fine, thanks.", prompt_tokens=3))
    result = await _sdk(fake).chat.completions.create(model="m", messages=MESSAGES)
    assert result.choices[0].message.content == "Fine, thanks."
    assert result.choices[0].finish_reason == "stop"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (3, 4)


async def test_requests_are_recorded_as_the_sdk_sent_them():
    fake = FakeOpenAI()
    await _sdk(fake, timeout=4.0).chat.completions.create(
        model="gpt-4.1",
        messages=MESSAGES,
        temperature=0.3,
        stream=True,
        stream_options={"include_usage": True},
    )
    record = fake.requests[0]
    assert record["method"] == "POST"
    assert record["url"] == "https://api.openai.com/v1/chat/completions"
    assert record["headers"]["authorization"] == "Bearer sk-test"
    assert record["json"] == {
        "messages": MESSAGES,
        "model": "gpt-4.1",
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.3,
    }
    assert record["timeout"] == {"connect": 4.0, "read": 4.0, "write": 4.0, "pool": 4.0}


@pytest.mark.parametrize(
    ("fault", "status"),
    [
        (Fault.AUTH, 401),
        (Fault.PERMISSION_DENIED, 403),
        (Fault.NOT_FOUND, 404),
        (Fault.BAD_REQUEST, 400),
        (Fault.RATE_LIMIT, 429),
        (Fault.SERVER_ERROR, 500),
        (Fault.UNAVAILABLE, 503),
    ],
)
async def test_status_faults_answer_with_an_openai_error_body(fault, status):
    fake = FakeOpenAI().fail(fault)
    async with fake.http_client() as client:
        response = await client.post("/chat/completions", json={"model": "m", "messages": MESSAGES})
    assert response.status_code == status
    assert set(response.json()["error"]) == {"message", "type", "code", "param"}
    assert "retry-after" not in response.headers


async def test_a_rate_limit_carries_retry_after():
    fake = FakeOpenAI().fail(Fault.RATE_LIMIT, retry_after=1.5)
    async with fake.http_client() as client:
        response = await client.post("/chat/completions", json={"model": "m", "messages": MESSAGES})
    assert response.headers["retry-after"] == "1.5"


async def test_connection_and_timeout_faults_raise_transport_errors():
    fake = FakeOpenAI().fail(Fault.CONNECTION).fail(Fault.TIMEOUT)
    async with fake.http_client() as client:
        with pytest.raises(httpx2.ConnectError):
            await client.post("/chat/completions", json={})
        with pytest.raises(httpx2.ReadTimeout):
            await client.post("/chat/completions", json={})


async def test_hang_lasts_until_the_requests_own_read_timeout():
    fake = FakeOpenAI().fail(Fault.HANG)
    started = time.monotonic()
    async with fake.http_client() as client:
        with pytest.raises(httpx2.ReadTimeout):
            await client.post("/chat/completions", json={}, timeout=0.2)
    assert 0.2 <= time.monotonic() - started < 2.0


async def test_hang_without_a_timeout_waits_until_cancelled():
    fake = FakeOpenAI().fail(Fault.HANG)
    async with fake.http_client() as client:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.post("/chat/completions", json={}, timeout=None), 0.2)


async def test_a_stall_really_stalls_after_n_tokens_then_carries_on():
    fake = FakeOpenAI().script(
        FakeReply(tokens=["a", "b", "c", "d"], fault=Fault.STALL, fault_after=2, stall_seconds=0.4)
    )
    await _raw_events(fake, {"model": "m", "messages": MESSAGES, "stream": True})
    gaps = [b.at - a.at for a, b in zip(fake.emitted, fake.emitted[1:], strict=False)]
    assert gaps[1] >= 0.4  # between token 1 and token 2
    assert gaps[0] < 0.4 and gaps[2] < 0.4
    assert fake.requests[0]["outcome"] == "complete"


async def test_a_drop_raises_a_transport_error_after_n_tokens():
    fake = FakeOpenAI().script(FakeReply(tokens=["a", "b", "c"], fault=Fault.DROP, fault_after=2))
    client = fake.http_client()
    async with client.stream("POST", "/chat/completions", json={"stream": True}) as response:
        received = b""
        with pytest.raises(httpx2.RemoteProtocolError):
            async for part in response.aiter_bytes():
                received += part
    assert fake.tokens_of(0) == ["a", "b"]
    assert b'"content": "b"' in received and b"[DONE]" not in received
    assert fake.requests[0]["outcome"] == "dropped"


async def test_a_truncated_stream_just_ends_without_finish_or_done():
    fake = FakeOpenAI().script(FakeReply(tokens=["a", "b", "c"], fault=Fault.TRUNCATE, fault_after=1))
    events = await _raw_events(
        fake, {"model": "m", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
    )
    assert len(events) == 2  # role, "a"
    assert fake.requests[0]["outcome"] == "truncated"


async def test_an_error_event_mid_stream_is_what_openai_sends():
    fake = FakeOpenAI().script(FakeReply(tokens=["a", "b"], fault=Fault.ERROR_EVENT, fault_after=1))
    events = await _raw_events(fake, {"model": "m", "messages": MESSAGES, "stream": True})
    assert json.loads(events[-1].removeprefix("data: "))["error"]["type"] == "server_error"


async def test_an_empty_completion_has_no_content_but_finishes_with_usage():
    fake = FakeOpenAI().fail(Fault.EMPTY)
    events = await _raw_events(
        fake, {"model": "m", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
    )
    assert len(events) == 4  # role, finish, usage, [DONE]
    assert json.loads(events[2].removeprefix("data: "))["usage"]["completion_tokens"] == 0
    assert fake.emitted == []


async def test_a_client_closing_early_is_recorded_and_stops_production():
    fake = FakeOpenAI().script(FakeReply(text="word " * 50, token_delay=0.01))
    stream = await _sdk(fake).chat.completions.create(model="m", messages=MESSAGES, stream=True)
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    await stream.close()
    assert fake.requests[0]["outcome"] == "closed"
    produced = len(fake.emitted)
    await asyncio.sleep(0.1)
    assert len(fake.emitted) == produced < 100


async def test_keep_log_false_records_nothing_but_on_emit_still_fires():
    seen = []
    fake = FakeOpenAI(
        keep_log=False, on_emit=lambda body, emitted: seen.append((emitted.request, emitted.token))
    )
    fake.script(FakeReply(tokens=["x", "y"]))
    await _raw_events(fake, {"model": "m", "messages": MESSAGES, "stream": True})
    await _raw_events(fake, {"model": "m", "messages": MESSAGES, "stream": True})
    assert (fake.requests, fake.emitted) == ([], [])
    assert seen[:2] == [(0, "x"), (0, "y")]
    assert seen[2][0] == 1


async def test_unknown_routes_and_endpoints_are_refused():
    fake = FakeOpenAI()
    async with fake.http_client() as client:
        response = await client.post("/embeddings", json={})
    assert response.status_code == 404
    with pytest.raises(ValueError, match="endpoint"):
        fake.script(FakeReply(), endpoint="embeddings")


async def test_transcriptions_parse_the_multipart_and_answer_scripted_text():
    fake = FakeOpenAI(transcription_text="default words")
    fake.script(FakeReply(text="scripted words"), endpoint="transcriptions")
    client = _sdk(fake)
    audio = bytes(range(256)) * 4  # every byte value, CR and LF included
    first = await client.audio.transcriptions.create(
        model="whisper-1", file=("a.wav", audio, "audio/wav"), language="de"
    )
    second = await client.audio.transcriptions.create(model="whisper-1", file=("a.wav", audio, "audio/wav"))
    assert (first.text, second.text) == ("scripted words", "default words")
    record = fake.requests[0]
    assert record["form"] == {"model": "whisper-1", "language": "de"}
    assert record["files"] == {"file": ("a.wav", "audio/wav", audio)}
    assert fake.requests[1]["form"] == {"model": "whisper-1"}


async def test_transcription_faults_come_from_their_own_queue():
    fake = FakeOpenAI().fail(Fault.AUTH, endpoint="transcriptions")
    client = _sdk(fake)
    with pytest.raises(openai.AuthenticationError):
        await client.audio.transcriptions.create(model="w", file=("a.wav", b"RIFF", "audio/wav"))
    assert fake.pending("transcriptions") == 0


async def test_a_transcription_without_a_file_is_a_400():
    fake = FakeOpenAI()
    async with fake.http_client() as client:
        response = await client.post(
            "/audio/transcriptions", files={"other": ("x", b"1")}, data={"model": "w"}
        )
    assert response.status_code == 400


def test_multipart_parsing_keeps_fields_and_binary_files_exact():
    request = httpx2.Request(
        "POST",
        "http://x/",
        data={"a": "1", "b": "two words"},
        files={"f": ("n.bin", b"\r\n--\r\n\x00", "x/y")},
    )
    fields, files = parse_multipart(request.read(), request.headers["content-type"])
    assert fields == {"a": "1", "b": "two words"}
    assert files == {"f": ("n.bin", "x/y", b"\r\n--\r\n\x00")}


async def test_speech_is_streamed_pcm_proportional_to_the_text():
    fake = FakeOpenAI(speech_ms_per_character=50)
    client = _sdk(fake)
    lengths = []
    for text in ("Hello.", "Hello, how are you?"):
        async with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input=text, response_format="pcm"
        ) as response:
            blocks = [block async for block in response.iter_bytes()]
            assert response.headers["content-type"] == "audio/pcm"
        pcm = b"".join(blocks)
        assert len(pcm) == 2 * SPEECH_SAMPLE_RATE * 50 * len(text) // 1000
        lengths.append(len(pcm))
    assert lengths[1] > lengths[0]
    assert fake.requests[0]["json"]["input"] == "Hello."
    assert fake.requests[1]["outcome"] == "complete"


async def test_speech_faults_and_drops():
    fake = FakeOpenAI()
    fake.fail(Fault.UNAVAILABLE, endpoint="speech")
    fake.fail(Fault.DROP, fault_after=1, endpoint="speech")
    client = _sdk(fake)
    with pytest.raises(openai.InternalServerError):
        await client.audio.speech.create(model="tts-1", voice="alloy", input="hi")
    async with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input="A sentence long enough for several blocks."
    ) as response:
        received = b""
        with pytest.raises(httpx2.RemoteProtocolError):
            async for block in response.iter_bytes():
                received += block
    assert len(received) == 4801
    assert fake.requests[1]["outcome"] == "dropped"
