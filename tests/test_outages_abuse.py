"""One client must not hurt the others: per-address calls, turns a minute, the process
audio budget and a frame flood, against a real uvicorn process."""

from __future__ import annotations

import asyncio
import urllib.request

import msgpack
import pytest

from tests.outage_servers import Uvicorn
from tests.servers import migrate, server_env
from vantum_client import CallClient

pytestmark = [pytest.mark.servers, pytest.mark.timeout(180)]


def _active_calls(server: Uvicorn) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5).read().decode()
    lines = [line for line in body.splitlines() if line.startswith("vantum_active_calls ")]
    return sum(float(line.split()[-1]) for line in lines)


async def _all_hung_up(server: Uvicorn) -> None:
    """Hang-ups are handled after the client's close: wait until the server has seen them."""
    for _ in range(100):
        if await asyncio.to_thread(_active_calls, server) == 0:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("calls still active on the server")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("abuse")
    env = server_env(
        {
            "DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}",
            "VANTUM_MAX_CALLS_PER_ADDRESS": "3",
            "VANTUM_MAX_TURNS_PER_MINUTE": "3",
            "VANTUM_MAX_AUDIO_BUFFER_BYTES": "64000",  # 2 s of 16 kHz audio, all calls together
            "VANTUM_MAX_EVENTS_PER_SECOND": "200",
        }
    )
    migrate(env)
    server = Uvicorn(env, log_path=workdir / "uvicorn.log").start()
    try:
        yield server
    finally:
        server.stop()


async def test_calls_from_one_address_are_capped_and_a_slot_frees_on_hang_up(server):
    calls = [CallClient(server.ws_url) for _ in range(3)]
    for call in calls:
        await call.connect()
    refused = CallClient(server.ws_url)
    with pytest.raises(AssertionError, match=r"expected connection\.ack, got voicechat\.error"):
        await refused.connect()
    await asyncio.wait_for(refused.closed.wait(), 5)
    assert refused.socket.close_code == 1013
    await calls[0].close()
    await asyncio.sleep(0.3)
    again = CallClient(server.ws_url)
    await again.connect()
    for call in [*calls[1:], again]:
        await call.close()
    await _all_hung_up(server)


async def test_a_burst_of_turns_becomes_at_most_the_allowed_model_requests(server):
    async with CallClient(server.ws_url) as call:
        for n in range(6):
            await call.send("voicechat.text.input", {"text": f"question {n} " + "x" * 3900})
        await asyncio.sleep(3.0)
        events = []
        while not call.events.empty():
            events.append(call.events.get_nowait())
        heard = [e.payload["text"].split()[1] for e in events if e.event_type == "voicechat.transcript.user"]
        refused = [e for e in events if e.event_type == "voicechat.text.error"]
        assert heard == ["0", "1", "2"]
        assert len(refused) == 3
        assert refused[0].payload["message"].startswith("Too many turns: at most 3 a minute.")
    await _all_hung_up(server)


async def test_caller_audio_held_by_the_process_is_bounded(server):
    async with CallClient(server.ws_url) as call:
        tone = b"\x00\x40" * 16000 * 3  # 3 s of 16 kHz audio: over the 2 s process budget
        await call.say_audio(tone)
        result = await call.until("voicechat.audio.error", timeout=10)
        assert (
            result.events[-1]
            .payload["message"]
            .startswith("The server is holding too much caller audio right now")
        )
        # The budget was given back: a short utterance goes through.
        await call.say_audio(b"\x00\x40" * 16000)
        assert (await call.until("voicechat.transcript.user", timeout=15)).events[-1].payload["text"]


async def test_a_frame_flood_is_dropped_cheaply_and_the_call_goes_on(server):
    async with CallClient(server.ws_url) as call:
        frame = msgpack.packb({"eventType": "voicechat.audio.chunk", "payload": {"audio": b"\x00\x00"}})
        for _ in range(5000):
            await call.send_raw(frame)
        await asyncio.sleep(1.5)  # the budget refills
        result = await call.say_text("Hi, who is this?")
        assert result.types[-1] == "voicechat.response.complete"
        errors = [e for e in result.events if e.event_type == "error.error"]
        # One error a second at most, not one per dropped frame.
        assert 1 <= len(errors) <= 3
        assert errors[0].payload["message"] == "Too many messages: frames are being dropped (rate limit)."
        assert not call.closed.is_set()
