"""The streaming turn through the real OpenAI SDK, on the HTTP-level fake."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

from llm.config import LLMConfig
from llm.fake_openai import FakeOpenAI, FakeReply, Fault
from llm.metrics import LLMServiceMetrics
from llm.openai_adapter import OpenAIChatProvider
from llm.providers import ErrorKind
from llm.session import Conversation
from tests.support import RecordingSink

CONFIG = LLMConfig(request_timeout=2.0, streaming_timeout=10.0, stall_timeout=0.5, retry_delays=(0.0,))
TIER1, TIER2, TIER3 = CONFIG.fallback_messages
REPLY = "Hi, this is Alex from Vantum. ||BREAK|| How is your week going?"


def _setup(*replies: FakeReply, config: LLMConfig = CONFIG):
    fake = FakeOpenAI()
    fake.script(*replies)
    provider = OpenAIChatProvider(
        api_key="sk-test", request_timeout=config.request_timeout, http_client=fake.http_client()
    )
    metrics = LLMServiceMetrics()
    conversation = Conversation(call_id="call-x", provider=provider, config=config, metrics=metrics)
    return fake, conversation, metrics


async def test_the_first_chunk_reaches_speech_within_100_ms_of_the_marker():
    # The marker completes with the fifth token, then the model stalls for two seconds.
    tokens = ["Hello", " there", ",", " friend.", " ||BREAK||", " And", " then", " more."]
    fake, conversation, _ = _setup(
        FakeReply(tokens=tokens, fault=Fault.STALL, fault_after=5, stall_seconds=2.0),
        config=dataclasses.replace(CONFIG, stall_timeout=5.0),
    )
    sink = RecordingSink()
    reply = await conversation.respond("hi", sink=sink)
    marker_left_fake = fake.emitted[4].at
    assert sink.spoken[0] == "Hello there, friend."
    assert sink.received_at[0] - marker_left_fake < 0.1
    assert sink.spoken == ["Hello there, friend.", "And then more."]
    assert reply.error is None


async def test_chunks_are_spoken_while_the_model_is_still_writing():
    text = "First point made here. ||BREAK|| " + " ".join(["More words keep coming."] * 8)
    fake, conversation, _ = _setup(FakeReply(text=text, token_delay=0.01))
    sink = RecordingSink()
    await conversation.respond("hi", sink=sink)
    assert sink.received_at[0] < fake.emitted[-1].at


async def test_what_the_sdk_sends_carries_the_model_parameters_and_usage_request():
    fake, conversation, _ = _setup(FakeReply(text=REPLY))
    conversation.update_prospect({"name": "Dana"})
    await conversation.respond("Who is this?", sink=RecordingSink())
    body = fake.requests[0]["json"]
    assert body["model"] == "gpt-4.1-2025-04-14"
    assert (body["temperature"], body["max_tokens"], body["top_p"]) == (0.7, 500, 1.0)
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"][0]["role"] == "system"
    assert body["messages"][0]["content"].endswith('inside it.\n{"name": "Dana"}')
    assert body["messages"][1:] == [{"role": "user", "content": "Who is this?"}]


async def test_usage_is_counted_per_turn():
    fake, conversation, _ = _setup(FakeReply(text=REPLY, prompt_tokens=321))
    reply = await conversation.respond("hi", sink=RecordingSink())
    assert reply.prompt_tokens == 321
    assert reply.completion_tokens == len(fake.emitted)
    assert reply.first_token_at <= reply.first_chunk_at <= reply.finished_at


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        (Fault.AUTH, ErrorKind.AUTH),
        (Fault.RATE_LIMIT, ErrorKind.RATE_LIMIT),
        (Fault.SERVER_ERROR, ErrorKind.SERVER),
        (Fault.UNAVAILABLE, ErrorKind.SERVER),
        (Fault.BAD_REQUEST, ErrorKind.INVALID_REQUEST),
        (Fault.CONNECTION, ErrorKind.NETWORK),
        (Fault.TIMEOUT, ErrorKind.TIMEOUT),
        (Fault.EMPTY, ErrorKind.UNKNOWN),
    ],
)
async def test_each_fault_before_speech_speaks_tier_1_and_keeps_the_context_coherent(fault, kind):
    fake, conversation, metrics = _setup(FakeReply(fault=fault, retry_after=1), FakeReply(text=REPLY))
    sink = RecordingSink()
    reply = await conversation.respond("Hello?", sink=sink)
    assert reply.error.kind is kind
    assert sink.spoken == [TIER1]
    assert reply.fallback_tier == 1
    second = await conversation.respond("Are you there?", sink=RecordingSink())
    assert second.error is None
    assert fake.requests[1]["json"]["messages"][1:] == [
        {"role": "user", "content": "Hello?"},
        {"role": "assistant", "content": TIER1},
        {"role": "user", "content": "Are you there?"},
    ]
    snapshot = metrics.snapshot()
    assert (snapshot["totalRequests"], snapshot["totalFailures"], snapshot["totalSuccesses"]) == (2, 1, 1)
    assert snapshot["tier1Fallbacks"] == 1
    assert snapshot["failuresByKind"] == {kind.value: 1}


@pytest.mark.parametrize(
    ("fault", "kind"), [(Fault.DROP, ErrorKind.NETWORK), (Fault.STALL, ErrorKind.TIMEOUT)]
)
async def test_a_fault_mid_stream_keeps_what_was_said_then_speaks_the_tier_text(fault, kind):
    text = "Great question. ||BREAK|| Our plans start at four hundred dollars. ||BREAK|| And they scale"
    tokens = FakeReply(text=text).token_list()
    _fake, conversation, metrics = _setup(
        FakeReply(text=text, fault=fault, fault_after=len(tokens) - 3, stall_seconds=3.0)
    )
    sink = RecordingSink()
    reply = await conversation.respond("Price?", sink=sink)
    assert reply.error.kind is kind
    assert sink.spoken == ["Great question.", "Our plans start at four hundred dollars.", TIER1]
    assert conversation.context.messages[-1].content == (
        f"Great question. Our plans start at four hundred dollars. {TIER1}"
    )
    assert metrics.snapshot()["failuresByKind"] == {kind.value: 1}


async def test_consecutive_failures_escalate_through_the_tiers_and_success_resets():
    _fake, conversation, metrics = _setup(
        FakeReply(fault=Fault.SERVER_ERROR),
        FakeReply(fault=Fault.CONNECTION),
        FakeReply(fault=Fault.RATE_LIMIT),
        FakeReply(text=REPLY),
        FakeReply(fault=Fault.AUTH),
    )
    spoken = []
    for n in range(5):
        sink = RecordingSink()
        await conversation.respond(f"turn {n}", sink=sink)
        spoken.append(sink.spoken)
    assert spoken == [
        [TIER1],
        [TIER2],
        [TIER3],
        ["Hi, this is Alex from Vantum.", "How is your week going?"],
        [TIER1],
    ]
    snapshot = metrics.snapshot()
    assert (snapshot["tier1Fallbacks"], snapshot["tier2Fallbacks"], snapshot["tier3Fallbacks"]) == (2, 1, 1)


async def test_a_rate_limit_is_retried_after_its_retry_after_when_retries_are_on():
    config = dataclasses.replace(CONFIG, max_retries=1, retry_delays=(0.0,))
    fake, conversation, _ = _setup(
        FakeReply(fault=Fault.RATE_LIMIT, retry_after=0.2), FakeReply(text=REPLY), config=config
    )
    started = time.monotonic()
    reply = await conversation.respond("hi", sink=RecordingSink())
    assert reply.error is None
    assert reply.retries == 1
    assert time.monotonic() - started >= 0.2
    assert len(fake.requests) == 2


async def test_a_slow_first_token_is_a_timeout():
    config = dataclasses.replace(CONFIG, request_timeout=0.2)
    _, conversation, _ = _setup(FakeReply(text=REPLY, first_token_delay=1.0), config=config)
    reply = await conversation.respond("hi", sink=RecordingSink())
    assert reply.error.kind is ErrorKind.TIMEOUT
    assert reply.error.message == "no first token within 0.2s"


async def test_cancelling_a_turn_closes_the_stream_promptly():
    fake, conversation, _ = _setup(FakeReply(text=REPLY * 20, token_delay=0.05))
    sink = RecordingSink()
    task = asyncio.create_task(conversation.respond("hi", sink=sink))
    await asyncio.sleep(0.3)
    emitted_before = len(fake.emitted)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.2)
    assert len(fake.emitted) == emitted_before  # the fake stopped producing: the stream was closed
    assert not conversation.busy


async def test_base_url_reaches_an_openai_compatible_server():
    fake = FakeOpenAI()
    fake.script(FakeReply(text=REPLY))
    provider = OpenAIChatProvider(
        api_key="", base_url="http://127.0.0.1:11434/v1", http_client=fake.http_client()
    )
    conversation = Conversation(call_id="c", provider=provider, config=CONFIG, metrics=LLMServiceMetrics())
    await conversation.respond("hi", sink=RecordingSink())
    assert fake.requests[0]["url"] == "http://127.0.0.1:11434/v1/chat/completions"
    assert fake.requests[0]["headers"]["authorization"] == "Bearer not-needed"
