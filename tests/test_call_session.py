"""The transport-free call object, driven by plain method calls through a recording port.

The port here is a real ``CallPort`` implementation for tests (it keeps what the call said
and models a phone-like playback position), not a stand-in for the session under test.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from calls.consumers import BrowserPort
from calls.session import CallSession, Request
from tests.calls_helpers import stored_call, stored_messages
from tests.support import BeepEngine, Script, ScriptedProvider, tokens_of

pytestmark = [pytest.mark.django_db(transaction=True)]

REPLY = "Hi, this is Alex from Vantum. ||BREAK|| How is your week going?"
TYPED = Request("voicechat.text.input", "req-1")


class RecordingPort:
    """Keeps every call in order; ``playing`` says whether the caller still hears audio.

    Playback: by default the caller has heard every second of audio sent (a client with no
    buffer); ``played`` (seconds of the reply) models one that is still behind."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.messages: list[str] = []
        self.playing = False
        self.played: float | None = None
        self.sent_seconds: dict[str, float] = {}
        self.closed = asyncio.Event()

    async def response_start(self, utterance_id: str) -> None:
        self.calls.append(("start", utterance_id))

    async def response_text(self, utterance_id: str, index: int, text: str) -> None:
        self.calls.append(("text", index, text))

    async def response_audio(self, utterance_id: str, pcm: bytes, sample_rate: int) -> None:
        self.calls.append(("audio", len(pcm), sample_rate))
        sent = self.sent_seconds.get(utterance_id, 0.0)
        self.sent_seconds[utterance_id] = sent + len(pcm) / 2 / sample_rate

    async def response_complete(self, utterance_id: str, metrics: dict[str, Any]) -> None:
        self.calls.append(("complete", metrics["chunks"]))

    async def response_stop(self, utterance_id: str) -> None:
        self.calls.append(("stop", utterance_id))

    async def transcript_user(self, text: str, message_id: str) -> None:
        self.calls.append(("user", text))

    async def request_error(self, request: Request | None, message: str) -> None:
        self.calls.append(("error", request.event_type if request else None, message))

    async def speech_error(self, error_type: str, message: str, retryable: bool) -> None:
        self.calls.append(("speech_error", error_type))
        self.messages.append(message)

    async def call_ended(self, reason: str, message: str | None) -> None:
        self.calls.append(("ended", reason))

    async def close(self, code: int) -> None:
        self.calls.append(("close", code))
        self.closed.set()

    async def speech_started(self, at_ms: int) -> None:
        self.calls.append(("speech_started", at_ms))

    async def speech_stopped(self, at_ms: int) -> None:
        self.calls.append(("speech_stopped", at_ms))

    async def transcript_partial(self, text: str) -> None:
        self.calls.append(("partial", text))

    def played_seconds(self, utterance_id: str) -> float:
        sent = self.sent_seconds.get(utterance_id, 0.0)
        return sent if self.played is None else min(self.played, sent)

    def may_be_playing(self, utterance_id: str) -> bool:
        return self.playing

    def kinds(self) -> list[str]:
        return [call[0] for call in self.calls]


async def _turn_done(session: CallSession) -> None:
    await asyncio.wait_for(asyncio.gather(*session.turn_tasks), 5)


async def test_a_typed_turn_reaches_the_port_in_order_and_is_stored(use_engines):
    use_engines(chat=ScriptedProvider([Script(tokens_of(REPLY))]), speech=BeepEngine())
    port = RecordingPort()
    session = CallSession(port=port, transport="test")
    await session.start()
    await session.text_input("  Who is this?  ", request=TYPED)
    await _turn_done(session)
    await session.hangup()

    kinds = port.kinds()
    assert kinds[:3] == ["user", "start", "text"]
    assert kinds[-1] == "complete"
    assert [c[1:] for c in port.calls if c[0] == "text"] == [
        (0, "Hi, this is Alex from Vantum."),
        (1, "How is your week going?"),
    ]
    assert port.calls[0] == ("user", "Who is this?")
    assert kinds.index("text") < kinds.index("audio")
    messages = await stored_messages(session.session_id)
    assert [(m.role, m.text) for m in messages] == [
        ("user", "Who is this?"),
        ("assistant", "Hi, this is Alex from Vantum. How is your week going?"),
    ]
    assert (await stored_call(session.session_id)).end_reason == "hangup"


