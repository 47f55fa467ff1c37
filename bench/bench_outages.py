"""Outages at scale (issue 10): 100 live calls on a real uvicorn process with real
PostgreSQL and Redis, while Redis is stopped for 20 s, then PostgreSQL for 60 s; then a
burst of hang-ups at once. Counts what a caller or a reviewer would notice:

- calls dropped: calls whose socket closed, or a turn that failed, during the run;
- rows lost: transcript rows (2 a completed turn) missing from the database at the end;
- calls not ended: rows still "in progress" after every caller hung up;
- slots leaked: ``vantum_active_calls`` after every caller hung up.

    .venv/bin/python bench/bench_outages.py [--calls 100] [--redis-outage 20] [--db-outage 60] [--burst 300]

Prints a summary, writes ``bench/results/outages-<time>.json`` and appends a row to the
section "## Outages (issue 10)" of ``docs/BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.outage_servers import StoppablePostgres, StoppableRedis, Uvicorn  # noqa: E402
from tests.servers import migrate, server_env  # noqa: E402
from vantum_client import CallClient  # noqa: E402

RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "BENCHMARKS.md"
SECTION = "## Outages (issue 10)"


class LiveCall:
    """One caller: a typed turn every few seconds until told to stop."""

    def __init__(self, url: str, think: float) -> None:
        self.client = CallClient(url, open_timeout=30)
        self.think = think
        self.turns = 0
        self.failure = ""
        self.stop = asyncio.Event()

    async def run(self) -> None:
        try:
            await self.client.connect()
            while not self.stop.is_set():
                result = await self.client.say_text("Tell me about pricing", timeout=60)
                if result.types[-1] != "voicechat.response.complete":
                    raise RuntimeError(f"turn ended with {result.types[-1]}")
                self.turns += 1
                await _sleep_or(self.stop, self.think * random.uniform(0.7, 1.3))
        except Exception as error:  # a dropped call: the socket closed or a turn failed
            self.failure = f"{type(error).__name__}: {error}"[:200]
        finally:
            await self.client.close()


async def _sleep_or(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)


def _metric(port: int, name: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return sum(float(line.split()[-1]) for line in body.splitlines() if line.startswith(name + " "))


def _stored(database_url: str, sessions: list[str]) -> dict[str, tuple[str, int]]:
    with psycopg.connect(database_url) as db:
        rows = db.execute(
            "SELECT c.session_id::text, c.end_reason, count(m.id) FROM calls_call c "
            "LEFT JOIN calls_message m ON m.call_id = c.id WHERE c.session_id::text = ANY(%s) "
            "GROUP BY c.session_id, c.end_reason",
            (sessions,),
        ).fetchall()
    return {session: (reason, count) for session, reason, count in rows}


async def _settle(database_url: str, expected: dict[str, int], timeout: float) -> dict[str, tuple[str, int]]:
    """Wait (bounded) until every call is ended with its rows; return what is stored."""
    deadline = time.monotonic() + timeout
    while True:
        stored = _stored(database_url, list(expected))
        done = all(stored.get(s, ("", -1))[0] and stored[s][1] >= n for s, n in expected.items())
        if done or time.monotonic() > deadline:
            return stored
        await asyncio.sleep(1.0)


async def outage_run(
    server: Uvicorn, database_url: str, *, calls: int, think: float, stop, start, seconds: float
) -> dict:
    """``calls`` live calls; ``stop()`` a dependency for ``seconds``, with callers hanging up
    and new callers connecting meanwhile; ``start()`` it again; everyone hangs up."""
    live = [LiveCall(server.ws_url, think) for _ in range(calls)]
    tasks = []
    for call in live:  # ramp up over a few seconds
        tasks.append(asyncio.create_task(call.run()))
        await asyncio.sleep(5.0 / calls)
    await asyncio.sleep(think * 2)
    await asyncio.to_thread(stop)
    outage_started = time.monotonic()
    # During the outage: a tenth of the callers hang up, as many new ones call.
    leaving = live[: calls // 10]
    for call in leaving:
        call.stop.set()
    joining = [LiveCall(server.ws_url, think) for _ in range(calls // 10)]
    for call in joining:
        tasks.append(asyncio.create_task(call.run()))
    live += joining
    await asyncio.sleep(max(0.0, seconds - (time.monotonic() - outage_started)))
    await asyncio.to_thread(start)
    await asyncio.sleep(think * 2)
    for call in live:
        call.stop.set()
    await asyncio.gather(*tasks)

    expected = {c.client.session_id: 2 * c.turns for c in live if c.client.session_id}
    stored = await _settle(database_url, expected, timeout=90)
    rows_lost = sum(max(0, n - stored.get(s, ("", 0))[1]) for s, n in expected.items())
    not_ended = sum(1 for s in expected if not stored.get(s, ("", 0))[0])
    return {
        "calls": len(live),
        "turns": sum(c.turns for c in live),
        "calls_dropped": sum(1 for c in live if c.failure),
        "failures": sorted({c.failure for c in live if c.failure})[:5],
        "rows_expected": sum(expected.values()),
        "rows_lost": rows_lost,
        "calls_not_ended": not_ended,
        "slots_leaked": int(_metric(server.port, "vantum_active_calls")),
        "spooled": int(_metric(server.port, "vantum_recorder_spooled_total")),
        "lost_writes_metric": int(_metric(server.port, "vantum_recorder_lost_writes_total")),
    }


async def burst_run(server: Uvicorn, database_url: str, *, calls: int) -> dict:
    """``calls`` connected calls that all hang up at the same instant."""
    clients = [CallClient(server.ws_url, open_timeout=60) for _ in range(calls)]
    connected = await asyncio.gather(*(c.connect() for c in clients), return_exceptions=True)
    failed_connect = sum(1 for r in connected if isinstance(r, BaseException))
    alive = [c for c, r in zip(clients, connected, strict=True) if not isinstance(r, BaseException)]
    await asyncio.sleep(1.0)
    await asyncio.gather(*(c.close() for c in alive), return_exceptions=True)
    expected = {c.session_id: 0 for c in alive}
    stored = await _settle(database_url, expected, timeout=90)
    return {
        "calls": calls,
        "failed_connect": failed_connect,
        "calls_not_ended": sum(1 for s in expected if not stored.get(s, ("", 0))[0]),
        "slots_leaked": int(_metric(server.port, "vantum_active_calls")),
        "live_failures": int(_metric(server.port, "vantum_live_failures_total")),
    }


async def main_async(args: argparse.Namespace) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="vantum-bench-outages-"))
    postgres, redis = StoppablePostgres(), StoppableRedis()
    postgres.start()
    redis.start()
    env = server_env(
        {
            "DATABASE_URL": postgres.url,
            "REDIS_URL": redis.url,
            "DJANGO_DEBUG": "false",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "VANTUM_MAX_CALLS": str(max(args.calls * 2, args.burst + 10)),
            "VANTUM_MAX_CALLS_PER_ADDRESS": "0",  # every bench caller is 127.0.0.1
            "VANTUM_SPOOL_DIR": str(workdir / "spool"),
        }
    )
    results: dict = {"load_before": os.getloadavg()}
    try:
        migrate(env)
        server = Uvicorn(env, log_path=workdir / "uvicorn.log").start()
        try:
            outages = (("redis", redis, args.redis_outage), ("postgres", postgres, args.db_outage))
            for name, dependency, seconds in outages:
                if not seconds:
                    continue
                results[name] = await outage_run(
                    server,
                    postgres.url,
                    calls=args.calls,
                    think=args.think,
                    stop=dependency.stop,
                    start=dependency.start,
                    seconds=seconds,
                )
                print(f"{name}:", results[name], flush=True)
            if args.burst:
                results["burst"] = await burst_run(server, postgres.url, calls=args.burst)
                print("burst:", results["burst"], flush=True)
        finally:
            server.stop()
    finally:
        redis.close()
        postgres.close()
    results["load_after"] = os.getloadavg()
    return results


def report(args: argparse.Namespace, results: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
    (RESULTS / f"outages-{int(time.time())}.json").write_text(json.dumps(results, indent=2))
    load = f"{results['load_before'][0]:.1f} → {results['load_after'][0]:.1f}"
    rows = []
    for key, name, seconds in (
        ("redis", "Redis", args.redis_outage),
        ("postgres", "PostgreSQL", args.db_outage),
    ):
        if key not in results:
            continue
        r = results[key]
        rows.append(
            f"| {stamp} | {name} stopped {seconds:g} s | {r['calls']} calls, {r['turns']} turns | "
            f"{r['calls_dropped']} | {r['rows_lost']} of {r['rows_expected']} | {r['calls_not_ended']} | "
            f"{r['slots_leaked']} | spooled {r['spooled']}, lost-writes metric {r['lost_writes_metric']} "
            f"| {load} |"
        )
    if "burst" in results:
        b = results["burst"]
        rows.append(
            f"| {stamp} | {b['calls']} hang-ups at once | {b['calls'] - b['failed_connect']} calls connected "
            f"({b['failed_connect']} failed to connect) | — | — | {b['calls_not_ended']} | "
            f"{b['slots_leaked']} | "
            f"live-event failures {b['live_failures']} | {load} |"
        )
    text = DOC.read_text()
    if SECTION not in text:
        text = text.rstrip("\n") + (
            f"\n\n{SECTION}\n\n"
            "| date (UTC) | fault | load | calls dropped | rows lost | calls not ended | slots leaked "
            "| notes | load average (1 min) |\n"
            "|---|---|---|---|---|---|---|---|---|\n"
        )
    # After the last row of this section's table (other sections may follow it).
    start = text.index(SECTION)
    following = text.find("\n## ", start + len(SECTION))
    end = len(text) if following == -1 else following
    body = text[start:end].rstrip("\n")
    text = text[:start] + body + "\n" + "\n".join(rows) + "\n" + text[end:]
    DOC.write_text(text)
    print("\n".join(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--think", type=float, default=4.0, help="seconds between a caller's turns")
    parser.add_argument("--redis-outage", type=float, default=20.0)
    parser.add_argument("--db-outage", type=float, default=60.0)
    parser.add_argument("--burst", type=int, default=300, help="hang-ups at once (0: skip)")
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    report(args, results)


if __name__ == "__main__":
    main()
