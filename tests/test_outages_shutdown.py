"""Shutdowns and crashes, with real server processes: SIGTERM/SIGINT end every live call
with ``server_shutdown`` (the caller is told, the rows are stored); a SIGKILLed process's
calls are closed as ``server_lost`` by a sibling, and never listed as live."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess

import psutil
import psycopg
import pytest

from tests.outage_servers import StoppablePostgres, Uvicorn
from tests.servers import PYTHON, ROOT, free_port, migrate, run_daphne, server_env, wait_for_port
from vantum_client import CallClient

pytestmark = [pytest.mark.servers, pytest.mark.timeout(240)]


def _env(database: StoppablePostgres, tmp_path) -> dict[str, str]:
    env = server_env(
        {
            "DATABASE_URL": database.url,
            "VANTUM_SPOOL_DIR": str(tmp_path / "spool"),
            "VANTUM_HEARTBEAT_SECONDS": "1",
        }
    )
    migrate(env)
    return env


def _calls(database_url: str, sessions: list[str]) -> list[tuple]:
    with psycopg.connect(database_url) as db:
        return db.execute(
            "SELECT c.session_id::text, c.end_reason, count(m.id) FROM calls_call c "
            "LEFT JOIN calls_message m ON m.call_id = c.id WHERE c.session_id::text = ANY(%s) "
            "GROUP BY c.session_id, c.end_reason ORDER BY 1",
            (sessions,),
        ).fetchall()


async def _wait_calls(database_url: str, expected: list[tuple], timeout: float = 20.0) -> list[tuple]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        rows = _calls(database_url, [row[0] for row in expected])
        if rows == sorted(expected) or asyncio.get_running_loop().time() > deadline:
            return rows
        await asyncio.sleep(0.2)


async def _ended_events(calls: list[CallClient]) -> list[tuple]:
    """(reason, close code) each client saw: call.ended, then the close."""
    seen = []
    for call in calls:
        result = await call.until("voicechat.call.ended", timeout=15)
        await asyncio.wait_for(call.closed.wait(), 10)
        seen.append((result.events[-1].payload["reason"], call.socket.close_code))
    return seen


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_to_uvicorn_ends_every_live_call_with_server_shutdown(database, tmp_path, signum):
    server = Uvicorn(_env(database, tmp_path), log_path=tmp_path / "uvicorn.log").start()
    try:
        calls = [CallClient(server.ws_url) for _ in range(3)]
        for call in calls:
            await call.connect()
            assert (await call.say_text("Hi, who is this?")).texts
        server.signal(signum)
        assert await _ended_events(calls) == [("server_shutdown", 1000)] * 3
        # uvicorn re-raises the signal once it has shut down gracefully.
        assert server.wait(30) in (0, 1, -signum)
    finally:
        server.stop()
    expected = [(c.session_id, "server_shutdown", 2) for c in calls]
    assert await _wait_calls(database.url, expected) == sorted(expected)
    with psycopg.connect(database.url) as db:
        stopped = db.execute(
            "SELECT stop_reason FROM calls_serverinstance ORDER BY started_at DESC LIMIT 1"
        ).fetchone()
    assert stopped == ("server_shutdown",)


async def test_sigterm_to_daphne_ends_every_live_call_with_server_shutdown(database, tmp_path):
    env = _env(database, tmp_path)
    with run_daphne(env, log_path=tmp_path / "daphne.log") as port:
        calls = [CallClient(f"ws://127.0.0.1:{port}/ws") for _ in range(2)]
        for call in calls:
            await call.connect()
            assert (await call.say_text("Hi, who is this?")).texts
        (daphne,) = [
            p for p in psutil.process_iter(["cmdline"]) if ["-p", str(port)] == (p.info["cmdline"] or [])[5:7]
        ]
        os.kill(daphne.pid, signal.SIGTERM)
        assert await _ended_events(calls) == [("server_shutdown", 1000)] * 2
        await asyncio.to_thread(daphne.wait, 30)  # it stops by itself once the calls are stored
    expected = [(c.session_id, "server_shutdown", 2) for c in calls]
    assert await _wait_calls(database.url, expected) == sorted(expected)


async def test_the_calls_of_a_killed_process_are_closed_as_lost_and_never_listed_live(database, tmp_path):
    env = _env(database, tmp_path)
    crashed = Uvicorn(env, log_path=tmp_path / "a.log").start()
    survivor = Uvicorn(env, log_path=tmp_path / "b.log").start()
    try:
        lost = CallClient(crashed.ws_url)
        kept = CallClient(survivor.ws_url)
        for call in (lost, kept):
            await call.connect()
            assert (await call.say_text("Hi, who is this?")).texts
        await asyncio.sleep(1.5)  # both processes have beaten
        crashed.signal(signal.SIGKILL)
        crashed.wait(10)
        # The survivor notices within a few beats and closes the dead process's call.
        expected = [(lost.session_id, "server_lost", 2), (kept.session_id, "", 2)]
        assert await _wait_calls(database.url, expected) == sorted(expected)
        # Calls in progress (what the staff "Live calls" page lists): the survivor's only.
        with psycopg.connect(database.url) as db:
            live = db.execute(
                "SELECT session_id::text FROM calls_call WHERE ended_at IS NULL "
                "AND session_id::text = ANY(%s)",
                ([lost.session_id, kept.session_id],),
            ).fetchall()
        assert live == [(kept.session_id,)]
        assert (await kept.say_text("Tell me about pricing")).texts  # the survivor's call goes on
        await kept.close()
    finally:
        crashed.stop()
        survivor.stop()


def _start_runserver(env: dict[str, str], port: int, log_path) -> subprocess.Popen:
    """What `make run` starts: runserver (daphne's, with the autoreloader), in its own process
    group so that a Ctrl-C reaches every process of it, as in a terminal."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [PYTHON, "manage.py", "runserver", f"127.0.0.1:{port}"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


async def test_ctrl_c_on_make_run_runserver_ends_live_calls_with_server_shutdown(database, tmp_path):
    env = _env(database, tmp_path)
    port = free_port()
    process = _start_runserver(env, port, tmp_path / "runserver.log")
    try:
        await asyncio.to_thread(wait_for_port, port, process=process, timeout=60)
        call = CallClient(f"ws://127.0.0.1:{port}/ws")
        await call.connect()
        assert (await call.say_text("Hi, who is this?")).texts
        os.killpg(process.pid, signal.SIGINT)
        assert await _ended_events([call]) == [("server_shutdown", 1000)]
        await asyncio.to_thread(process.wait, 30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    expected = [(call.session_id, "server_shutdown", 2)]
    assert await _wait_calls(database.url, expected) == expected
