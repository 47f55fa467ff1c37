"""The speech engines: real synthesis, streaming, cancellation, failures."""

from __future__ import annotations

import asyncio
import json
import time

import httpx2
import pytest

from tts.base import SpeechError
from tts.espeak_engine import EspeakEngine
from tts.openai_speech import OpenAISpeechEngine
from tts.piper_engine import PiperEngine
from tts.registry import build_engine
from tts.tone_engine import ToneEngine

SHORT = "Hi, this is Alex from Vantum."
LONG = (
    "Hi, this is Alex from Vantum. "
    "I noticed your team is growing fast, and I would love to learn how you book meetings today."
)


@pytest.fixture(scope="module")
def piper():
    engine = PiperEngine()
    engine.warm_up()
    return engine


@pytest.fixture(scope="module")
def espeak():
    return EspeakEngine()


async def _synthesize(engine, text: str, voice: str | None = None) -> bytes:
    voice_id = engine.resolve_voice(voice)
    return b"".join([block async for block in engine.synthesize(text, voice_id=voice_id)])


def _seconds(engine, audio: bytes) -> float:
    return len(audio) / 2 / engine.sample_rate(engine.resolve_voice(None))


@pytest.mark.parametrize("engine_fixture", ["piper", "espeak"])
async def test_local_engines_speak_longer_text_for_longer(engine_fixture, request):
    engine = request.getfixturevalue(engine_fixture)
    short, long = await _synthesize(engine, SHORT), await _synthesize(engine, LONG)
    assert len(short) % 2 == 0 and len(long) % 2 == 0
    assert 1.0 < _seconds(engine, short) < 5.0
    assert _seconds(engine, long) > 2 * _seconds(engine, short)
    assert engine.sample_rate(engine.resolve_voice(None)) == 22050
    assert max(abs(int.from_bytes(short[i : i + 2], "little", signed=True)) for i in range(0, 4000, 2)) >= 0


async def test_piper_streams_sentence_by_sentence(piper):
    blocks = [block async for block in piper.synthesize(LONG, voice_id=piper.resolve_voice(None))]
    assert len(blocks) == 2


async def test_synthesis_does_not_block_the_event_loop(piper):
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    task = asyncio.create_task(ticker())
    started = time.monotonic()
    await _synthesize(piper, LONG * 2)
    elapsed = time.monotonic() - started
    task.cancel()
    # The loop kept ticking through the synthesis (at least a third of the possible ticks).
    assert ticks >= elapsed / 0.005 / 3


async def test_cancelling_mid_synthesis_stops_promptly(piper):
    received = []

    async def consume():
        async for block in piper.synthesize(LONG * 4, voice_id=piper.resolve_voice(None)):
            received.append(block)

    task = asyncio.create_task(consume())
    while not received:
        await asyncio.sleep(0.005)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 0.05
    # The engine is free for the next reply.
    assert len(await _synthesize(piper, SHORT)) > 0


async def test_unknown_voices_fall_back_to_the_default(piper, espeak, caplog):
    assert piper.resolve_voice("no-such-voice") == "en_US-joe-medium"
    assert espeak.resolve_voice("klingon") == "en-us"
    assert espeak.resolve_voice("en-us+f3") == "en-us+f3"
    assert "Unknown Piper voice 'no-such-voice'" in caplog.text


async def test_the_tone_engine_is_fast_and_proportional():
    engine = ToneEngine()
    audio = await _synthesize(engine, "x" * 10)
    assert len(audio) == 10 * 60 * 16 * 2  # 60 ms a character at 16 kHz


def _speech_server(requests: list, status: int = 200):
    async def handle(request: httpx2.Request) -> httpx2.Response:
        requests.append(json.loads(request.content))
        if status != 200:
            return httpx2.Response(
                status, json={"error": {"message": "voice server is down", "type": "server_error"}}
            )

        async def pcm():
            for _ in range(5):
                yield b"\x01\x00" * 2400 + b"\x02"  # odd sizes, as servers send

        return httpx2.Response(200, content=pcm(), headers={"content-type": "audio/pcm"})

    return httpx2.AsyncClient(transport=httpx2.MockTransport(handle))


async def test_openai_compatible_speech_streams_pcm_through_the_real_sdk():
    requests: list = []
    engine = OpenAISpeechEngine(
        api_key="sk", model="my-tts", default_voice="coral", http_client=_speech_server(requests)
    )
    audio = await _synthesize(engine, "Hello there.", "nova")
    assert len(audio) == 5 * 4801
    assert requests == [
        {"model": "my-tts", "voice": "nova", "input": "Hello there.", "response_format": "pcm"}
    ]
    assert engine.sample_rate("nova") == 24000
    assert engine.resolve_voice("unknown") == "coral"


async def test_speech_server_errors_become_speech_errors():
    engine = OpenAISpeechEngine(api_key="sk", http_client=_speech_server([], status=503))
    with pytest.raises(SpeechError) as raised:
        await _synthesize(engine, "Hello")
    assert "voice server is down" in str(raised.value)


def test_the_registry_builds_engines_by_name_and_refuses_bad_names():
    assert build_engine("tone").name == "tone"
    assert build_engine("ESPEAK").name == "espeak"
    with pytest.raises(ValueError) as raised:
        build_engine("festival")
    assert (
        str(raised.value)
        == "TTS_ENGINE: unknown engine 'festival'; choose one of piper, espeak, openai, cartesia, tone"
    )
    with pytest.raises(ValueError, match="CARTESIA_API_KEY"):
        build_engine("cartesia")
    with pytest.raises(ValueError, match="CARTESIA_VOICE_ID"):
        build_engine("cartesia", cartesia_api_key="k")
