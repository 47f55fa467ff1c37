"""Phone calls with an engine that renders 8 kHz itself (Cartesia): the phone asks the engine
for phone-rate audio, and what Twilio plays is the engine's samples, μ-law encoded, with no
resampling in between. The real Cartesia adapter talks to the local Cartesia fake; Twilio is
the simulator of ``telephony/testing.py`` against the real ASGI app."""

from __future__ import annotations

import asyncio
import base64
import io
import wave

import numpy as np
import pytest
import soxr
from channels.db import database_sync_to_async

from calls.models import Call, Message
from telephony import audio
from telephony.audio import FRAME_BYTES, PhoneOutbound, ulaw_decode, ulaw_encode
from telephony.models import PhoneCall
from telephony.testing import TwilioSimulator, caller_speech
from tests.support import CannedTranscriber, Script, ScriptedProvider, tokens_of
from tts.cartesia_engine import CartesiaEngine
from tts.fake_cartesia import FakeCartesia

TOKEN = "test-auth-token"
BASE = "https://voice.example.com"
VOICE = "a0e99841-438c-4a64-b679-ae501e7d6091"
REPLY = "Hi, this is Alex from Vantum. ||BREAK|| How is your week going?"


def _ulaw_exact_pcm(count: int, seed: int) -> bytes:
    """PCM whose every sample is a μ-law level (never 0): encoding it to μ-law and decoding
    gives it back bit for bit, so audio can be compared exactly across the encode."""
    codes = (np.arange(count) * 7 + seed) % 254
    codes = codes + (codes >= 0x7F)  # skip 0x7F and 0xFF, the two zeros
    return ulaw_decode(codes.astype(np.uint8).tobytes())


