"""A PostgreSQL outage loses no row: against real uvicorn and PostgreSQL processes, with
PostgreSQL stopped (immediate shutdown) in the middle of live calls and started again."""

from __future__ import annotations

import asyncio
import json
import signal
import urllib.request

import psycopg
import pytest

from tests.outage_servers import StoppablePostgres, Uvicorn
from tests.servers import migrate, server_env
from tests.test_call_webhook import Receiver
from vantum_client import CallClient

pytestmark = [pytest.mark.servers, pytest.mark.timeout(300)]

FIRST = "Vantum is an AI sales assistant."


def _env(database: StoppablePostgres, spool) -> dict[str, str]:
    env = server_env(
        {
            "DATABASE_URL": database.url,
            "VANTUM_SPOOL_DIR": str(spool),
            "VANTUM_SPOOL_AFTER_SECONDS": "1",
            "VANTUM_HEARTBEAT_SECONDS": "1",
        }
    )
    migrate(env)
    return env


def _rows(database_url: str, sessions: list[str]) -> list[tuple]:
    with psycopg.connect(database_url) as db:
        return db.execute(
            "SELECT c.session_id::text, c.end_reason, count(m.id) FROM calls_call c "
            "LEFT JOIN calls_message m ON m.call_id = c.id WHERE c.session_id::text = ANY(%s) "
            "GROUP BY c.session_id, c.end_reason ORDER BY 1",
            (sessions,),
        ).fetchall()


async def _wait_rows(database_url: str, expected: list[tuple], timeout: float = 30.0) -> list[tuple]:
    sessions = [row[0] for row in expected]
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            rows = _rows(database_url, sessions)
        except psycopg.OperationalError:
            rows = []
        if rows == sorted(expected) or asyncio.get_running_loop().time() > deadline:
            return rows
        await asyncio.sleep(0.3)


