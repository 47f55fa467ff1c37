"""Each model fault, through the real SDK inside a live call, leaves the database right."""

from __future__ import annotations

import pytest

from llm.fake_openai import FakeOpenAI, FakeReply, Fault
from llm.openai_adapter import OpenAIChatProvider
from tests.calls_helpers import Caller, stored_messages
from tests.support import BeepEngine

pytestmark = [pytest.mark.django_db(transaction=True)]

SAID = "Glad you asked. ||BREAK|| Our plans start at four hundred dollars. ||BREAK|| And then more"


@pytest.mark.parametrize(
    ("reply", "kind", "spoken_before"),
    [
        (FakeReply(fault=Fault.AUTH), "auth", []),
        (FakeReply(fault=Fault.RATE_LIMIT, retry_after=3), "rate_limit", []),
        (FakeReply(fault=Fault.SERVER_ERROR), "server", []),
        (FakeReply(fault=Fault.UNAVAILABLE), "server", []),
        (FakeReply(fault=Fault.CONNECTION), "network", []),
        (FakeReply(fault=Fault.TIMEOUT), "timeout", []),
        (FakeReply(fault=Fault.EMPTY), "unknown", []),
        (
            FakeReply(text=SAID, fault=Fault.DROP, fault_after=21),
            "network",
            ["Glad you asked.", "Our plans start at four hundred dollars."],
        ),
        (
            FakeReply(text=SAID, fault=Fault.STALL, fault_after=21, stall_seconds=5),
            "timeout",
            ["Glad you asked.", "Our plans start at four hundred dollars."],
        ),
    ],
)
async def test_a_model_fault_is_spoken_as_the_tier_text_and_stored(
    use_engines, settings, reply, kind, spoken_before
):
    settings.VANTUM_LLM = __import__("dataclasses").replace(settings.VANTUM_LLM, stall_timeout=0.3)
    fake = FakeOpenAI().script(reply)
    use_engines(chat=OpenAIChatProvider(api_key="sk", http_client=fake.http_client()), speech=BeepEngine())
    caller = Caller()
    await caller.connect()
    await caller.send("voicechat.text.input", {"text": "How much?"})
    events = await caller.until("voicechat.response.complete", timeout=15)
    await caller.hang_up(after_listening=True)
    tier1 = settings.VANTUM_LLM.fallback_messages[0]
    texts = [e["payload"]["text"] for e in events if e["eventType"] == "voicechat.response.text"]
    assert texts == [*spoken_before, tier1]
    user, assistant = await stored_messages(caller.session_id)
    assert (user.role, user.text) == ("user", "How much?")
    assert assistant.text == " ".join([*spoken_before, tier1])
    assert (assistant.fallback_tier, assistant.error_kind, assistant.interrupted) == (1, kind, False)
    assert [c["fallback"] for c in assistant.chunks] == [False] * len(spoken_before) + [True]
    assert assistant.metrics.error_kind == kind
    assert assistant.metrics.chunk_count == len(spoken_before) + 1