def speech_audio(text: str, output_format: dict) -> bytes:
    """What the fake "says": 20 ms a character at the rate asked for (whole phone frames)."""
    return _ulaw_exact_pcm(len(text) * output_format["sample_rate"] // 50, seed=sum(text.encode()))


# ------------------------------------------------------------------ PhoneOutbound at 8 kHz


def _no_resampling(*args, **kwargs):
    raise AssertionError("a resampler was built for audio already at 8 kHz")


def test_8_khz_audio_builds_no_resampler_and_goes_out_sample_for_sample(monkeypatch):
    monkeypatch.setattr(soxr, "ResampleStream", _no_resampling)
    monkeypatch.setattr(audio, "Resampler", _no_resampling)
    pcm = _ulaw_exact_pcm(1000, seed=3)  # 125 ms: six whole frames and 40 samples
    outbound = PhoneOutbound(8000)
    assert outbound.resampler is None
    frames = []
    for start in range(0, len(pcm), 333):  # odd pieces: half samples are carried over
        frames += outbound.feed(pcm[start : start + 333])
    assert len(frames) == 6
    assert outbound.pending_seconds() == 40 / 8000
    frames += outbound.flush()
    assert [len(f) for f in frames] == [FRAME_BYTES] * 7
    ulaw = b"".join(frames)
    assert ulaw == ulaw_encode(pcm) + PhoneOutbound.SILENCE * 120
    assert ulaw_decode(ulaw)[: len(pcm)] == pcm
    # Any other rate still resamples (the patch above is what would have been called).
    with pytest.raises(AssertionError, match="resampler was built"):
        PhoneOutbound(24000)


def test_the_8_khz_path_is_what_the_resampling_path_gives_for_8_khz_input():
    pcm = _ulaw_exact_pcm(4321, seed=11)
    direct = PhoneOutbound(8000)
    frames = direct.feed(pcm[:1001]) + direct.feed(pcm[1001:]) + direct.flush()
    through = audio.Resampler(8000, 8000)  # today's pass-through object, for comparison
    expected = ulaw_encode(through.process(pcm))
    assert b"".join(frames)[: len(expected)] == expected


def test_only_engines_that_render_8_khz_are_swapped_for_the_phone():
    from calls.engines import Engines
    from tests.support import BeepEngine

    cartesia = CartesiaEngine(api_key="k", default_voice=VOICE)
    chat = ScriptedProvider([])
    engines = Engines(chat=chat, speech=cartesia, transcriber=None)
    phone = audio.with_phone_speech(engines)
    assert (phone.chat, phone.transcriber) == (chat, None)
    assert phone.speech is cartesia.for_rate(8000)
    assert (phone.speech.sample_rate(VOICE), engines.speech is cartesia) == (
        8000,
        True,
    )  # browser keeps 24 kHz
    beep = Engines(chat=chat, speech=BeepEngine(), transcriber=None)
    assert audio.with_phone_speech(beep) is beep  # no for_rate: resampled as before


# ------------------------------------------------------------------ a phone call through Twilio


@pytest.fixture
def twilio(settings):
    settings.TWILIO_ACCOUNT_SID = "ACtest"
    settings.TWILIO_AUTH_TOKEN = TOKEN
    settings.TWILIO_PUBLIC_BASE_URL = BASE
    settings.TWILIO_API_BASE_URL = ""
    settings.TWILIO_STREAM_START_TIMEOUT = 1.0
    settings.VAD_ENGINE = "energy"  # the caller's "speech" is a square wave
    return TwilioSimulator(auth_token=TOKEN, public_base=BASE)


@pytest.fixture
async def cartesia():
    fake = FakeCartesia(audio=speech_audio)
    async with fake.serve() as url:
        yield fake, CartesiaEngine(api_key="ck-test", default_voice=VOICE, url=url)


def _use(use_engines, engine, *replies: str) -> None:
    provider = ScriptedProvider([Script(tokens_of(r)) for r in replies])
    use_engines(chat=provider, speech=engine, transcriber=CannedTranscriber("Tell me more."))


async def _connect(twilio, call_sid: str, *, speed: float):
    response, stream = await twilio.answer(call_sid=call_sid)
    assert response.status_code == 200
    connected, leg = await twilio.open_stream(stream, call_sid=call_sid, speed=speed)
    assert connected
    await leg.start(stream.parameters)
    return leg


def _media_ulaw(leg) -> bytes:
    return b"".join(base64.b64decode(m["media"]["payload"]) for m in leg.events("media"))


@database_sync_to_async
def _call_of(call_sid: str) -> tuple[Call, list[tuple[str, str, bool]]]:
    session_id = PhoneCall.objects.get(call_sid=call_sid).session_id
    messages = [
        (m.role, m.text, m.interrupted)
        for m in Message.objects.filter(call__session_id=session_id).order_by("seq")
    ]
    return Call.objects.get(session_id=session_id), messages


def _agent_track(call: Call) -> np.ndarray:
    from django.core.files.storage import default_storage

    with (
        default_storage.open(call.recording.name, "rb") as stored,
        wave.open(io.BytesIO(stored.read())) as wav,
    ):
        assert (wav.getframerate(), wav.getnchannels()) == (8000, 2)
        stereo = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
    return stereo[:, 1]


@pytest.mark.django_db(transaction=True)
async def test_a_phone_call_gets_cartesia_audio_at_8_khz_unchanged(twilio, use_engines, cartesia, settings):
    settings.CALL_RECORDINGS = True
    settings.CALL_RECORDING_RATE = 8000  # the recording keeps the agent's samples as sent
    fake, engine = cartesia
    _use(use_engines, engine, REPLY)
    leg = await _connect(twilio, "CA0101", speed=20.0)
    await leg.say(caller_speech(0.6))
    await leg.silence(0.8)
    await leg.until_replies_played(1)
    await leg.stop()
    await leg.until_closed()
    await leg.hang_up()

    # The phone asked Cartesia for phone-rate audio, chunk by chunk.
    assert [r["transcript"] for r in fake.requests] == [
        "Hi, this is Alex from Vantum.",
        "How is your week going?",
    ]
    assert {r["output_format"]["sample_rate"] for r in fake.requests} == {8000}
    assert {r["output_format"]["encoding"] for r in fake.requests} == {"pcm_s16le"}
    # Twilio got exactly the engine's samples, μ-law encoded, in whole 20 ms frames.
    sent = fake.audio_sent()
    assert len(sent) == 2 * 8000 * 0.02 * len("Hi, this is Alex from Vantum.How is your week going?")
    assert {len(base64.b64decode(m["media"]["payload"])) for m in leg.events("media")} == {FRAME_BYTES}
    assert _media_ulaw(leg) == ulaw_encode(sent)
    assert ulaw_decode(_media_ulaw(leg)) == sent
    assert bytes(leg.played) == ulaw_encode(sent)
    # Marks: every one came back; one closes each chunk, the last closes the reply.
    marks = [m["mark"]["name"] for m in leg.events("mark")]
    assert set(leg.marks_acked) == set(marks)
    assert [name.split(":")[1] for name in marks if not name.endswith(":progress")] == ["chunk", "end"]

    call, messages = await _call_of("CA0101")
    assert call.tts_engine == "cartesia"
    assert messages == [
        ("user", "Tell me more.", False),
        ("assistant", "Hi, this is Alex from Vantum. How is your week going?", False),
    ]
    # The recording's agent channel holds the same samples, back to back.
    agent = _agent_track(call)
    first = int(np.flatnonzero(agent)[0])
    assert agent[first : first + len(sent) // 2].tobytes() == sent


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("block_delay", [0.001, 0.3], ids=["reply-already-sent", "reply-still-produced"])
async def test_barge_in_on_cartesia_at_8_khz_clears_and_keeps_what_the_marks_say(
    twilio, use_engines, cartesia, block_delay
):
    fake, engine = cartesia
    fake.block_delay = block_delay
    sentences = [f"This is sentence number {n} of a long answer." for n in range(6)]
    _use(use_engines, engine, " ||BREAK|| ".join(sentences))
    leg = await _connect(twilio, "CA0102", speed=1.0)  # real time, so the caller can cut in
    await leg.say(caller_speech(0.6))
    await leg.silence(0.7)
    # Once the phone has played about two sentences, the caller talks over the agent.
    reported = await leg.talk_over_the_agent(caller_speech(0.3), after_played=1.9)
    assert leg.clears == 1
    await leg.stop()
    await leg.until_closed()
    await leg.hang_up()

    pcm = fake.audio_sent()  # a cancelled synthesis may end mid-sample
    sent = ulaw_encode(pcm[: len(pcm) - len(pcm) % 2])
    assert len(leg.played) < len(_media_ulaw(leg))  # audio was sent ahead and dropped
    assert bytes(leg.played) == sent[: len(leg.played)]  # what played is Cartesia's audio
    assert {r["output_format"]["sample_rate"] for r in fake.requests} == {8000}
    if block_delay > 0.1:  # synthesis was still running: the barge-in cancelled it at Cartesia
        assert fake.cancelled == [fake.requests[-1]["context_id"]]
        assert len(fake.requests) < len(sentences)

    # 20 ms a character: sentence i starts at the sum of those before it.
    starts = [sum(len(s) for s in sentences[:i]) * 0.02 for i in range(len(sentences))]
    heard = [s for s, start in zip(sentences, starts, strict=True) if start < reported]
    assert 1 <= len(heard) < len(sentences)
    for _ in range(50):  # the correction is written after the reply, off the audio path
        _call, messages = await _call_of("CA0102")
        if messages[1][1] == " ".join(heard):
            break
        await asyncio.sleep(0.05)
    assert messages[1] == ("assistant", " ".join(heard), True)
