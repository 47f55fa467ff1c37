"""The call endpoint, in-process: every event, barge-in, hang-up, failures, bad input."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import uuid

import pytest
from channels.layers import get_channel_layer

from calls import live
from llm.providers import ErrorKind, ProviderError
from tests.calls_helpers import Caller, frame, stored_call, stored_messages, types
from tests.support import BeepEngine, CannedTranscriber, Script, ScriptedProvider, speech_pcm, tokens_of

pytestmark = [pytest.mark.django_db(transaction=True)]

REPLY = "Hi, this is Alex from Vantum. ||BREAK|| How is your week going?"
CHUNKS = ["Hi, this is Alex from Vantum.", "How is your week going?"]


def _provider(*scripts: Script) -> ScriptedProvider:
    return ScriptedProvider(list(scripts) or [Script(tokens_of(REPLY))])


async def test_connect_acks_with_a_new_uuid7_session_and_stores_the_call(use_engines):
    engines = use_engines(chat=_provider(), speech=BeepEngine())
    engines.transcriber = None  # STT_ENGINE=none: the ack says so
    caller = Caller()
    ack = await caller.connect()
    assert ack["payload"] == {
        "success": True,
        "capabilities": {"speechToText": None, "turnDetection": ["client"]},
    }
    assert uuid.UUID(ack["sessionId"]).version == 7
    await caller.hang_up()
    call = await stored_call(ack["sessionId"])
    assert call.end_reason == "hangup"
    assert call.ended_at is not None
    assert call.prompt_version.number == 1
    assert call.tts_engine == "beep"


async def test_typed_turn_streams_every_event_in_order_under_one_utterance_id(use_engines):
    use_engines(chat=_provider(), speech=BeepEngine())
    caller = Caller()
    await caller.connect()
    request_id = await caller.send("voicechat.text.input", {"text": "Who is this?"})
    events = await caller.until("voicechat.response.complete")
    await caller.hang_up(after_listening=True)

    ack = events[0]
    assert (ack["eventType"], ack["eventId"], ack["payload"]) == (
        "voicechat.text.input",
        request_id,
        {"success": True},
    )
    kinds = types(events)
    assert kinds[1:4] == ["voicechat.transcript.user", "voicechat.response.start", "voicechat.response.text"]
    assert kinds[-1] == "voicechat.response.complete"
    texts = [e["payload"] for e in events if e["eventType"] == "voicechat.response.text"]
    assert [(t["index"], t["text"]) for t in texts] == [(0, CHUNKS[0]), (1, CHUNKS[1])]
    second_text_at = next(
        i
        for i, e in enumerate(events)
        if e["eventType"] == "voicechat.response.text" and e["payload"]["index"] == 1
    )
    audio = [e for e in events if e["eventType"] == "voicechat.response.chunk"]
    assert any(
        i < second_text_at for i, e in enumerate(events) if e["eventType"] == "voicechat.response.chunk"
    )
    assert {e["payload"]["utteranceId"] for e in events if "utteranceId" in e["payload"]} == {
        events[2]["payload"]["utteranceId"]
    }
    assert all(e["payload"]["sampleRate"] == 16000 and len(e["payload"]["audio"]) > 0 for e in audio)
    # 20 ms a character; the first frame at most 100 ms (VANTUM_AUDIO_FRAME_MS), later ones
    # growing up to 500 ms (VANTUM_MAX_AUDIO_FRAME_MS).
    assert sum(len(e["payload"]["audio"]) for e in audio) == sum(len(c) for c in CHUNKS) * 640
    assert len(audio[0]["payload"]["audio"]) <= 3200
    assert max(len(e["payload"]["audio"]) for e in audio) <= 16000
    assert type(events[2]["payload"]["timestamp"]) is float
    assert events[1]["payload"]["text"] == "Who is this?"
    assert events[-1]["payload"]["metrics"]["chunks"] == 2

    messages = await stored_messages(caller.session_id)
    assert [(m.seq, m.role, m.text, m.source) for m in messages] == [
        (1, "user", "Who is this?", "text"),
        (2, "assistant", " ".join(CHUNKS), ""),
    ]
    reply = messages[1]
    assert reply.raw_text == REPLY
    assert reply.interrupted is False
    assert [c["spoken"] for c in reply.chunks] == [True, True]
    assert reply.metrics.chunk_count == 2
    assert reply.metrics.first_audio_ms >= reply.metrics.first_chunk_ms >= reply.metrics.first_token_ms >= 0


async def test_voice_turn_is_transcribed_once_at_audio_end(use_engines):
    transcriber = CannedTranscriber("What does it cost?")
    use_engines(chat=_provider(), speech=BeepEngine(), transcriber=transcriber)
    caller = Caller()
    await caller.connect()
    start_id = await caller.send("voicechat.audio.start", {"samplingRate": 48000})
    assert (await caller.receive())["eventId"] == start_id
    pcm = speech_pcm(1.0, 48000)
    for offset in range(0, len(pcm), 8192):
        await caller.send("voicechat.audio.chunk", {"audio": pcm[offset : offset + 8192]})
    await caller.send("voicechat.audio.chunk", {"audio": pcm[:8192], "isMuted": True})
    end_id = await caller.send("voicechat.audio.end", {})
    events = await caller.until("voicechat.response.complete")
    await caller.hang_up()
    assert (events[0]["eventType"], events[0]["eventId"]) == ("voicechat.audio.end", end_id)
    assert events[1]["payload"]["text"] == "What does it cost?"
    assert transcriber.heard == [(len(pcm), 48000)]
    messages = await stored_messages(caller.session_id)
    assert messages[0].source == "voice"


async def test_voice_turn_without_speech_to_text_gets_a_clear_error(use_engines):
    use_engines(chat=_provider(), speech=BeepEngine(), transcriber=None)
    caller = Caller()
    await caller.connect()
    await caller.send("voicechat.audio.start", {})
    await caller.receive()
    await caller.send("voicechat.audio.chunk", {"audio": speech_pcm(0.5)})
    await caller.send("voicechat.audio.end", {})
    ack, error = await caller.receive(), await caller.receive()
    assert ack["payload"] == {"success": True}
    assert error["eventType"] == "voicechat.audio.error"
    assert error["requestType"] == "voicechat.audio.end"
    assert error["payload"]["message"].startswith("Speech-to-text is not configured")
    # Typed turns still work.
    await caller.send("voicechat.text.input", {"text": "typing instead"})
    assert types(await caller.until("voicechat.response.complete"))[-1] == "voicechat.response.complete"
    await caller.hang_up()


async def test_a_silent_utterance_is_no_turn(use_engines):
    transcriber = CannedTranscriber("never used")
    use_engines(chat=_provider(), speech=BeepEngine(), transcriber=transcriber)
    caller = Caller()
    await caller.connect()
    await caller.send("voicechat.audio.start", {})
    await caller.receive()
    await caller.send("voicechat.audio.chunk", {"audio": bytes(16000)})
    await caller.send("voicechat.audio.end", {})
    await caller.receive()
    error = await caller.receive()
    assert error["payload"]["message"] == "No speech was heard in that recording. Please try again."
    assert transcriber.heard == []
    await caller.hang_up()
    assert await stored_messages(caller.session_id) == []


async def test_barge_in_stops_the_reply_and_keeps_only_what_was_sent(use_engines):
    gate = asyncio.Event()
    tokens = tokens_of("First thought here. ||BREAK|| Second thought never finished")
    provider = _provider(
        Script(tokens, pause_after=len(tokens) - 3, resume=gate), Script(tokens_of("Sure, go ahead."))
    )
    use_engines(chat=provider, speech=BeepEngine())
    caller = Caller()
    await caller.connect()
    await caller.send("voicechat.text.input", {"text": "Tell me more"})
    events = await caller.until("voicechat.response.chunk")
    utterance = events[-1]["payload"]["utteranceId"]
    await asyncio.sleep(0.05)
    await caller.send("voicechat.text.input", {"text": "Wait, a question"})
    events = await caller.until("voicechat.response.complete")
    stop = next(e for e in events if e["eventType"] == "voicechat.response.stop")
    assert stop["payload"]["utteranceId"] == utterance
    assert type(stop["payload"]["timestamp"]) is float
    after = events[events.index(stop) + 1 :]
    assert all(e["payload"].get("utteranceId") != utterance for e in after)
    await caller.hang_up(after_listening=True)

    messages = await stored_messages(caller.session_id)
    assert [(m.role, m.text, m.interrupted) for m in messages] == [
        ("user", "Tell me more", False),
        ("assistant", "First thought here.", True),
        ("user", "Wait, a question", False),
        ("assistant", "Sure, go ahead.", False),
    ]
    assert provider.requests[1][-3:] == [
        {"role": "user", "content": "Tell me more"},
        {"role": "assistant", "content": "First thought here."},
        {"role": "user", "content": "Wait, a question"},
    ]


async def test_hang_up_mid_reply_stores_the_user_message_and_the_partial_reply(use_engines):
    never = asyncio.Event()
    tokens = tokens_of("Glad you asked. ||BREAK|| Our plans start at")
    use_engines(
        chat=_provider(Script(tokens, pause_after=len(tokens) - 2, resume=never)), speech=BeepEngine()
    )
    caller = Caller()
    await caller.connect()
    await caller.send("voicechat.text.input", {"text": "Pricing?"})
    await caller.until("voicechat.response.chunk")
    await asyncio.sleep(0.05)
    await caller.hang_up()
    messages = await stored_messages(caller.session_id)
    assert [(m.role, m.text, m.interrupted) for m in messages] == [
        ("user", "Pricing?", False),
        ("assistant", "Glad you asked.", True),
    ]
    assert messages[1].raw_text == "".join(tokens[: len(tokens) - 2])
    assert (await stored_call(caller.session_id)).end_reason == "hangup"


async def test_a_speech_failure_is_reported_and_the_reply_goes_on(use_engines):
    text = "Here is the plan. ||BREAK|| This part breaks the engine. ||BREAK|| And this part is fine."
    use_engines(chat=_provider(Script(tokens_of(text))), speech=BeepEngine(fail_on="breaks"))
    caller = Caller()
    await caller.connect()
    await caller.send("voicechat.text.input", {"text": "Go on"})
    events = await caller.until("voicechat.response.complete")
    await caller.hang_up(after_listening=True)
    error = next(e for e in events if e["eventType"] == "voicechat.error")
    assert error["payload"]["errorType"] == "tts"
    assert error["payload"]["retryable"] is True
    texts = [e["payload"]["text"] for e in events if e["eventType"] == "voicechat.response.text"]
    assert texts == ["Here is the plan.", "This part breaks the engine.", "And this part is fine."]
    messages = await stored_messages(caller.session_id)
    assert [c["spoken"] for c in messages[1].chunks] == [True, False, True]
    assert messages[1].text == "Here is the plan. And this part is fine."


async def test_a_model_failure_speaks_the_tier_text_and_is_stored(use_engines, settings):
    failure = ProviderError(ErrorKind.RATE_LIMIT, "slow down", status_code=429)
    use_engines(chat=_provider(Script(fail_with=failure)), speech=BeepEngine())
    caller = Caller()
    await caller.connect()
    await caller.send("voicechat.text.input", {"text": "Hello"})
    events = await caller.until("voicechat.response.complete")
    await caller.hang_up()
    tier1 = settings.VANTUM_LLM.fallback_messages[0]
    assert [e["payload"]["text"] for e in events if e["eventType"] == "voicechat.response.text"] == [tier1]
    assert events[-1]["payload"]["metrics"]["fallbackTier"] == 1
    messages = await stored_messages(caller.session_id)
    assert (messages[1].text, messages[1].fallback_tier, messages[1].error_kind) == (tier1, 1, "rate_limit")
    assert messages[1].metrics.error_kind == "rate_limit"


async def test_session_update_reaches_the_prompt_and_the_call(use_engines):
    provider = _provider()
    use_engines(chat=provider, speech=BeepEngine())
    caller = Caller()
    await caller.connect()
    await caller.send(
        "voicechat.session.update",
        {"prospect": {"name": "Dana", "company": "Acme", "industry": "retail"}, "voiceId": "beep-b"},
    )
    assert (await caller.receive())["payload"] == {"success": True}
    await caller.send("voicechat.text.input", {"text": "hi"})
    await caller.until("voicechat.response.complete")
    await caller.hang_up()
    assert '{"name": "Dana", "company": "Acme", "industry": "retail"}' in provider.requests[0][0]["content"]
    call = await stored_call(caller.session_id)
    assert call.prospect == {"name": "Dana", "company": "Acme", "industry": "retail"}
    assert call.voice_id == "beep-b"


async def test_bad_frames_get_error_events_and_the_call_goes_on(use_engines, settings):
    settings.VANTUM_MAX_FRAME_BYTES = 4096
    use_engines(chat=_provider(), speech=BeepEngine())
    caller = Caller()
    await caller.connect()
    await caller.communicator.send_to(text_data="hello")
    text_error = await caller.receive()
    assert (text_error["eventType"], text_error["requestType"]) == ("error.error", "error.unknown")
    await caller.communicator.send_to(bytes_data=b"\xc1\xff\x00garbage")
    assert (await caller.receive())["eventType"] == "error.error"
    unknown_id = await caller.send("voicechat.dance", {})
    unknown = await caller.receive()
    assert unknown["payload"]["message"] == "Unknown event type: voicechat.dance"
    assert unknown["eventId"] == unknown_id
    await caller.send("voicechat.audio.chunk", {"audio": "not bytes"})
    chunk_error = await caller.receive()
    assert (chunk_error["eventType"], chunk_error["requestType"]) == (
        "voicechat.audio.error",
        "voicechat.audio.chunk",
    )
    oversized = frame("voicechat.audio.chunk", {"audio": bytes(5000)})
    await caller.communicator.send_to(bytes_data=oversized)
    too_big = await caller.receive()
    assert (too_big["eventType"], too_big["requestType"]) == ("error.error", "error.unknown")
    assert (
        too_big["payload"]["message"]
        == f"Frame of {len(oversized)} bytes is larger than the limit of 4096 bytes"
    )
    await caller.send("voicechat.text.input", {"text": "still there?"})
    assert types(await caller.until("voicechat.response.complete"))[-1] == "voicechat.response.complete"
    await caller.hang_up()


async def test_thousands_of_random_frames_then_a_turn_completes(use_engines, settings):
    settings.VANTUM_MAX_EVENTS_PER_SECOND = 100000
    settings.VANTUM_MAX_TURNS_PER_MINUTE = 0  # the noise holds valid turns; this is about frames
    use_engines(chat=_provider(), speech=BeepEngine())
    caller = Caller()
    await caller.connect()
    rng = random.Random(1234)
    kinds = [
        "voicechat.audio.start",
        "voicechat.audio.chunk",
        "voicechat.audio.end",
        "voicechat.session.update",
        "voicechat.text.input",
        "bogus",
        "",
        None,
        7,
    ]
    for _ in range(3000):
        choice = rng.random()
        if choice < 0.4:
            data = os.urandom(rng.randint(1, 64))
        elif choice < 0.8:
            payload = rng.choice(
                [
                    {},
                    None,
                    [],
                    "x",
                    {"audio": os.urandom(8)},
                    {"text": 5},
                    {"samplingRate": -1},
                    {"prospect": "nope"},
                    {"text": ""},
                ]
            )
            data = decode_safe_frame(rng.choice(kinds), payload)
        else:
            data = os.urandom(rng.randint(1, 8)) + frame("voicechat.audio.chunk", {"audio": b"\x00\x01"})
        await caller.communicator.send_to(bytes_data=data)
    # Drain whatever the noise caused (acks, errors, maybe replies) until quiet.
    while not await caller.communicator.receive_nothing(timeout=1.0):
        assert (await caller.receive())["eventType"] != "<closed>"
    await caller.send("voicechat.text.input", {"text": "after the noise"})
    events = await caller.until("voicechat.response.complete", timeout=20)
    assert any(
        e["eventType"] == "voicechat.transcript.user" and e["payload"]["text"] == "after the noise"
        for e in events
    )
    await caller.hang_up()


def decode_safe_frame(event_type, payload) -> bytes:
    import msgpack

    return msgpack.packb({"eventType": event_type, "eventId": "x", "payload": payload}, use_bin_type=True)


async def test_staff_can_end_a_call_through_the_channel_layer(use_engines):
    never = asyncio.Event()
    use_engines(chat=_provider(Script(tokens_of(REPLY), pause_after=12, resume=never)), speech=BeepEngine())
    caller = Caller()
    await caller.connect()
    await caller.send("voicechat.text.input", {"text": "Hello"})
    await caller.until("voicechat.response.chunk")
    await live.request_call_end(session_id=caller.session_id)
    events = await caller.until("<closed>", timeout=1.0)
    assert "voicechat.response.stop" in types(events)
    assert events[-2]["eventType"] == "voicechat.call.ended"
    assert events[-2]["payload"] == {"reason": "staff_ended"}
    assert events[-1] == {"eventType": "<closed>", "code": 1000}
    await caller.hang_up()
    call = await stored_call(caller.session_id)
    assert call.end_reason == "staff_ended"
    messages = await stored_messages(caller.session_id)
    assert messages[-1].interrupted is True


async def test_staff_following_a_call_see_it_live_and_unfollowed_calls_publish_nothing(
    use_engines,
):
    use_engines(chat=_provider(), speech=BeepEngine())
    caller = Caller()
    await caller.connect()
    layer = get_channel_layer()
    watcher = await layer.new_channel()
    await layer.group_add(live.watch_group(caller.session_id), watcher)

    async def published(within: float) -> list[dict]:
        events = []
        with contextlib.suppress(TimeoutError):
            while True:
                events.append((await asyncio.wait_for(layer.receive(watcher), within))["event"])
        return events

    # In the group but not announced as a follower: the call publishes nothing.
    await caller.send("voicechat.text.input", {"text": "nobody is listening"})
    await caller.until("voicechat.response.complete")
    assert await published(0.3) == []

    await live.announce_watcher(session_id=caller.session_id, watcher=watcher, watching=True)
    await asyncio.sleep(0.1)  # the call consumer takes the announcement off its channel
    await caller.send("voicechat.text.input", {"text": "hello there"})
    await caller.until("voicechat.response.complete")
    # (a "stop" for the first reply may come first: it could still be playing)
    seen = [e for e in await published(0.5) if e["kind"] != "stop"]
    assert [e["kind"] for e in seen] == ["user", "chunk", "chunk", "reply"]
    assert seen[0]["text"] == "hello there"
    assert seen[3]["text"] == " ".join(CHUNKS)

    await live.announce_watcher(session_id=caller.session_id, watcher=watcher, watching=False)
    await asyncio.sleep(0.1)
    await caller.send("voicechat.text.input", {"text": "gone again"})
    await caller.until("voicechat.response.complete")
    assert await published(0.3) == []
    await caller.hang_up()


async def test_calls_beyond_the_process_limit_are_refused_clearly(use_engines, settings):
    settings.VANTUM_MAX_CALLS = 1
    use_engines(chat=_provider(), speech=BeepEngine())
    first = Caller()
    await first.connect()
    second = Caller()
    connected, _ = await second.communicator.connect(timeout=5)
    assert connected
    refusal = await second.receive()
    assert refusal["eventType"] == "voicechat.error"
    assert refusal["payload"]["errorType"] == "capacity"
    assert (await second.receive()) == {"eventType": "<closed>", "code": 1013}
    await first.hang_up()


async def test_an_access_token_is_required_when_configured(use_engines, settings):
    settings.VANTUM_CALL_TOKENS = ["s3cret"]
    use_engines(chat=_provider(), speech=BeepEngine())
    refused = Caller("/ws?token=wrong")
    await refused.communicator.connect(timeout=5)
    refusal = await refused.receive()
    assert refusal["payload"]["errorType"] == "auth"
    assert (await refused.receive())["code"] == 4001
    allowed = Caller("/ws?token=s3cret")
    await allowed.connect()
    await allowed.hang_up()


async def test_foreign_origins_are_refused(use_engines):
    use_engines(chat=_provider(), speech=BeepEngine())
    caller = Caller(origin=b"https://evil.example")
    connected, code = await caller.communicator.connect(timeout=5)
    assert (connected, code) == (False, 4003)


async def test_a_flood_is_rate_limited_with_one_error(use_engines, settings):
    settings.VANTUM_MAX_EVENTS_PER_SECOND = 5
    use_engines(chat=_provider(), speech=BeepEngine())
    caller = Caller()
    await caller.connect()
    for _ in range(40):
        await caller.send("voicechat.audio.chunk", {"audio": b"\x00\x00"})
    event = await caller.receive()
    assert event["payload"]["message"] == "Too many messages: frames are being dropped (rate limit)."
    assert await caller.communicator.receive_nothing(timeout=0.3)
    await caller.hang_up()


@pytest.mark.parametrize(("shift", "reason"), [("idle", "idle_timeout"), ("age", "max_duration")])
async def test_idle_and_over_long_calls_are_ended_by_the_cleanup(use_engines, fresh_registry, shift, reason):
    use_engines(chat=_provider(), speech=BeepEngine())
    caller = Caller()
    await caller.connect()
    conversation = fresh_registry._sessions[caller.session_id][0]
    if shift == "idle":
        conversation.last_activity_at -= fresh_registry.config.session_idle_timeout + 1
    else:
        conversation.created_at -= fresh_registry.config.session_max_duration + 1
    assert await fresh_registry.sweep() == [(caller.session_id, reason)]
    ended = await caller.receive()
    assert (ended["eventType"], ended["payload"]) == ("voicechat.call.ended", {"reason": reason})
    assert (await caller.receive()) == {"eventType": "<closed>", "code": 1000}
    await caller.hang_up()
    assert (await stored_call(caller.session_id)).end_reason == reason
