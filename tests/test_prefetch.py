"""Preemptive generation (``llm.prefetch``): a request started ahead of its turn, through
the real OpenAI SDK path against the HTTP-level fake model."""

from __future__ import annotations

import asyncio

import pytest

from llm.config import ModelParams
from llm.fake_openai import FakeOpenAI, FakeReply, Fault
from llm.openai_adapter import OpenAIChatProvider
from llm.prefetch import PrefetchingProvider
from llm.providers import ProviderError

PARAMS = ModelParams(model="gpt-test")
ASKED = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who is this?"}]


def _provider(*replies: FakeReply) -> tuple[FakeOpenAI, PrefetchingProvider]:
    fake = FakeOpenAI()
    fake.script(*replies)
    return fake, PrefetchingProvider(OpenAIChatProvider(api_key="sk-test", http_client=fake.http_client()))


async def _text(stream) -> str:
    return "".join([delta.text async for delta in stream if delta.text])


async def test_the_turn_takes_the_held_stream_of_the_same_request_with_no_second_request():
    fake, provider = _provider(FakeReply(text="This is Alex from Vantum.", first_token_delay=0.2))
    provider.start(messages=ASKED, params=PARAMS, call_id="c1")
    await asyncio.sleep(0.3)  # the first tokens arrived while the caller was still silent
    text = await _text(provider.stream_chat(messages=list(ASKED), params=PARAMS, call_id="c1"))

    assert text == "This is Alex from Vantum."
    assert len(fake.requests) == 1
    assert (provider.counts.started, provider.counts.used, provider.counts.discarded) == (1, 1, 0)


async def test_a_different_request_drops_the_held_one_and_asks_again():
    fake, provider = _provider(FakeReply(text="Held answer."), FakeReply(text="Fresh answer."))
    provider.start(messages=ASKED, params=PARAMS, call_id="c1")
    await asyncio.sleep(0.05)
    changed = [*ASKED[:1], {"role": "user", "content": "Who is this, and what do you sell?"}]
    assert await _text(provider.stream_chat(messages=changed, params=PARAMS, call_id="c1")) == "Fresh answer."
    assert [r["json"]["messages"][-1]["content"] for r in fake.requests] == [
        "Who is this?",
        "Who is this, and what do you sell?",
    ]
    assert (provider.counts.used, provider.counts.discarded) == (0, 1)
    assert not provider.holding


async def test_a_discarded_request_is_closed_and_the_next_turn_asks_the_model():
    fake, provider = _provider(FakeReply(text="word " * 200, token_delay=0.01), FakeReply(text="Sure."))
    provider.start(messages=ASKED, params=PARAMS, call_id="c1")
    await asyncio.sleep(0.1)
    held = provider._held.task
    provider.discard()
    await asyncio.sleep(0.05)
    assert held.done()  # the stream was closed, not read on in the background
    assert await _text(provider.stream_chat(messages=ASKED, params=PARAMS, call_id="c1")) == "Sure."
    assert len(fake.requests) == 2


async def test_the_models_error_reaches_the_turn_that_takes_the_stream():
    _, provider = _provider(FakeReply(text="Partial answer here", fault=Fault.DROP, fault_after=2))
    provider.start(messages=ASKED, params=PARAMS, call_id="c1")
    await asyncio.sleep(0.1)
    received: list[str] = []
    with pytest.raises(ProviderError):
        async for delta in provider.stream_chat(messages=ASKED, params=PARAMS, call_id="c1"):
            received.append(delta.text or "")
    assert "".join(received).startswith("Partial")
