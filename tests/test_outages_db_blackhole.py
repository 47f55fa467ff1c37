"""A database that stops answering (blackholed: the port accepts, nothing ever replies)
must not stall calls or their writes: connecting gives up after VANTUM_DB_CONNECT_TIMEOUT,
new calls connect on the cached prompt, and the call's rows go to the spool."""

from __future__ import annotations

import contextlib
import json
import socket

import pytest

from tests.outage_servers import Uvicorn, wait_until
from tests.servers import server_env
from vantum_client import CallClient

pytestmark = [pytest.mark.servers, pytest.mark.timeout(180)]


@pytest.fixture
def blackhole():
    """A loopback port that completes TCP handshakes (the kernel's backlog) and never says
    a word: PostgreSQL's startup reply never comes."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(512)
        yield listener.getsockname()[1]


def _spooled(spool, session_id: str) -> list[tuple[str, str]]:
    """(service, end reason) of each spooled write of the call, in order."""
    writes = []
    for path in sorted(spool.glob("*.jsonl")):
        for line in path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):  # a line being appended right now
                write = json.loads(line)
                if write["kwargs"].get("session_id") == {"$uuid": session_id}:
                    writes.append((write["service"], write["kwargs"].get("reason", "")))
    return writes


async def test_a_blackholed_database_fails_over_to_the_spool_instead_of_stalling(blackhole, tmp_path):
    spool = tmp_path / "spool"
    env = server_env(
        {
            "DATABASE_URL": f"postgres://vantum@127.0.0.1:{blackhole}/postgres",
            "VANTUM_DB_CONNECT_TIMEOUT": "2",
            "VANTUM_SPOOL_DIR": str(spool),
            "VANTUM_SPOOL_AFTER_SECONDS": "1",
        }
    )
    server = Uvicorn(env, log_path=tmp_path / "uvicorn.log").start()
    try:
        async with CallClient(server.ws_url, open_timeout=30) as call:
            result = await call.say_text("Hi, who is this?", timeout=60)
            assert result.texts[0] == "Vantum is an AI sales assistant."

        # The call's start, both turns and its end are on disk, waiting for the database.
        def ended() -> list[tuple[str, str]] | None:
            writes = _spooled(spool, call.session_id)
            return writes if ("calls.services:call_end", "hangup") in writes else None

        spooled = wait_until(
            ended,
            timeout=60,
            interval=0.5,
            what="the call's writes spooled",
        )
        assert spooled[:3] == [
            ("calls.services:call_start", ""),
            ("calls.services:message_record_user", ""),
            ("calls.services:message_record_assistant", ""),
        ]
    finally:
        server.stop()