async def test_ending_the_call_stops_the_reply_tells_the_caller_and_records_the_reason(use_engines):
    never = asyncio.Event()
    use_engines(
        chat=ScriptedProvider([Script(tokens_of(REPLY), pause_after=12, resume=never)]), speech=BeepEngine()
    )
    port = RecordingPort()
    session = CallSession(port=port, transport="test")
    await session.start()
    await session.text_input("Hello", request=TYPED)
    while "audio" not in port.kinds():
        await asyncio.sleep(0.01)
    await session.end(reason="agent_ended", message="Goodbye")
    await session.hangup()

    assert port.kinds()[-3:] == ["stop", "ended", "close"]
    assert port.calls[-2] == ("ended", "agent_ended")
    assert port.calls[-1] == ("close", 1000)
    assert (await stored_call(session.session_id)).end_reason == "agent_ended"
    assert (await stored_messages(session.session_id))[-1].interrupted is True


@pytest.mark.parametrize(("playing", "stopped"), [(True, True), (False, False)])
async def test_barge_in_after_the_reply_was_sent_stops_it_only_while_it_may_still_play(
    use_engines, playing, stopped
):
    use_engines(chat=ScriptedProvider([Script(tokens_of(REPLY))]), speech=BeepEngine())
    port = RecordingPort()
    session = CallSession(port=port, transport="test")
    await session.start()
    await session.text_input("Hello", request=TYPED)
    await _turn_done(session)
    port.playing = playing
    await session.audio_start(
        request=Request("voicechat.audio.start"), sample_rate=16000, voice_id=None, language=None
    )
    await session.hangup()

    assert ("stop" in port.kinds()[-1:]) is stopped
    reply = (await stored_messages(session.session_id))[-1]
    assert reply.interrupted is stopped


THREE_CHUNKS = ["Hi, this is Alex from Vantum. ||BREAK|| ", "How is your week going? ||BREAK|| ", "We help."]


async def _sent_seconds_reach(port: RecordingPort, seconds: float) -> None:
    async with asyncio.timeout(10):
        while sum(port.sent_seconds.values()) < seconds:
            await asyncio.sleep(0.01)


async def test_a_reply_cut_while_the_model_writes_keeps_only_what_the_caller_heard(use_engines):
    # Two chunks' audio (1.04 s) went out ahead of playback; the caller had heard 0.3 s of
    # it (inside the first chunk) when they cut in.
    provider = ScriptedProvider(
        [Script(THREE_CHUNKS, pause_after=2, resume=asyncio.Event()), Script(tokens_of("Sure."))]
    )
    use_engines(chat=provider, speech=BeepEngine())
    port = RecordingPort()
    port.played = 0.3
    session = CallSession(port=port, transport="test")
    await session.start()
    await session.text_input("Hello", request=TYPED)
    await _sent_seconds_reach(port, (29 + 23) * 0.02)
    await session.text_input("Sorry, who?", request=TYPED)
    await _turn_done(session)
    await session.hangup()

    assert "stop" in port.kinds()
    first_reply = (await stored_messages(session.session_id))[1]
    assert (first_reply.text, first_reply.interrupted) == ("Hi, this is Alex from Vantum.", True)
    assert [(c["text"], c["spoken"]) for c in first_reply.chunks] == [
        ("Hi, this is Alex from Vantum.", True),
        ("How is your week going?", False),
    ]
    # The model is told what the caller heard, not what was sent.
    assert provider.requests[1][-3:] == [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi, this is Alex from Vantum."},
        {"role": "user", "content": "Sorry, who?"},
    ]


async def test_a_reply_cut_after_it_was_sent_keeps_only_what_the_caller_heard(use_engines):
    provider = ScriptedProvider([Script(THREE_CHUNKS), Script(tokens_of("Sure."))])
    use_engines(chat=provider, speech=BeepEngine())
    port = RecordingPort()
    session = CallSession(port=port, transport="test")
    await session.start()
    await session.text_input("Hello", request=TYPED)
    await _turn_done(session)  # all sent: the caller's side is still playing the second chunk
    port.playing, port.played = True, 0.7
    await session.text_input("Sorry, who?", request=TYPED)
    await _turn_done(session)
    await session.hangup()

    first_reply = (await stored_messages(session.session_id))[1]
    assert (first_reply.text, first_reply.interrupted) == (
        "Hi, this is Alex from Vantum. How is your week going?",
        True,
    )
    assert [c["spoken"] for c in first_reply.chunks] == [True, True, False]
    assert provider.requests[1][-2] == {
        "role": "assistant",
        "content": "Hi, this is Alex from Vantum. How is your week going?",
    }


