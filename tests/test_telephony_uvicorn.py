"""A phone call over the network, as Twilio reaches a deployment: the Twilio simulator
posts the signed voice webhook over HTTP and opens the signed media stream over a real
WebSocket to a uvicorn process running the offline defaults (Silero VAD, Whisper tiny.en,
the demo responder, Piper), with no test double inside the server."""

from __future__ import annotations

import asyncio
import re
import sqlite3

import numpy as np
import pytest

from telephony.audio import ulaw_decode
from telephony.testing import TwilioSimulator, speech_ulaw_frames
from tests.outage_servers import Uvicorn
from tests.servers import migrate, server_env
from tests.speech_samples import piper_pcm

pytestmark = [pytest.mark.timeout(240)]

TOKEN = "uvicorn-auth-token"
BASE = "https://voice.example.com"
FIRST = "Vantum is an AI sales assistant."


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("phone-server")
    env = server_env(
        {
            "DATABASE_URL": f"sqlite:///{folder / 'db.sqlite3'}",
            "TWILIO_ACCOUNT_SID": "ACtest",
            "TWILIO_AUTH_TOKEN": TOKEN,
            "TWILIO_PUBLIC_BASE_URL": BASE,
            "VANTUM_SPOOL_DIR": str(folder / "spool"),
            "MEDIA_ROOT": str(folder / "media"),
        }
    )
    for name in ("TTS_ENGINE", "STT_ENGINE"):  # the embedded defaults: Piper, local Whisper
        env.pop(name)
    migrate(env)
    process = Uvicorn(env, log_path=folder / "uvicorn.log").start()
    try:
        yield process, folder / "db.sqlite3"
    finally:
        process.stop()


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def _rows(database, call_sid: str) -> tuple[tuple, list[tuple]]:
    with sqlite3.connect(database) as db:
        call = db.execute(
            "SELECT c.session_id, c.end_reason, c.stt_engine, c.tts_engine, c.llm_model FROM calls_call c "
            "JOIN telephony_phonecall p ON p.session_id = c.session_id WHERE p.call_sid = ?",
            (call_sid,),
        ).fetchone()
        messages = db.execute(
            "SELECT m.role, m.text, m.source FROM calls_message m JOIN calls_call c ON m.call_id = c.id "
            "WHERE c.session_id = ? ORDER BY m.seq",
            (call[0],),
        ).fetchall()
    return call, messages


async def _ended(database, call_sid: str) -> tuple[tuple, list[tuple]]:
    for _ in range(100):  # rows are written by the call's queue, just after the hang-up
        call, messages = _rows(database, call_sid)
        if call[1]:
            return call, messages
        await asyncio.sleep(0.1)
    return call, messages


async def test_an_inbound_phone_call_over_the_network_is_heard_answered_and_stored(server):
    process, database = server
    twilio = TwilioSimulator(auth_token=TOKEN, public_base=BASE, server=f"http://127.0.0.1:{process.port}")
    response, stream = await twilio.answer(call_sid="CA7001")
    assert response.status_code == 200
    assert stream.url == f"{BASE.replace('https', 'wss')}/telephony/twilio/stream"
    connected, leg = await twilio.open_stream(stream, call_sid="CA7001", speed=4.0)
    assert connected
    await leg.start(stream.parameters)
    await leg.silence(1.0, realtime=True)
    assert leg.events("media") == []  # inbound: the agent waits for the caller

    await leg.say(speech_ulaw_frames(*piper_pcm("Hi, who is this?")))
    await leg.silence(1.0)
    await leg.until_replies_played(1, timeout=90)  # its closing mark came back
    await leg.stop()
    assert await leg.until_closed() == 1000
    await leg.hang_up()

    # Piper's answer came back as whole 20 ms μ-law frames, every mark was played, and it
    # sounds like speech: at a talking level, with no stretch of silence longer than a pause.
    assert leg.media_seconds() > 2.0
    assert {len(m["media"]["payload"]) for m in leg.events("media")} == {216}
    assert {m["mark"]["name"] for m in leg.events("mark")} <= set(leg.marks_acked)
    pcm = np.frombuffer(ulaw_decode(bytes(leg.played)), dtype="<i2").astype(np.float64)
    frame_rms = np.sqrt((pcm[: len(pcm) // 160 * 160].reshape(-1, 160) ** 2).mean(axis=1))
    assert 1000 < np.sqrt((pcm**2).mean()) < 12000
    longest_quiet = max(len(run) for run in "".join("q" if r < 100 else "s" for r in frame_rms).split("s"))
    assert longest_quiet * 0.02 < 0.8
    call, messages = await _ended(database, "CA7001")
    assert call[1:] == ("hangup", "whisper tiny.en (local)", "piper", "demo")
    assert [(role, source) for role, _, source in messages] == [("user", "voice"), ("assistant", "")]
    assert _words(messages[0][1]) == _words("Hi, who is this?")
    assert messages[1][1].startswith(FIRST)


async def test_forged_signatures_are_refused_over_the_network(server):
    process, _ = server
    twilio = TwilioSimulator(auth_token=TOKEN, public_base=BASE, server=f"http://127.0.0.1:{process.port}")
    forger = TwilioSimulator(auth_token="wrong", public_base=BASE, server=f"http://127.0.0.1:{process.port}")
    response, stream = await forger.answer(call_sid="CA7002")
    assert (response.status_code, stream) == (403, None)
    _, stream = await twilio.answer(call_sid="CA7003")
    connected, _ = await twilio.open_stream(stream, call_sid="CA7003", signature="forged")
    assert connected is False