def _metric(port: int, name: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    values = [float(line.split()[-1]) for line in body.splitlines() if line.startswith(name + " ")]
    return values[0] if values else 0.0


def _recordings(database_url: str, sessions: list[str]) -> list[tuple[str, bool]]:
    with psycopg.connect(database_url) as db:
        return db.execute(
            "SELECT session_id::text, recording <> '' FROM calls_call WHERE session_id::text = ANY(%s) "
            "ORDER BY 1",
            (sessions,),
        ).fetchall()


async def test_a_database_outage_loses_no_row_and_new_calls_still_connect(database, tmp_path):
    crm = Receiver([])  # the end-of-call webhook's receiver
    env = _env(database, tmp_path / "spool")
    env.update(
        {"CALL_WEBHOOK_URL": crm.url, "CALL_WEBHOOK_SECRET": "whsec-outage", "MEDIA_ROOT": str(tmp_path)}
    )
    server = Uvicorn(env, log_path=tmp_path / "uvicorn.log").start()
    try:
        before = [CallClient(server.ws_url) for _ in range(3)]
        for call in before:
            await call.connect()
            assert (await call.say_text("Hi, who is this?")).texts[0] == FIRST
        await asyncio.sleep(0.5)

        database.stop()
        try:
            turns = 0
            for _ in range(3):  # several seconds of outage, past the spool threshold
                for call in before:
                    result = await call.say_text("Tell me about pricing")
                    assert result.types[-1] == "voicechat.response.complete"
                turns += 1
                await asyncio.sleep(0.5)
            during = CallClient(server.ws_url)  # a new call connects while the database is down
            await during.connect()
            assert (await during.say_text("Hi, who is this?")).texts[0] == FIRST
            await before[0].close()  # one caller hangs up during the outage
            await asyncio.sleep(2.0)
        finally:
            database.start()

        for call in [*before[1:], during]:
            await call.close()
        expected = [(c.session_id, "hangup", 2 * (turns + 1)) for c in before] + [
            (during.session_id, "hangup", 2)
        ]
        assert await _wait_rows(database.url, expected) == sorted(expected)
        assert _metric(server.port, "vantum_recorder_spooled_total") > 0
        assert _metric(server.port, "vantum_recorder_lost_writes_total") == 0
        assert list((tmp_path / "spool").glob("*.jsonl")) == []
        # Every call's recording is attached, the one that hung up during the outage too, and
        # every ended call's report reached the CRM once its rows were readable.
        sessions = sorted(row[0] for row in expected)
        assert _recordings(database.url, sessions) == [(session, True) for session in sessions]
        for _ in range(100):
            if len(crm.requests) >= len(sessions):
                break
            await asyncio.sleep(0.2)
        reports = [json.loads(body) for _, body in crm.requests]
        assert sorted(report["sessionId"] for report in reports) == sessions
        assert all(report["endedAt"] for report in reports)
        assert _metric(server.port, "vantum_webhooks_lost_total") == 0
    finally:
        server.stop()
        crm.close()


async def test_a_nul_byte_in_a_typed_turn_is_stored_with_the_rest_of_the_text(database, tmp_path):
    server = Uvicorn(_env(database, tmp_path / "spool"), log_path=tmp_path / "uvicorn.log").start()
    try:
        async with CallClient(server.ws_url) as call:
            result = await call.say_text("Hello\x00 I run a bakery")
            assert result.types[-1] == "voicechat.response.complete"
        await _wait_rows(database.url, [(call.session_id, "hangup", 2)])
        with psycopg.connect(database.url) as db:
            texts = db.execute(
                "SELECT m.text FROM calls_message m JOIN calls_call c ON c.id = m.call_id "
                "WHERE c.session_id::text = %s AND m.role = 'user'",
                (call.session_id,),
            ).fetchall()
        assert texts == [("Hello\ufffd I run a bakery",)]
    finally:
        server.stop()


async def test_writes_spooled_by_a_killed_process_are_stored_at_the_next_start(database, tmp_path):
    env = _env(database, tmp_path / "spool")
    server = Uvicorn(env, log_path=tmp_path / "a.log").start()
    try:
        call = CallClient(server.ws_url)
        await call.connect()
        assert (await call.say_text("Hi, who is this?")).texts[0] == FIRST
        await asyncio.sleep(1.5)  # a heartbeat: this process is on record
        database.stop()
        try:
            for _ in range(2):
                assert (await call.say_text("Tell me about pricing")).texts
            await asyncio.sleep(2.5)  # past VANTUM_SPOOL_AFTER_SECONDS: the writes are on disk
            server.signal(signal.SIGKILL)
            server.wait(10)
        finally:
            database.start()
        assert list((tmp_path / "spool").glob("*.jsonl")) != []
    finally:
        server.stop()

    restarted = Uvicorn(env, log_path=tmp_path / "b.log").start()
    try:
        # The new process replays the spool and closes the call the killed one left open.
        expected = [(call.session_id, "server_lost", 6)]
        assert await _wait_rows(database.url, expected) == expected
        assert list((tmp_path / "spool").glob("*.jsonl")) == []
    finally:
        restarted.stop()


async def test_a_hang_up_right_after_the_audio_was_pushed_stores_what_was_heard(database, tmp_path):
    server = Uvicorn(_env(database, tmp_path / "spool"), log_path=tmp_path / "uvicorn.log").start()
    try:
        async with CallClient(server.ws_url) as call:
            cut = await call.say_text("Hi, who is this?")  # all audio pushed, not yet played
        async with CallClient(server.ws_url) as listener:
            heard = await listener.say_text("Hi, who is this?")
            seconds = len(heard.audio) / (2 * heard.of("voicechat.response.chunk")[0].payload["sampleRate"])
            await asyncio.sleep(seconds * 1.15 + 0.8)  # heard to the end
        assert len(cut.texts) >= 2
        for session in (call.session_id, listener.session_id):
            await _wait_rows(database.url, [(session, "hangup", 2)])
        with psycopg.connect(database.url) as db:
            rows = db.execute(
                "SELECT c.session_id::text, m.text, m.interrupted FROM calls_message m "
                "JOIN calls_call c ON c.id = m.call_id WHERE m.role = 'assistant' "
                "AND c.session_id::text = ANY(%s)",
                ([call.session_id, listener.session_id],),
            ).fetchall()
        stored = {session: (text, interrupted) for session, text, interrupted in rows}
        assert stored[call.session_id] == (cut.texts[0], True)
        assert stored[listener.session_id] == (" ".join(heard.texts), False)
    finally:
        server.stop()