async def test_the_call_says_an_opener_unprompted_and_the_model_knows_it_was_said(use_engines):
    provider = ScriptedProvider([Script(tokens_of("Great to hear."))])
    use_engines(chat=provider, speech=BeepEngine())
    port = RecordingPort()
    session = CallSession(port=port, transport="test")
    await session.start()
    await asyncio.wait_for(session.say("Hi Dana, this is Alex. ||BREAK|| Is now a good time?"), 5)
    await session.text_input("Sure, go ahead.", request=TYPED)
    await _turn_done(session)
    await session.hangup()

    assert [c for c in port.calls if c[0] == "text"][:2] == [
        ("text", 0, "Hi Dana, this is Alex."),
        ("text", 1, "Is now a good time?"),
    ]
    messages = await stored_messages(session.session_id)
    assert [(m.role, m.text) for m in messages] == [
        ("assistant", "Hi Dana, this is Alex. Is now a good time?"),
        ("user", "Sure, go ahead."),
        ("assistant", "Great to hear."),
    ]
    assert provider.requests[0][1:] == [
        {"role": "assistant", "content": "Hi Dana, this is Alex. Is now a good time?"},
        {"role": "user", "content": "Sure, go ahead."},
    ]


async def test_a_voice_turn_without_speech_to_text_is_refused_with_a_clear_message(use_engines):
    use_engines(chat=ScriptedProvider([Script(tokens_of(REPLY))]), speech=BeepEngine())
    port = RecordingPort()
    session = CallSession(port=port, transport="test")
    session.engines.transcriber = None
    await session.start()
    request = Request("voicechat.audio.end", "req-2")
    await session.audio_start(request=request, sample_rate=16000, voice_id=None, language=None)
    session.audio_chunk(b"\x10\x20" * 16000)
    await session.audio_end(request=request)
    await _turn_done(session)
    await session.hangup()

    assert port.calls == [
        (
            "error",
            "voicechat.audio.end",
            "Speech-to-text is not configured on this server. Please type your message instead.",
        )
    ]


def test_the_browser_may_still_be_playing_a_reply_a_little_after_its_audio_should_have_ended():
    now = [100.0]
    port = BrowserPort(consumer=None, clock=lambda: now[0])
    asyncio.run(_send_two_seconds(port))
    # Sent at t=100: 2 s of audio. A browser ~10 % slow is still playing at 2.2 s.
    for moment, playing in [(101.0, True), (102.2, True), (102.7, True), (102.81, False)]:
        now[0] = moment
        assert port.may_be_playing("u1") is playing, moment
    now[0] = 101.0
    assert port.played_seconds("u1") == 1.0
    now[0] = 150.0
    assert port.played_seconds("u1") == pytest.approx(2.0)
    assert port.may_be_playing("other") is False


async def _send_two_seconds(port: BrowserPort) -> None:
    port.closed = True  # no socket: only the playback bookkeeping runs
    await port.response_start("u1")
    for _ in range(20):
        await port.response_audio("u1", b"\x00\x00" * 1600, 16000)


class SlowFirstTranscriber:
    """Hears ``texts`` in order; the first utterance takes longer than the next ones, as a
    long first sentence does in a busy pool."""

    name = "slow-first"

    def __init__(self, texts: list[str]) -> None:
        self.texts = list(texts)
        self.calls = 0

    async def transcribe(self, pcm: bytes, *, sample_rate: int, language: str | None, call_id: str) -> str:
        self.calls += 1
        number = self.calls
        if number == 1:
            await asyncio.sleep(0.3)
        return self.texts[min(number, len(self.texts)) - 1]


async def test_turns_transcribed_side_by_side_reach_the_transcript_in_the_order_they_were_said(use_engines):
    use_engines(
        chat=ScriptedProvider([Script(tokens_of(REPLY))]),
        speech=BeepEngine(),
        transcriber=SlowFirstTranscriber(["What does it cost?", "Can we start next week?"]),
    )
    port = RecordingPort()
    session = CallSession(port=port, transport="test")
    await session.start()
    for _ in range(2):
        request = Request("voicechat.audio.end", "req")
        await session.audio_start(request=request, sample_rate=16000, voice_id=None, language=None)
        session.audio_chunk(b"\x10\x20" * 8000)
        await session.audio_end(request=request)
    while len(session.turn_tasks):
        await _turn_done(session)
    await session.hangup()

    assert [c[1] for c in port.calls if c[0] == "user"] == ["What does it cost?", "Can we start next week?"]
    messages = await stored_messages(session.session_id)
    assert [m.text for m in messages if m.role == "user"] == ["What does it cost?", "Can we start next week?"]
