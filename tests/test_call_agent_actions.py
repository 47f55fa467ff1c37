"""The agent acts during a call: tools through the call session, the call ended by the agent.

The model is the HTTP-level fake (or the demo responder) under the real OpenAI SDK; the
port is the recording ``CallPort`` of the session tests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import json
import time

import pytest
from channels.db import database_sync_to_async

from bookings.models import Meeting
from calls import services
from calls.session import CallSession, Request
from llm.demo import build_demo_provider
from llm.fake_openai import FakeOpenAI, FakeReply, FakeToolCall, Fault
from llm.openai_adapter import OpenAIChatProvider
from tests.calls_helpers import stored_call, stored_messages
from tests.support import BeepEngine
from tests.test_call_session import RecordingPort

pytestmark = [pytest.mark.django_db(transaction=True)]

TYPED = Request("voicechat.text.input", "req-1")
GOODBYE = "Thanks for your time. ||BREAK|| Have a great day, goodbye!"


class TimedPort(RecordingPort):
    """Also notes when each audio frame and the end of the call went out."""

    def __init__(self) -> None:
        super().__init__()
        self.audio_bytes = 0
        self.at: list[tuple[str, float]] = []

    async def response_audio(self, utterance_id: str, pcm: bytes, sample_rate: int) -> None:
        self.audio_bytes += len(pcm)
        self.at.append(("audio", time.monotonic()))
        await super().response_audio(utterance_id, pcm, sample_rate)

    async def call_ended(self, reason: str, message: str | None) -> None:
        self.at.append(("ended", time.monotonic()))
        await super().call_ended(reason, message)


def _fake_model(*replies: FakeReply) -> tuple[FakeOpenAI, OpenAIChatProvider]:
    fake = FakeOpenAI()
    fake.script(*replies)
    return fake, OpenAIChatProvider(api_key="sk-test", http_client=fake.http_client())


async def _say(session: CallSession, port: RecordingPort, text: str) -> None:
    await session.text_input(text, request=TYPED)
    await asyncio.wait_for(asyncio.gather(*session.turn_tasks), 15)


@database_sync_to_async
def _meetings(session_id: str) -> list[Meeting]:
    return list(Meeting.objects.filter(call__session_id=session_id))


async def test_end_call_waits_for_the_goodbye_audio_then_ends_the_call_and_stores_the_outcome(use_engines):
    # The goodbye is still being synthesized (slow engine) when the model's end_call runs.
    speech = BeepEngine(block_delay=0.1)
    fake, provider = _fake_model(
        FakeReply(
            text=GOODBYE,
            tool_calls=[FakeToolCall("end_call", {"outcome": "not_interested", "summary": "Has a vendor"})],
        )
    )
    use_engines(chat=provider, speech=speech)
    port = TimedPort()
    session = CallSession(port=port, transport="test")
    await session.start()
    end_call, ran_at = session.conversation.tools.get("end_call"), []

    async def timed_end_call(context, **arguments):
        ran_at.append(time.monotonic())
        return await end_call.handler(context, **arguments)

    session.conversation.tools.add(dataclasses.replace(end_call, handler=timed_end_call))
    await _say(session, port, "We're not interested, thanks.")
    await asyncio.wait_for(port.closed.wait(), 5)
    await session.hangup()

    kinds = port.kinds()
    assert kinds[-3:] == ["complete", "ended", "close"]
    assert "stop" not in kinds  # the goodbye was not cut
    assert port.calls[-2] == ("ended", "agent_ended") and port.calls[-1] == ("close", 1000)
    # Every byte of both chunks' audio went out before the call ended.
    spoken = ["Thanks for your time.", "Have a great day, goodbye!"]
    assert speech.spoken == spoken
    assert port.audio_bytes == sum(len(text) * 640 for text in spoken)
    last_audio = max(at for kind, at in port.at if kind == "audio")
    assert ran_at[0] < last_audio  # end_call ran while the goodbye was still being synthesized
    assert last_audio <= dict(port.at)["ended"]
    assert len(fake.requests) == 1  # the goodbye came with the call: no follow-up request
    call = await stored_call(session.session_id)
    assert (call.end_reason, call.outcome, call.outcome_source, call.outcome_summary) == (
        "agent_ended",
        "not_interested",
        "agent",
        "Has a vendor",
    )
    reply = (await stored_messages(session.session_id))[-1]
    assert [(t["name"], t["ok"]) for t in reply.tool_calls] == [("end_call", True)]
    assert reply.text == "Thanks for your time. Have a great day, goodbye!"


async def test_outcomes_set_before_the_call_row_is_written_are_stored_in_order(use_engines, monkeypatch):
    # A slow database: the call's own row is written 0.6 s after the call started, while
    # the model books a meeting and ends the call at once (CI saw end_call land first).
    original_start = services.call_start

    @functools.wraps(original_start)
    def slow_call_start(**kwargs):
        time.sleep(0.6)
        return original_start(**kwargs)

    monkeypatch.setattr(services, "call_start", slow_call_start)
    day = _tuesday_in_five_weeks()
    _fake, provider = _fake_model(
        FakeReply(
            text="Booked. ||BREAK|| Goodbye!",
            tool_calls=[
                FakeToolCall("book_meeting", {"start": f"{day}T10:00", "duration_minutes": 30}),
                FakeToolCall("end_call", {"outcome": "not_interested", "summary": "Wants the demo only"}),
            ],
        )
    )
    use_engines(chat=provider, speech=BeepEngine())
    port = RecordingPort()
    session = CallSession(port=port, transport="test")
    await session.start()
    await _say(session, port, "Tuesday at ten works, then I have to go.")
    await asyncio.wait_for(port.closed.wait(), 5)
    await session.hangup()

    call = await stored_call(session.session_id)
    # The booked meeting outranks the outcome given with end_call; its summary is kept.
    assert (call.end_reason, call.outcome, call.outcome_source, call.outcome_summary) == (
        "agent_ended",
        "meeting_booked",
        "agent",
        "Wants the demo only",
    )
    assert [meeting.start.date() for meeting in await _meetings(session.session_id)] == [day]


def _tuesday_in_five_weeks() -> dt.date:
    today = dt.datetime.now(dt.UTC).date() + dt.timedelta(weeks=5)
    return today + dt.timedelta(days=(1 - today.weekday()) % 7)


async def test_a_meeting_booked_by_the_model_is_stored_with_the_call_and_the_tool_call_in_the_transcript(
    use_engines,
):
    day = _tuesday_in_five_weeks()
    fake, provider = _fake_model(
        FakeReply(
            text="Let me book that.",
            tool_calls=[
                FakeToolCall("book_meeting", {"start": f"{day}T10:00", "duration_minutes": 30}, piece=3)
            ],
        ),
        FakeReply(text="You're booked for Tuesday the second of June at ten."),
    )
    use_engines(chat=provider, speech=BeepEngine())
    port = RecordingPort()
    session = CallSession(port=port, transport="test")
    await session.start()
    await _say(session, port, "Tuesday June 2nd at ten works")
    await session.hangup()

    # One reply, one utterance: the text before the tool and the follow-up.
    assert port.kinds().count("start") == 1 and port.kinds().count("complete") == 1
    assert [c[2] for c in port.calls if c[0] == "text"] == [
        "Let me book that.",
        "You're booked for Tuesday the second of June at ten.",
    ]
    [meeting] = await _meetings(session.session_id)
    assert meeting.start.isoformat() == f"{day}T10:00:00+00:00"
    reply = (await stored_messages(session.session_id))[-1]
    [record] = reply.tool_calls
    assert (record["name"], record["ok"], record["arguments"]) == (
        "book_meeting",
        True,
        json.dumps({"start": f"{day}T10:00", "duration_minutes": 30}),
    )
    assert f'"booked": "Tuesday {day.day} {day:%B %Y} at 10:00 (UTC), 30 minutes"' in record["result"]
    assert (await stored_call(session.session_id)).outcome == "meeting_booked"
    tool_message = fake.requests[1]["json"]["messages"][-1]
    assert tool_message["role"] == "tool" and '"ok": true' in tool_message["content"]


async def test_the_tier_3_fallback_ends_the_call_after_its_message(use_engines):
    _, provider = _fake_model(*[FakeReply(fault=Fault.SERVER_ERROR)] * 3)
    use_engines(chat=provider, speech=BeepEngine())
    port = RecordingPort()
    session = CallSession(port=port, transport="test")
    await session.start()
    for n in range(3):
        assert not port.closed.is_set()
        await _say(session, port, f"hello {n}")
    await asyncio.wait_for(port.closed.wait(), 5)
    await session.hangup()
    assert port.kinds()[-3:] == ["complete", "ended", "close"]
    call = await stored_call(session.session_id)
    assert (call.end_reason, call.outcome) == ("agent_ended", "failed")


async def test_the_demo_responder_books_a_meeting_and_ends_the_call_recorded_as_model_demo(use_engines):
    use_engines(chat=build_demo_provider(), speech=BeepEngine())
    port = RecordingPort()
    session = CallSession(port=port, transport="test")
    await session.start()
    await _say(session, port, "Sure, I'd like a demo")
    await _say(session, port, "Tuesday works for me")
    await _say(session, port, "Great, thanks, bye")
    await asyncio.wait_for(port.closed.wait(), 5)
    await session.hangup()

    texts = [c[2] for c in port.calls if c[0] == "text"]
    assert "Perfect, Tuesday at ten it is." in texts
    assert any(t.startswith("You're all set: Tuesday") for t in texts)
    assert texts[-1] == "Goodbye!"
    [meeting] = await _meetings(session.session_id)
    assert (meeting.start.weekday(), meeting.start.hour, meeting.duration_minutes) == (1, 10, 30)
    call = await stored_call(session.session_id)
    assert (call.llm_model, call.outcome, call.end_reason) == ("demo", "meeting_booked", "agent_ended")
    messages = await stored_messages(session.session_id)
    assert [[t["name"] for t in m.tool_calls] for m in messages if m.role == "assistant"] == [
        [],
        ["book_meeting"],
        ["end_call"],
    ]


async def test_a_second_demo_caller_asking_for_the_same_slot_gets_the_next_free_one(use_engines):
    use_engines(chat=build_demo_provider(), speech=BeepEngine())
    starts = []
    for _ in range(2):
        port = RecordingPort()
        session = CallSession(port=port, transport="test")
        await session.start()
        await _say(session, port, "Tuesday please")
        await session.hangup()
        [meeting] = await _meetings(session.session_id)
        starts.append(meeting.start)
        texts = [c[2] for c in port.calls if c[0] == "text"]
    assert (starts[1] - starts[0]).total_seconds() == 30 * 60
    assert "That time was just taken, so I'll take the next free slot." in texts
    assert any(t.startswith("You're all set: Tuesday") and "10:30" in t for t in texts)


async def test_a_barge_in_while_a_meeting_is_being_booked_stops_the_reply_and_the_next_turn_sees_the_booking(
    use_engines,
):
    day = _tuesday_in_five_weeks()
    fake, provider = _fake_model(
        FakeReply(
            text="Let me book that for you.",
            tool_calls=[
                FakeToolCall("book_meeting", {"start": f"{day}T10:00", "duration_minutes": 30}, id="call_1")
            ],
        ),
        FakeReply(text="Of course, what would you like to know?"),
    )
    use_engines(chat=provider, speech=BeepEngine())
    port = RecordingPort()
    session = CallSession(port=port, transport="test")
    await session.start()
    book, started, release = session.conversation.tools.get("book_meeting"), asyncio.Event(), asyncio.Event()

    async def slow_book(context, **arguments):
        started.set()
        await release.wait()  # the calendar is slow
        return await book.handler(context, **arguments)

    session.conversation.tools.add(dataclasses.replace(book, handler=slow_book))
    await session.text_input("Tuesday at ten", request=TYPED)
    await asyncio.wait_for(started.wait(), 5)
    first_utterance = next(c[1] for c in port.calls if c[0] == "start")
    barge_in = asyncio.create_task(session.text_input("Wait, one question first", request=TYPED))
    await asyncio.sleep(0.1)
    release.set()
    await barge_in
    await asyncio.wait_for(asyncio.gather(*session.turn_tasks), 10)
    await session.hangup()

    assert ("stop", first_utterance) in port.calls
    assert len(fake.requests) == 2  # no follow-up for the cut reply; the next turn's request
    messages = fake.requests[1]["json"]["messages"]
    assert [m["role"] for m in messages[1:]] == ["user", "assistant", "tool", "user"]
    assert messages[2]["tool_calls"][0]["id"] == messages[3]["tool_call_id"] == "call_1"
    assert json.loads(messages[3]["content"])["ok"] is True  # the booking was let finish
    assert len(await _meetings(session.session_id)) == 1
    stored = [m for m in await stored_messages(session.session_id) if m.role == "assistant"]
    assert stored[0].interrupted is True
    assert [t["name"] for t in stored[0].tool_calls] == ["book_meeting"]
    assert stored[1].text == "Of course, what would you like to know?"


class HeldGoodbyeEngine(BeepEngine):
    """Speaks the first chunk, then holds the goodbye's synthesis until the test lets go."""

    def __init__(self) -> None:
        super().__init__()
        self.goodbye_started = asyncio.Event()
        self.release = asyncio.Event()

    async def synthesize(self, text: str, *, voice_id: str):
        if "goodbye" in text:
            self.goodbye_started.set()
            await self.release.wait()
        async for block in super().synthesize(text, voice_id=voice_id):
            yield block


