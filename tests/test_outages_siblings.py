"""Sibling server processes and database outages (``uvicorn --workers N``, as real uvicorn
processes on one PostgreSQL): after an outage, neither closes the other's live calls as
``server_lost``, a process once found lost does not lose its new calls, and the calls of a
process that started during an outage and crashed are closed, not left live forever."""

from __future__ import annotations

import asyncio
import signal

import psycopg
import pytest

from tests.outage_servers import StoppablePostgres, Uvicorn
from tests.servers import migrate, server_env
from vantum_client import CallClient

pytestmark = [pytest.mark.servers, pytest.mark.timeout(240)]

FIRST = "Vantum is an AI sales assistant."
HEARTBEAT = 1.0  # seconds: a sibling is stale after 3 s of silence
OUTAGE = 8.0  # well past the staleness threshold


def _env(database: StoppablePostgres, tmp_path) -> dict[str, str]:
    env = server_env(
        {
            "DATABASE_URL": database.url,
            "VANTUM_SPOOL_DIR": str(tmp_path / "spool"),  # one machine: one spool, as with --workers
            "VANTUM_SPOOL_AFTER_SECONDS": "1",
            "VANTUM_HEARTBEAT_SECONDS": str(HEARTBEAT),
        }
    )
    migrate(env)
    return env


def _query(database_url: str, sql: str, *args) -> list[tuple]:
    with psycopg.connect(database_url) as db:
        return db.execute(sql, args).fetchall()


def _ends(database_url: str, sessions: list[str]) -> list[tuple]:
    return _query(
        database_url,
        "SELECT session_id::text, end_reason FROM calls_call WHERE session_id::text = ANY(%s) ORDER BY 1",
        sessions,
    )


async def _wait_ends(database_url: str, expected: list[tuple], timeout: float = 30.0) -> list[tuple]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        rows = _ends(database_url, [row[0] for row in expected])
        if rows == sorted(expected) or asyncio.get_running_loop().time() > deadline:
            return rows
        await asyncio.sleep(0.3)


async def _beats_after(database_url: str, pids: list[int], since: str, timeout: float = 30.0) -> None:
    """Wait until every process has recorded a beat after ``since`` (database time)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        rows = _query(
            database_url,
            "SELECT pid FROM calls_serverinstance WHERE pid = ANY(%s) AND heartbeat_at > %s::timestamptz",
            pids,
            since,
        )
        if sorted(pid for (pid,) in rows) == sorted(pids):
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"processes {pids} did not beat after {since}")


async def test_siblings_keep_each_others_calls_through_a_database_outage(database, tmp_path):
    env = _env(database, tmp_path)
    first = Uvicorn(env, log_path=tmp_path / "a.log").start()
    second = Uvicorn(env, log_path=tmp_path / "b.log").start()
    calls: list[CallClient] = []
    try:
        on_first, on_second = CallClient(first.ws_url), CallClient(second.ws_url)
        for call in (on_first, on_second):
            await call.connect()
            calls.append(call)
            assert (await call.say_text("Hi, who is this?")).texts[0] == FIRST
        pids = [first.process.pid, second.process.pid]
        await _beats_after(database.url, pids, "-infinity")

        database.stop()
        try:
            await asyncio.sleep(OUTAGE / 2)
            # Both calls keep talking while the database is down.
            for call in (on_first, on_second):
                assert (await call.say_text("Tell me about pricing")).types[
                    -1
                ] == "voicechat.response.complete"
            await asyncio.sleep(OUTAGE / 2)
        finally:
            database.start()
        (recovered,) = _query(database.url, "SELECT now()::text")[0]

        # Both processes beat again, then several sweeps run (3 beats of silence = lost).
        await _beats_after(database.url, pids, recovered)
        await asyncio.sleep(6 * HEARTBEAT)
        for call in (on_first, on_second):
            assert (await call.say_text("And the setup?")).types[-1] == "voicechat.response.complete"
            assert not call.closed.is_set()
        # New calls on both processes, through several more sweeps.
        fresh = [CallClient(first.ws_url), CallClient(second.ws_url)]
        for call in fresh:
            await call.connect()
            calls.append(call)
            assert (await call.say_text("Hi, who is this?")).texts[0] == FIRST
        await asyncio.sleep(6 * HEARTBEAT)

        sessions = [call.session_id for call in calls]
        assert _ends(database.url, sessions) == sorted((session, "") for session in sessions)
        assert _query(
            database.url,
            "SELECT pid, stopped_at IS NULL, stop_reason FROM calls_serverinstance WHERE pid = ANY(%s) "
            "ORDER BY pid",
            pids,
        ) == sorted((pid, True, "") for pid in pids)

        for call in calls:
            await call.close()
        expected = [(session, "hangup") for session in sessions]
        assert await _wait_ends(database.url, expected) == sorted(expected)
    finally:
        for call in calls:
            await call.close()
        first.stop()
        second.stop()


async def test_calls_of_a_process_that_started_during_an_outage_and_crashed_are_closed(database, tmp_path):
    env = _env(database, tmp_path)
    database.stop()
    try:
        ghost = Uvicorn(env, log_path=tmp_path / "ghost.log").start()  # never reaches the database
        try:
            call = CallClient(ghost.ws_url)
            await call.connect()
            assert (await call.say_text("Hi, who is this?")).texts[0] == FIRST
            await asyncio.sleep(3.0)  # past VANTUM_SPOOL_AFTER_SECONDS: the call is on disk
            ghost.signal(signal.SIGKILL)
            ghost.wait(10)
        finally:
            ghost.stop()
    finally:
        database.start()
    assert list((tmp_path / "spool").glob("*.jsonl")) != []

    survivor = Uvicorn(env, log_path=tmp_path / "survivor.log").start()
    try:
        # The survivor replays the spool (the call's row arrives, naming a process that never
        # wrote its own) and, that process never beating, closes the call as lost.
        expected = [(call.session_id, "server_lost")]
        assert await _wait_ends(database.url, expected) == expected
        (messages,) = _query(
            database.url,
            "SELECT count(m.id) FROM calls_message m JOIN calls_call c ON c.id = m.call_id "
            "WHERE c.session_id::text = %s",
            call.session_id,
        )[0]
        assert messages == 2
    finally:
        survivor.stop()
