"""The OpenAI chat adapter, through the real ``openai.AsyncOpenAI`` on the HTTP-level fake."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time

import httpx2
import openai
import pytest

from llm.config import ModelParams
from llm.fake_openai import FakeOpenAI, FakeReply, Fault
from llm.openai_adapter import PLACEHOLDER_KEY, OpenAIChatProvider, classify_error, retry_after_seconds
from llm.providers import ChatDelta, ErrorKind, ProviderError

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello?"}]
PARAMS = ModelParams()
TEXT = "Hi, this is Alex. ||BREAK|| How are you?"


def _provider(fake: FakeOpenAI, **options) -> OpenAIChatProvider:
    options.setdefault("api_key", "sk-test")
    options.setdefault("request_timeout", 5.0)
    return OpenAIChatProvider(http_client=fake.http_client(), **options)


async def _collect(provider: OpenAIChatProvider, params: ModelParams = PARAMS) -> list[ChatDelta]:
    return [d async for d in provider.stream_chat(messages=MESSAGES, params=params, call_id="call-1")]


async def _fails(fake: FakeOpenAI, **options) -> tuple[ProviderError, list[ChatDelta]]:
    received: list[ChatDelta] = []
    with pytest.raises(ProviderError) as raised:
        async for delta in _provider(fake, **options).stream_chat(
            messages=MESSAGES, params=PARAMS, call_id="call-1"
        ):
            received.append(delta)
    return raised.value, received


async def test_text_deltas_then_one_usage_delta():
    fake = FakeOpenAI().script(FakeReply(text=TEXT, prompt_tokens=42))
    deltas = await _collect(_provider(fake))
    texts = [d.text for d in deltas if d.text]
    assert texts == FakeReply(text=TEXT).token_list()
    assert "".join(texts) == TEXT
    assert deltas[-1] == ChatDelta(prompt_tokens=42, completion_tokens=len(texts))
    assert [d for d in deltas if d.prompt_tokens is not None] == [deltas[-1]]


async def test_the_request_carries_every_model_parameter_and_asks_for_usage():
    fake = FakeOpenAI()
    params = ModelParams(
        model="gpt-4.1-mini",
        temperature=0.2,
        max_tokens=123,
        top_p=0.9,
        frequency_penalty=0.5,
        presence_penalty=-0.5,
    )
    await _collect(_provider(fake, request_timeout=7.0), params)
    (record,) = fake.requests
    assert record["url"] == "https://api.openai.com/v1/chat/completions"
    assert record["json"] == {
        "model": "gpt-4.1-mini",
        "messages": MESSAGES,
        "temperature": 0.2,
        "max_tokens": 123,
        "top_p": 0.9,
        "frequency_penalty": 0.5,
        "presence_penalty": -0.5,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert record["headers"]["authorization"] == "Bearer sk-test"
    # The explicit timeout reaches the transport, not the SDK's 600 s default.
    assert record["timeout"] == {"connect": 7.0, "read": 7.0, "write": 7.0, "pool": 7.0}
    assert "openai-organization" not in record["headers"]


async def test_the_organization_is_sent_when_configured():
    fake = FakeOpenAI()
    await _collect(_provider(fake, organization="org-123"))
    assert fake.requests[0]["headers"]["openai-organization"] == "org-123"


async def test_tokens_arrive_while_the_model_is_still_writing():
    fake = FakeOpenAI().script(FakeReply(text=TEXT * 3, token_delay=0.01))
    first_received_at = None
    async for delta in _provider(fake).stream_chat(messages=MESSAGES, params=PARAMS, call_id="c"):
        if delta.text and first_received_at is None:
            first_received_at = time.monotonic()
            emitted_then = len(fake.emitted)
    assert emitted_then == 1
    assert first_received_at < fake.emitted[-1].at


@pytest.mark.parametrize(
    ("fault", "kind", "status"),
    [
        (Fault.AUTH, ErrorKind.AUTH, 401),
        (Fault.PERMISSION_DENIED, ErrorKind.AUTH, 403),
        (Fault.BAD_REQUEST, ErrorKind.INVALID_REQUEST, 400),
        (Fault.NOT_FOUND, ErrorKind.INVALID_REQUEST, 404),
        (Fault.RATE_LIMIT, ErrorKind.RATE_LIMIT, 429),
        (Fault.SERVER_ERROR, ErrorKind.SERVER, 500),
        (Fault.UNAVAILABLE, ErrorKind.SERVER, 503),
        (Fault.CONNECTION, ErrorKind.NETWORK, None),
        (Fault.TIMEOUT, ErrorKind.TIMEOUT, None),
    ],
)
async def test_each_fault_before_the_stream_is_classified_from_the_sdk_exception(fault, kind, status):
    fake = FakeOpenAI().fail(fault)
    error, received = await _fails(fake)
    assert (error.kind, error.status_code, received) == (kind, status, [])
    assert isinstance(error.__cause__, openai.OpenAIError)
    assert error.retryable is (
        kind in {ErrorKind.RATE_LIMIT, ErrorKind.SERVER, ErrorKind.NETWORK, ErrorKind.TIMEOUT}
    )
    assert len(fake.requests) == 1  # max_retries=0: the SDK never retries on its own


async def test_a_rate_limit_carries_its_retry_after_in_seconds():
    error, _ = await _fails(FakeOpenAI().fail(Fault.RATE_LIMIT, retry_after=1.5))
    assert (error.kind, error.retry_after) == (ErrorKind.RATE_LIMIT, 1.5)
    error, _ = await _fails(FakeOpenAI().fail(Fault.RATE_LIMIT))
    assert error.retry_after is None


async def test_a_server_that_never_answers_times_out_at_the_request_timeout():
    started = time.monotonic()
    error, _ = await _fails(FakeOpenAI().fail(Fault.HANG), request_timeout=0.2)
    assert error.kind is ErrorKind.TIMEOUT
    assert isinstance(error.__cause__, openai.APITimeoutError)
    assert 0.2 <= time.monotonic() - started < 3.0


async def test_a_drop_mid_stream_is_a_network_error_after_the_text_so_far():
    fake = FakeOpenAI().script(FakeReply(tokens=["One", " two", " three"], fault=Fault.DROP, fault_after=2))
    error, received = await _fails(fake)
    assert [d.text for d in received] == ["One", " two"]
    assert error.kind is ErrorKind.NETWORK
    # The SDK wraps the transport error raised inside the stream; the message names it.
    assert type(error.__cause__) is openai.APIConnectionError
    assert isinstance(error.__cause__.__cause__, httpx2.RemoteProtocolError)
    assert error.message.startswith("Connection error. (RemoteProtocolError: peer closed connection")


async def test_a_stream_cut_cleanly_before_the_finish_is_a_network_error():
    fake = FakeOpenAI().script(
        FakeReply(tokens=["One", " two", " three"], fault=Fault.TRUNCATE, fault_after=2)
    )
    error, received = await _fails(fake)
    assert [d.text for d in received] == ["One", " two"]
    assert (error.kind, error.message) == (ErrorKind.NETWORK, "the stream ended before the model finished")


async def test_an_error_event_mid_stream_is_a_server_error():
    fake = FakeOpenAI().script(FakeReply(tokens=["One", " two"], fault=Fault.ERROR_EVENT, fault_after=1))
    error, received = await _fails(fake)
    assert [d.text for d in received] == ["One"]
    assert error.kind is ErrorKind.SERVER
    assert type(error.__cause__) is openai.APIError


async def test_a_read_timeout_mid_stream_is_a_timeout():
    # The client's read timeout (0.3 s) fires during a 5 s stall; no faked exception.
    fake = FakeOpenAI().script(
        FakeReply(tokens=["a", "b"], fault=Fault.STALL, fault_after=1, stall_seconds=5)
    )

    async def transport_with_read_timeout(request: httpx2.Request) -> httpx2.Response:
        response = await fake._handle(request)
        return httpx2.Response(response.status_code, headers=response.headers, stream=_Timed(response, 0.3))

    provider = OpenAIChatProvider(
        api_key="sk",
        request_timeout=0.3,
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(transport_with_read_timeout)),
    )
    started = time.monotonic()
    with pytest.raises(ProviderError) as raised:
        await _collect(provider)
    assert raised.value.kind is ErrorKind.TIMEOUT
    assert type(raised.value.__cause__) is openai.APITimeoutError
    assert time.monotonic() - started < 3.0


class _Timed(httpx2.AsyncByteStream):
    """What a real transport does: a read that waits longer than the read timeout fails."""

    def __init__(self, response: httpx2.Response, read_timeout: float) -> None:
        self._response, self._read_timeout = response, read_timeout

    async def __aiter__(self):
        parts = self._response.aiter_raw().__aiter__()
        while True:
            try:
                yield await asyncio.wait_for(parts.__anext__(), self._read_timeout)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise httpx2.ReadTimeout("The read operation timed out") from None

    async def aclose(self) -> None:
        await self._response.aclose()


async def test_an_empty_completion_yields_no_text_but_usage():
    fake = FakeOpenAI().script(FakeReply(fault=Fault.EMPTY, prompt_tokens=9))
    deltas = await _collect(_provider(fake))
    assert deltas == [ChatDelta(finish_reason="stop"), ChatDelta(prompt_tokens=9, completion_tokens=0)]


async def test_a_reply_cut_at_max_tokens_still_ends_normally(caplog):
    fake = FakeOpenAI().script(FakeReply(text="Cut short", finish_reason="length"))
    with caplog.at_level(logging.INFO, logger="llm.openai_adapter"):
        deltas = await _collect(_provider(fake))
    assert "".join(d.text for d in deltas) == "Cut short"
    assert "call=call-1 reply ended by length" in caplog.text


async def test_cancelling_the_consumer_closes_the_http_stream():
    fake = FakeOpenAI().script(FakeReply(text=TEXT * 20, token_delay=0.02))
    got_first = asyncio.Event()

    async def consume() -> None:
        async for _ in _provider(fake).stream_chat(messages=MESSAGES, params=PARAMS, call_id="c"):
            got_first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_first.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fake.requests[0]["outcome"] == "closed"
    produced = len(fake.emitted)
    await asyncio.sleep(0.1)
    assert len(fake.emitted) == produced < len(FakeReply(text=TEXT * 20).token_list())


async def test_closing_the_generator_early_closes_the_http_stream():
    fake = FakeOpenAI().script(FakeReply(text=TEXT * 20))
    stream = _provider(fake).stream_chat(messages=MESSAGES, params=PARAMS, call_id="c")
    assert (await anext(stream)).text
    await stream.aclose()
    assert fake.requests[0]["outcome"] == "closed"


async def test_base_url_reaches_an_openai_compatible_server_with_a_placeholder_key():
    fake = FakeOpenAI()
    provider = _provider(fake, api_key="", base_url="http://127.0.0.1:11434/v1")
    deltas = await _collect(provider)
    assert "".join(d.text for d in deltas) == "Hello from the fake model."
    record = fake.requests[0]
    assert record["url"] == "http://127.0.0.1:11434/v1/chat/completions"
    assert record["headers"]["authorization"] == f"Bearer {PLACEHOLDER_KEY}"


def test_describe_names_the_server():
    fake = FakeOpenAI()
    assert _provider(fake).describe("gpt-4.1") == "OpenAI gpt-4.1 at https://api.openai.com/v1"
    assert _provider(fake).describe() == "OpenAI at https://api.openai.com/v1"
    local = _provider(fake, api_key="", base_url="http://gpu:8000/v1")
    assert local.describe() == "OpenAI-compatible server at http://gpu:8000/v1"
    assert local.describe("llama3") == "OpenAI-compatible server (llama3) at http://gpu:8000/v1"
    assert _provider(fake, description="Demo").describe("x") == "Demo"


def test_a_key_is_required_without_a_base_url_and_the_timeout_must_be_positive():
    with pytest.raises(ValueError, match="api_key"):
        OpenAIChatProvider(api_key="", base_url=None)
    with pytest.raises(ValueError, match="request_timeout"):
        OpenAIChatProvider(api_key="sk", request_timeout=0)


async def test_failures_are_logged_with_the_call_id(caplog):
    with caplog.at_level(logging.WARNING, logger="llm.openai_adapter"):
        await _fails(FakeOpenAI().fail(Fault.AUTH))
    assert "call=call-1 chat request failed (auth)" in caplog.text


def test_unexpected_exceptions_are_unknown_and_provider_errors_pass_through():
    assert classify_error(ValueError("bad json")).kind is ErrorKind.UNKNOWN
    assert classify_error(ValueError("bad json")).message == "bad json"
    original = ProviderError(ErrorKind.AUTH, "x")
    assert classify_error(original) is original
    assert classify_error(httpx2.ConnectError("refused")).kind is ErrorKind.NETWORK
    assert classify_error(httpx2.ReadTimeout("slow")).kind is ErrorKind.TIMEOUT


def test_retry_after_is_read_in_milliseconds_seconds_or_as_a_date():
    def response(**headers: str) -> httpx2.Response:
        return httpx2.Response(429, headers={k.replace("_", "-"): v for k, v in headers.items()})

    assert retry_after_seconds(response(retry_after_ms="250", retry_after="9")) == 0.25
    assert retry_after_seconds(response(retry_after="3")) == 3.0
    assert retry_after_seconds(response(retry_after="-3")) == 0.0
    assert retry_after_seconds(response(retry_after="soon")) is None
    assert retry_after_seconds(response()) is None
    assert retry_after_seconds(None) is None
    in_a_minute = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 55 <= retry_after_seconds(response(retry_after=in_a_minute)) <= 60