async def test_the_caller_talking_over_the_goodbye_still_ends_the_call_after_what_was_heard(use_engines):
    speech = HeldGoodbyeEngine()
    fake, provider = _fake_model(
        FakeReply(
            text=GOODBYE,
            tool_calls=[FakeToolCall("end_call", {"outcome": "not_interested", "summary": "Has a vendor"})],
        )
    )
    use_engines(chat=provider, speech=speech)
    port = RecordingPort()
    session = CallSession(port=port, transport="test")
    await session.start()
    await session.text_input("We're not interested, thanks.", request=TYPED)
    await asyncio.wait_for(speech.goodbye_started.wait(), 5)
    # The goodbye is being synthesized once end_call has run and the reply knows it ends the call.
    replying = session.replying
    for _ in range(500):
        if replying[3].end_call is not None:
            break
        await asyncio.sleep(0.01)
    assert replying[3].end_call is not None
    utterance = next(c[1] for c in port.calls if c[0] == "start")

    # "Bye!" over the goodbye: the caller starts talking (a barge-in).
    await session.audio_start(
        request=Request("voicechat.audio.start", "req-2"), sample_rate=16000, voice_id=None, language=None
    )
    await asyncio.wait_for(port.closed.wait(), 5)
    await session.hangup()

    kinds = port.kinds()
    assert ("stop", utterance) in port.calls
    assert kinds[-2:] == ["ended", "close"]
    assert port.calls[-2] == ("ended", "agent_ended") and port.calls[-1] == ("close", 1000)
    assert speech.spoken == ["Thanks for your time."]  # the goodbye was cut before its audio
    assert len(fake.requests) == 1  # no model request for the cut reply or after it
    call = await stored_call(session.session_id)
    assert (call.end_reason, call.outcome, call.outcome_summary) == (
        "agent_ended",
        "not_interested",
        "Has a vendor",
    )
    reply = (await stored_messages(session.session_id))[-1]
    assert (reply.interrupted, reply.text) == (True, "Thanks for your time.")
