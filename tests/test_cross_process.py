"""Live calls across server processes: two daphne processes, a real redis-server and a
real PostgreSQL shared between them."""

from __future__ import annotations

import asyncio
import contextlib

import psycopg
import pytest
from channels_redis.core import RedisChannelLayer

from calls.live import call_group, watch_group
from tests.servers import migrate, run_daphne, run_postgres, run_redis, server_env
from vantum_client import CallClient

pytestmark = [pytest.mark.servers, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    logs = tmp_path_factory.mktemp("cluster")
    with run_postgres() as database_url, run_redis() as redis_url:
        env = server_env({"DATABASE_URL": database_url, "REDIS_URL": redis_url})
        migrate(env)
        with (
            run_daphne(env, log_path=logs / "a.log") as port_a,
            run_daphne(env, log_path=logs / "b.log") as port_b,
        ):
            yield {"database_url": database_url, "redis_url": redis_url, "ports": (port_a, port_b)}


def _layer(redis_url: str) -> RedisChannelLayer:
    return RedisChannelLayer(hosts=[{"address": redis_url, "socket_timeout": None}])


async def test_calls_on_both_processes_are_stored_in_the_shared_database(cluster):
    sessions = []
    for port in cluster["ports"]:
        async with CallClient(f"ws://127.0.0.1:{port}/ws") as call:
            result = await call.say_text("Hi, who is this?")
            assert result.texts[0] == "Vantum is an AI sales assistant."
            sessions.append(call.session_id)
    await asyncio.sleep(1.0)
    with psycopg.connect(cluster["database_url"]) as db:
        rows = db.execute(
            "SELECT c.session_id::text, count(m.id) FROM calls_call c "
            "JOIN calls_message m ON m.call_id = c.id GROUP BY c.session_id"
        ).fetchall()
    assert sorted(rows) == sorted((s, 2) for s in sessions)


async def test_another_process_can_follow_and_end_a_call_within_a_second(cluster):
    layer = _layer(cluster["redis_url"])
    port_a = cluster["ports"][0]
    async with CallClient(f"ws://127.0.0.1:{port_a}/ws") as call:
        watcher = await layer.new_channel()
        await layer.group_add(watch_group(call.session_id), watcher)
        # Announced to the call's process like the staff page's follower does (see calls.live).
        await layer.group_send(call_group(call.session_id), {"type": "call.watch", "watcher": watcher})
        await asyncio.sleep(0.2)
        await call.send("voicechat.text.input", {"text": "Tell me about pricing"})
        event = await asyncio.wait_for(layer.receive(watcher), 5)
        assert event["event"] == {"kind": "user", "text": "Tell me about pricing"}
        await call.expect("voicechat.text.input")
        await call.until("voicechat.response.chunk")

        asked = asyncio.get_running_loop().time()
        await layer.group_send(call_group(call.session_id), {"type": "call.end", "reason": "staff_ended"})
        events = await call.until("voicechat.response.stop", timeout=5)
        assert asyncio.get_running_loop().time() - asked < 1.0
        assert events.types[-1] == "voicechat.response.stop"
        await asyncio.wait_for(call.closed.wait(), 5)
        kinds = []
        with contextlib.suppress(TimeoutError):
            while "ended" not in kinds:
                kinds.append((await asyncio.wait_for(layer.receive(watcher), 5))["event"]["kind"])
        assert "ended" in kinds
    await asyncio.sleep(0.5)
    with psycopg.connect(cluster["database_url"]) as db:
        reason = db.execute(
            "SELECT end_reason FROM calls_call WHERE session_id = %s", (call.session_id,)
        ).fetchone()
    assert reason == ("staff_ended",)
