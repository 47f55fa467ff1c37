"""The Cartesia engine against a local server that speaks Cartesia's WebSocket messages."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
import websockets

from tts.base import SpeechError
from tts.cartesia_engine import CartesiaEngine

VOICE = "a0e99841-438c-4a64-b679-ae501e7d6091"


class FakeCartesia:
    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.cancelled: list[str] = []
        self.headers: list[dict] = []
        self.connections = 0
        self.tasks: set[asyncio.Task] = set()

    async def handler(self, socket) -> None:
        self.connections += 1
        self.headers.append(dict(socket.request.headers))
        async for raw in socket:
            message = json.loads(raw)
            if message.get("cancel"):
                self.cancelled.append(message["context_id"])
                continue
            self.requests.append(message)
            self.tasks.add(asyncio.create_task(self._answer(socket, message)))

    async def _answer(self, socket, message) -> None:
        context = message["context_id"]
        text = message["transcript"]
        if text == "fail":
            await socket.send(
                json.dumps({"type": "error", "done": True, "error": "Invalid voice", "context_id": context})
            )
            return
        if text == "drop":
            await socket.close()
            return
        blocks = 20 if text == "slow" else 3
        for _ in range(blocks):
            # The audio encodes which request it answers, so routing can be checked.
            audio = text.encode()[:4].ljust(4, b"_") * 100
            await socket.send(
                json.dumps(
                    {
                        "type": "chunk",
                        "data": base64.b64encode(audio).decode(),
                        "done": False,
                        "status_code": 206,
                        "context_id": context,
                    }
                )
            )
            await asyncio.sleep(0.05 if text == "slow" else 0.001)
        await socket.send(
            json.dumps({"type": "done", "done": True, "status_code": 206, "context_id": context})
        )


@pytest.fixture
async def cartesia():
    fake = FakeCartesia()
    async with websockets.serve(fake.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        engine = CartesiaEngine(
            api_key="ck-test", model="sonic-2", default_voice=VOICE, url=f"ws://127.0.0.1:{port}"
        )
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
