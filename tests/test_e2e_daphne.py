"""Whole calls over a real WebSocket to a running daphne, with a real MessagePack client."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid

import pytest

from tests.servers import migrate, run_daphne, server_env
from tests.support import speech_pcm
from vantum_client import CallClient

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def daphne(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("daphne")
    database = workdir / "calls.sqlite3"
    env = server_env({"DATABASE_URL": f"sqlite:///{database}", "STT_FAKE_TEXT": "How much does it cost?"})
    migrate(env)
    with run_daphne(env, log_path=workdir / "daphne.log") as port:
        yield {"url": f"ws://127.0.0.1:{port}/ws", "database": database, "origin": f"http://127.0.0.1:{port}"}


def _check_reply(result) -> str:
    """One reply = one utteranceId: start, texts and audio in order, complete. Returns the id."""
    kinds = result.types
    start = kinds.index("voicechat.response.start")
    assert kinds[-1] == "voicechat.response.complete"
    assert kinds.count("voicechat.response.start") == 1
    body = result.events[start:]
    utterance = body[0].payload["utteranceId"]
    assert {e.payload["utteranceId"] for e in body} == {utterance}
    assert type(body[0].payload["timestamp"]) is float
    texts = result.of("voicechat.response.text")
    assert [t.payload["index"] for t in texts] == list(range(len(texts)))
    audio = result.of("voicechat.response.chunk")
    assert audio and all(len(a.payload["audio"]) > 0 and len(a.payload["audio"]) % 2 == 0 for a in audio)
    assert {a.payload["sampleRate"] for a in audio} == {16000}
    # Audio of chunk 0 arrived before the model had written the last chunk.
    first_audio = kinds.index("voicechat.response.chunk")
    assert first_audio < kinds.index("voicechat.response.text", first_audio) if len(texts) > 1 else True
    metrics = result.of("voicechat.response.complete")[0].payload["metrics"]
    assert metrics["firstAudioMs"] < metrics["modelDoneMs"]
    return utterance


async def test_a_typed_turn_and_a_voice_turn_over_a_real_socket(daphne):
    async with CallClient(daphne["url"], origin=daphne["origin"]) as call:
        assert uuid.UUID(call.session_id).version == 7

        request_id = await call.send("voicechat.text.input", {"text": "Hi, who is this?"})
        typed = await call.until("voicechat.response.complete")
        assert typed.events[0].event_type == "voicechat.text.input"
        assert typed.events[0].envelope["eventId"] == request_id
        assert typed.events[0].payload == {"success": True}
        assert typed.types[1] == "voicechat.transcript.user"
        assert typed.events[1].payload["text"] == "Hi, who is this?"
        assert typed.texts[0] == "Vantum is an AI sales assistant."
        first_utterance = _check_reply(typed)

        # Talking while the first reply still plays (its audio lasts seconds) is a barge-in.
        await call.say_audio(speech_pcm(1.0, 48000), sample_rate=48000)
        voice = await call.until("voicechat.response.complete")
        assert voice.types[:4] == [
            "voicechat.audio.start",
            "voicechat.response.stop",
            "voicechat.audio.end",
            "voicechat.transcript.user",
        ]
        assert voice.events[1].payload["utteranceId"] == first_utterance
        assert voice.events[3].payload["text"] == "How much does it cost?"
        assert voice.texts[0] == "Great question."
        second_utterance = _check_reply(voice)
        assert second_utterance != first_utterance

    rows, ended = await _stored_call(daphne["database"], call.session_id)
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        (1, "user", "text", 0),
        (2, "assistant", "", 1),  # cut off while it played
        (3, "user", "voice", 0),
        (4, "assistant", "", 1),  # hung up while it still played: stored as cut off
    ]
    assert rows[1][4].startswith("Vantum is an AI sales assistant.")
    assert ended == ("hangup",)


async def _stored_call(database, session_id: str, wait: float = 10.0):
    """The call's messages and end reason, once the server has finished writing the hang-up."""
    deadline = asyncio.get_running_loop().time() + wait
    key = uuid.UUID(session_id).hex
    while True:
        with sqlite3.connect(database) as db:
            ended = db.execute("SELECT end_reason FROM calls_call WHERE session_id = ?", (key,)).fetchone()
            rows = db.execute(
                "SELECT m.seq, m.role, m.source, m.interrupted, m.text FROM calls_message m "
                "JOIN calls_call c ON c.id = m.call_id WHERE c.session_id = ? ORDER BY m.seq",
                (key,),
            ).fetchall()
        if (ended and ended[0]) or asyncio.get_running_loop().time() > deadline:
            return rows, ended
        await asyncio.sleep(0.05)


async def test_a_foreign_origin_cannot_open_a_call(daphne):
    import websockets

    with pytest.raises(websockets.InvalidStatus):
        async with CallClient(daphne["url"], origin="https://evil.example"):
            pass
