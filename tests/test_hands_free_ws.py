"""Hands-free over the real ``/ws`` consumer (WebsocketCommunicator): the wire events of a
server-detected turn, a voice barge-in, the connection's capabilities and bad settings."""

from __future__ import annotations

import asyncio
import re

import pytest

from calls import protocol
from tests.calls_helpers import Caller, types
from tests.speech_samples import at_rate, chunks, piper_pcm, silence
from tests.support import BeepEngine, Script, ScriptedProvider, tokens_of

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

REPLY = "Hi, this is Alex from Vantum. ||BREAK|| How is your week going?"


@pytest.fixture(scope="module")
def whisper():
    from stt.local_whisper import LocalWhisperTranscriber

    transcriber = LocalWhisperTranscriber(model="tiny.en", max_concurrent=2, window_seconds=10)
    yield transcriber
    transcriber.close()


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


async def talk(caller: Caller, pcm: bytes) -> None:
    for chunk in chunks(pcm, 8192):
        await caller.send(protocol.AUDIO_CHUNK, {"audio": chunk})


async def test_a_hands_free_turn_on_the_wire(use_engines, whisper):
    use_engines(chat=ScriptedProvider([Script(tokens_of(REPLY))]), speech=BeepEngine(), transcriber=whisper)
    caller = Caller()
    ack = await caller.connect()
    assert ack["payload"]["capabilities"] == {
        "speechToText": "whisper tiny.en (local)",
        "turnDetection": ["client", "server"],
    }
    update_id = await caller.send(protocol.SESSION_UPDATE, {"turnDetection": "server"})
    assert (await caller.receive())["eventId"] == update_id  # the ACK
    await caller.send(protocol.AUDIO_START, {"samplingRate": 24000})
    await caller.receive()  # its ACK
    speech = at_rate(piper_pcm("Do you work with small companies?"), 24000)
    await talk(caller, silence(400, 24000) + speech + silence(1000, 24000))
    events = await caller.until("voicechat.response.complete", timeout=60)
    await caller.hang_up()

    kinds = types(events)
    assert kinds[:3] == ["voicechat.speech.started", "voicechat.speech.stopped", "voicechat.transcript.user"]
    started, stopped = events[0]["payload"], events[1]["payload"]
    assert 400 - 64 <= started["audioMs"] <= 400 + 64
    assert isinstance(started["timestamp"], float) and started["timestamp"] <= stopped["timestamp"]
    assert words(events[2]["payload"]["text"]) == words("Do you work with small companies?")
    assert kinds[3] == "voicechat.response.start"
    assert kinds[-1] == "voicechat.response.complete"


async def test_talking_over_the_agent_stops_its_reply_on_the_wire(use_engines, whisper):
    slow_reply = Script(tokens_of(REPLY), delay=0.05)
    use_engines(
        chat=ScriptedProvider([slow_reply, Script(tokens_of(REPLY))]),
        speech=BeepEngine(block_delay=0.05),
        transcriber=whisper,
    )
    caller = Caller()
    await caller.connect()
    await caller.send(protocol.SESSION_UPDATE, {"turnDetection": "server"})
    await caller.receive()
    await caller.send(protocol.TEXT_INPUT, {"text": "Hello"})
    first = await caller.until("voicechat.response.chunk")
    start = next(e for e in first if e["eventType"] == "voicechat.response.start")
    utterance = start["payload"]["utteranceId"]
    await talk(caller, piper_pcm_16k("Wait, sorry, one question.") + silence(900))
    events = await caller.until("voicechat.transcript.user", timeout=60)
    await caller.hang_up()

    stops = [e for e in events if e["eventType"] == "voicechat.response.stop"]
    assert [s["payload"]["utteranceId"] for s in stops] == [utterance]
    kinds = types(events)
    assert kinds.index("voicechat.speech.started") < kinds.index("voicechat.response.stop")
    assert kinds.index("voicechat.response.stop") < kinds.index("voicechat.speech.stopped")


def piper_pcm_16k(text: str) -> bytes:
    return at_rate(piper_pcm(text), 16000)


async def test_an_unknown_turn_detection_mode_is_refused_clearly(use_engines):
    use_engines(chat=ScriptedProvider([Script(tokens_of(REPLY))]), speech=BeepEngine())
    caller = Caller()
    await caller.connect()
    event_id = await caller.send(protocol.SESSION_UPDATE, {"turnDetection": "vad"})
    error = await caller.receive()
    await caller.hang_up()
    assert error["eventType"] == "voicechat.session.error"
    assert error["eventId"] == event_id
    assert error["payload"] == {"message": 'turnDetection must be "client" or "server"'}


async def test_the_default_client_mode_streams_to_deepgram_on_the_wire(use_engines):
    """The product's client as it is (audio.start, chunks, audio.end): the engine has the
    audio, and the caller interim words, before audio.end; the turn's words are Deepgram's."""
    from stt.deepgram import DeepgramTranscriber
    from stt.fake_deepgram import FakeDeepgram

    said = "Do you work with small companies?"
    async with FakeDeepgram(transcripts=[said], words_every_ms=300) as fake:
        deepgram = DeepgramTranscriber(api_key=fake.api_key, url=fake.url, timeout=5.0)
        use_engines(
            chat=ScriptedProvider([Script(tokens_of(REPLY))]), speech=BeepEngine(), transcriber=deepgram
        )
        caller = Caller()
        await caller.connect()
        await caller.send(protocol.AUDIO_START, {"samplingRate": 16000})
        assert (await caller.receive())["eventType"] == protocol.AUDIO_START  # its ACK
        audio = piper_pcm_16k(said)
        await talk(caller, audio)
        before_end = await caller.until("voicechat.transcript.partial", timeout=30)
        for _ in range(500):  # the chunks are on their way to the engine
            if fake.sessions and fake.sessions[0].audio_bytes == len(audio):
                break
            await asyncio.sleep(0.01)
        assert fake.sessions[0].audio_bytes == len(audio)
        assert fake.sessions[0].controls == []  # not finalized: the caller still holds the button
        await caller.send(protocol.AUDIO_END, {})
        events = await caller.until("voicechat.response.complete", timeout=30)
        await caller.hang_up()

    assert said.startswith(before_end[-1]["payload"]["text"])
    user = next(e for e in events if e["eventType"] == "voicechat.transcript.user")
    assert user["payload"]["text"] == said
    assert fake.sessions[0].controls[:1] == ["Finalize"]
