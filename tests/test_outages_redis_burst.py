"""A burst of hang-ups through a small Redis pool (real uvicorn, redis-server, PostgreSQL):
the pool makes the burst wait or shed live events, never the call bookkeeping. Every call is
ended in the database and no capacity slot leaks."""

from __future__ import annotations

import asyncio
import urllib.request

import psycopg
import pytest

from tests.outage_servers import StoppablePostgres, StoppableRedis, Uvicorn, wait_until
from tests.servers import migrate, server_env
from vantum_client import CallClient

pytestmark = [pytest.mark.servers, pytest.mark.timeout(300)]

CALLS = 200
POOL = 4  # Redis connections for the whole process: far fewer than the calls hanging up


def _metric(port: int, name: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    values = [float(line.split()[-1]) for line in body.splitlines() if line.startswith(name + " ")]
    assert values, f"{name} not in /metrics"
    return values[0]


def _ended(database_url: str, sessions: list[str]) -> list[tuple]:
    with psycopg.connect(database_url) as db:
        return db.execute(
            "SELECT end_reason, count(*) FROM calls_call WHERE session_id::text = ANY(%s) "
            "AND ended_at IS NOT NULL GROUP BY end_reason",
            (sessions,),
        ).fetchall()


async def test_a_burst_of_hang_ups_through_a_small_redis_pool_ends_every_call(tmp_path):
    postgres, redis = StoppablePostgres(), StoppableRedis()
    postgres.start()
    redis.start()
    server = None
    calls: list[CallClient] = []
    try:
        env = server_env(
            {
                "DATABASE_URL": postgres.url,
                "REDIS_URL": redis.url,
                "VANTUM_REDIS_MAX_CONNECTIONS": str(POOL),
                "VANTUM_MAX_CALLS_PER_ADDRESS": "0",  # every test caller comes from 127.0.0.1
                "VANTUM_SPOOL_DIR": str(tmp_path / "spool"),
            }
        )
        migrate(env)
        server = Uvicorn(env, log_path=tmp_path / "uvicorn.log").start()
        for _ in range(CALLS // 20):  # connect in waves; the hang-ups come all at once
            wave = [CallClient(server.ws_url, open_timeout=30) for _ in range(20)]
            await asyncio.gather(*(call.connect() for call in wave))
            calls.extend(wave)
        assert _metric(server.port, "vantum_active_calls") == CALLS
        async with CallClient(server.ws_url) as talker:  # the live path works at full load
            assert (await talker.say_text("Hi, who is this?")).texts[0] == "Vantum is an AI sales assistant."

        await asyncio.wait_for(asyncio.gather(*(call.close() for call in calls)), 60)

        sessions = [call.session_id for call in calls]
        wait_until(
            lambda: _ended(postgres.url, sessions) == [("hangup", CALLS)],
            timeout=60,
            interval=0.5,
            what="every call ended in the database",
        )
        wait_until(
            lambda: _metric(server.port, "vantum_active_calls") == 0,
            timeout=30,
            interval=0.5,
            what="every capacity slot released",
        )
        assert server.process.poll() is None
    finally:
        for call in calls:
            await call.close()
        if server is not None:
            server.stop()
        redis.close()
        postgres.close()
