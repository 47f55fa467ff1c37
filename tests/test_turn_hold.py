"""A slow or rate-limited model never means a silent call: retry-after waits are capped and
a late first token gets a short spoken "One moment." (real OpenAI SDK, HTTP-level fake)."""

from __future__ import annotations

import asyncio
import dataclasses

from llm.config import LLMConfig
from llm.fake_openai import FakeOpenAI, FakeReply, Fault
from llm.metrics import LLMServiceMetrics
from llm.openai_adapter import OpenAIChatProvider
from llm.session import Conversation
from tests.support import RecordingSink

REPLY = "Hi, this is Alex from Vantum. ||BREAK|| How is your week going?"
CHUNKS = ["Hi, this is Alex from Vantum.", "How is your week going?"]
CONFIG = LLMConfig(
    request_timeout=5.0,
    streaming_timeout=10.0,
    stall_timeout=2.0,
    retry_delays=(0.0,),
    hold_message_after=0.3,
    hold_message="One moment.",
)


def _conversation(fake: FakeOpenAI, config: LLMConfig = CONFIG) -> Conversation:
    provider = OpenAIChatProvider(
        api_key="sk-test", request_timeout=config.request_timeout, http_client=fake.http_client()
    )
    return Conversation(call_id="call-hold", provider=provider, config=config, metrics=LLMServiceMetrics())


async def test_a_late_first_token_is_covered_by_one_spoken_hold_message():
    fake = FakeOpenAI().script(FakeReply(text=REPLY, first_token_delay=1.2))
    conversation = _conversation(fake)
    sink = RecordingSink()
    reply = await asyncio.wait_for(conversation.respond("hi", sink=sink), 20)
    assert sink.spoken == ["One moment.", *CHUNKS]
    assert [(c.index, c.text, c.is_hold) for c in reply.chunks] == [
        (0, "One moment.", True),
        (1, CHUNKS[0], False),
        (2, CHUNKS[1], False),
    ]
    assert reply.error is None
    # Said before the first token arrived.
    assert sink.received_at[0] < reply.first_token_at


async def test_a_prompt_first_token_has_no_hold_message():
    fake = FakeOpenAI().script(FakeReply(text=REPLY))
    sink = RecordingSink()
    reply = await _conversation(fake).respond("hi", sink=sink)
    assert sink.spoken == CHUNKS
    assert not any(c.is_hold for c in reply.chunks)


async def test_a_huge_retry_after_is_capped_and_the_caller_hears_one_hold_message():
    fake = FakeOpenAI()
    fake.fail(Fault.RATE_LIMIT, retry_after=3600)
    fake.script(FakeReply(text=REPLY))
    config = dataclasses.replace(CONFIG, max_retries=2, retry_after_max=0.6)
    sink = RecordingSink()
    reply = await asyncio.wait_for(_conversation(fake, config).respond("hi", sink=sink), 20)
    assert reply.retries == 1
    assert reply.error is None
    assert sink.spoken == ["One moment.", *CHUNKS]
    assert len(fake.requests) == 2


async def test_a_model_that_never_answers_gets_the_hold_then_the_fallback_not_an_empty_reply():
    fake = FakeOpenAI().script(FakeReply(text=REPLY, first_token_delay=3.0))
    config = dataclasses.replace(CONFIG, request_timeout=1.0)
    sink = RecordingSink()
    reply = await asyncio.wait_for(_conversation(fake, config).respond("hi", sink=sink), 20)
    assert sink.spoken == ["One moment.", config.fallback_for_tier(1)]
    assert reply.error is not None and "no first token within 1s" in reply.error.message
    assert reply.fallback_tier == 1


async def test_the_hold_message_can_be_turned_off():
    fake = FakeOpenAI().script(FakeReply(text=REPLY, first_token_delay=0.8))
    sink = RecordingSink()
    await _conversation(fake, dataclasses.replace(CONFIG, hold_message="")).respond("hi", sink=sink)
    assert sink.spoken == CHUNKS
