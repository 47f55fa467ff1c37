"""The Cartesia engine against a local server that speaks Cartesia's WebSocket messages."""

from __future__ import annotations

import asyncio

import pytest

from tts.base import SpeechError, engine_for_rate
from tts.cartesia_engine import CartesiaEngine
from tts.fake_cartesia import FakeCartesia

VOICE = "a0e99841-438c-4a64-b679-ae501e7d6091"


@pytest.fixture
async def cartesia():
    fake = FakeCartesia()
    async with fake.serve() as url:
        engine = CartesiaEngine(api_key="ck-test", model="sonic-2", default_voice=VOICE, url=url)
        yield fake, engine


async def _speak(engine, text):
    return b"".join([block async for block in engine.synthesize(text, voice_id=VOICE)])


async def test_one_socket_serves_concurrent_contexts_routed_by_id(cartesia):
    fake, engine = cartesia
    first, second = await asyncio.gather(_speak(engine, "AAAA one"), _speak(engine, "BBBB two"))
    assert first == b"AAAA" * 300
    assert second == b"BBBB" * 300
    assert fake.connections == 1
    request = fake.requests[0]
    assert request["output_format"] == {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 24000}
    assert (request["model_id"], request["voice"], request["continue"]) == (
        "sonic-2",
        {"mode": "id", "id": VOICE},
        False,
    )
    assert fake.headers[0]["x-api-key"] == "ck-test"


async def test_cancelling_a_synthesis_sends_cancel_for_its_context(cartesia):
    fake, engine = cartesia
    got = []

    async def consume():
        async for block in engine.synthesize("slow", voice_id=VOICE):
            got.append(block)

    task = asyncio.create_task(consume())
    while not got:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.05)
    assert fake.cancelled == [fake.requests[0]["context_id"]]


async def test_an_error_message_is_a_speech_error(cartesia):
    _, engine = cartesia
    with pytest.raises(SpeechError) as raised:
        await _speak(engine, "fail")
    assert str(raised.value) == "Cartesia: Invalid voice"


async def test_the_engine_reconnects_after_the_server_drops_it(cartesia):
    fake, engine = cartesia
    with pytest.raises(SpeechError):
        await _speak(engine, "drop")
    await asyncio.sleep(0.05)
    assert await _speak(engine, "CCCC again") == b"CCCC" * 300
    assert fake.connections == 2


def test_a_voice_id_is_required_and_unknown_voices_fall_back():
    with pytest.raises(ValueError, match="CARTESIA_VOICE_ID"):
        CartesiaEngine(api_key="k")
    engine = CartesiaEngine(api_key="k", default_voice=VOICE)
    assert engine.resolve_voice("not-a-voice") == VOICE


async def test_the_phone_rate_variant_asks_for_8_khz_on_the_same_socket(cartesia):
    fake, engine = cartesia
    phone = engine_for_rate(engine, 8000)
    assert phone is not engine and phone is engine.for_rate(8000)  # one variant per rate
    assert (phone.name, phone.sample_rate(VOICE), engine.sample_rate(VOICE)) == ("cartesia", 8000, 24000)
    assert phone.resolve_voice("not-a-voice") == VOICE
    together = await asyncio.gather(_speak(phone, "DDDD phone"), _speak(engine, "EEEE web"))
    assert together == [b"DDDD" * 300, b"EEEE" * 300]
    assert fake.connections == 1
    formats = {r["transcript"]: r["output_format"] for r in fake.requests}
    assert formats == {
        "DDDD phone": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 8000},
        "EEEE web": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 24000},
    }


async def test_cancelling_a_phone_rate_synthesis_cancels_its_context(cartesia):
    fake, engine = cartesia
    blocks = engine.for_rate(8000).synthesize("slow", voice_id=VOICE)
    assert await anext(blocks)
    await blocks.aclose()
    await asyncio.sleep(0.05)
    assert fake.cancelled == [fake.requests[0]["context_id"]]


def test_rates_cartesia_does_not_offer_keep_the_engine():
    engine = CartesiaEngine(api_key="k", default_voice=VOICE)
    assert engine.for_rate(24000) is engine
    assert engine.for_rate(11025) is None
    assert engine_for_rate(engine, 11025) is engine
