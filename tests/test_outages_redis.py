"""A Redis outage degrades live features only: against real uvicorn, redis-server and
PostgreSQL processes, with Redis killed in the middle of live calls and started again."""

from __future__ import annotations

import asyncio
import contextlib

import psycopg
import pytest
from channels_redis.core import RedisChannelLayer

from calls.live import call_group
from tests.outage_servers import StoppablePostgres, StoppableRedis, Uvicorn
from tests.servers import migrate, server_env
from vantum_client import CallClient

pytestmark = [pytest.mark.servers, pytest.mark.timeout(240)]

MAX_CALLS = 5


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    logs = tmp_path_factory.mktemp("redis-outage")
    postgres, redis = StoppablePostgres(), StoppableRedis()
    postgres.start()
    redis.start()
    env = server_env(
        {
            "DATABASE_URL": postgres.url,
            "REDIS_URL": redis.url,
            "VANTUM_MAX_CALLS": str(MAX_CALLS),
            "VANTUM_SPOOL_DIR": str(logs / "spool"),
        }
    )
    try:
        migrate(env)
        server = Uvicorn(env, log_path=logs / "uvicorn.log").start()
        try:
            yield {"postgres": postgres, "redis": redis, "server": server}
        finally:
            server.stop()
    finally:
        redis.close()
        postgres.close()


def _rows(database_url: str, sql: str, *args) -> list[tuple]:
    with psycopg.connect(database_url) as db:
        return db.execute(sql, args).fetchall()


async def _wait_for_rows(database_url: str, sql: str, args: tuple, expected, timeout: float = 15.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        rows = _rows(database_url, sql, *args)
        if rows == expected or asyncio.get_running_loop().time() > deadline:
            return rows
        await asyncio.sleep(0.2)


async def test_calls_talk_connect_and_free_their_slots_through_a_redis_outage(stack):
    server, redis, postgres = stack["server"], stack["redis"], stack["postgres"]
    before = [CallClient(server.ws_url) for _ in range(3)]
    for call in before:
        await call.connect()
        assert (await call.say_text("Hi, who is this?")).texts[0] == "Vantum is an AI sales assistant."

    redis.stop()
    try:
        # Calls already connected keep talking; the socket stays open.
        for call in before:
            result = await call.say_text("Tell me about pricing")
            assert result.types[-1] == "voicechat.response.complete"
            assert not call.closed.is_set()
        # New calls connect and talk, up to the cap...
        during = [CallClient(server.ws_url) for _ in range(MAX_CALLS - len(before))]
        for call in during:
            await call.connect()
            assert (await call.say_text("Hi, who is this?")).texts[0] == "Vantum is an AI sales assistant."
        # ...and hanging up frees the slots while Redis is still down.
        for call in [*before, *during]:
            await call.close()
        await asyncio.sleep(0.5)
        again = []
        for _ in range(MAX_CALLS):
            call = CallClient(server.ws_url)
            await call.connect()
            again.append(call)
        for call in again:
            await call.close()
    finally:
        redis.start()

    sessions = [c.session_id for c in [*before, *during, *again]]
    rows = await _wait_for_rows(
        postgres.url,
        "SELECT c.session_id::text, c.end_reason, count(m.id) FROM calls_call c "
        "LEFT JOIN calls_message m ON m.call_id = c.id WHERE c.session_id::text = ANY(%s) "
        "GROUP BY c.session_id, c.end_reason ORDER BY 1",
        (sessions,),
        sorted(
            [(s, "hangup", 4) for s in [c.session_id for c in before]]
            + [(s, "hangup", 2) for s in [c.session_id for c in during]]
            + [(s, "hangup", 0) for s in [c.session_id for c in again]]
        ),
    )
    assert rows == sorted(
        [(c.session_id, "hangup", 4) for c in before]
        + [(c.session_id, "hangup", 2) for c in during]
        + [(c.session_id, "hangup", 0) for c in again]
    )


async def test_after_redis_restarts_empty_another_process_can_end_a_call_again(stack):
    server, redis, postgres = stack["server"], stack["redis"], stack["postgres"]
    async with CallClient(server.ws_url) as call:
        assert (await call.say_text("Hi, who is this?")).texts
        redis.stop()
        await asyncio.sleep(1.0)
        assert (await call.say_text("Tell me about pricing")).texts
        redis.start()  # empty: the call's group membership is gone from Redis
        layer = RedisChannelLayer(hosts=[{"address": redis.url, "socket_timeout": None}])
        # The server re-joins its groups once it reaches Redis again (within its backoff).
        ended = False
        for _ in range(40):
            await layer.group_send(call_group(call.session_id), {"type": "call.end", "reason": "staff_ended"})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(call.closed.wait(), 0.5)
                ended = True
                break
        assert ended
    rows = await _wait_for_rows(
        postgres.url,
        "SELECT end_reason FROM calls_call WHERE session_id::text = %s",
        (call.session_id,),
        [("staff_ended",)],
    )
    assert rows == [("staff_ended",)]
