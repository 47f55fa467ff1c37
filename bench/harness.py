"""The benchmark harness: real WebSocket clients (this process) against a real server
process (``bench/serve.py``), speaking MessagePack per PROTOCOL.md.

    python bench/harness.py capacity --calls 100 --think 3 --turns 3 [--server uvicorn] [--processes 2]
    python bench/harness.py memory --connections 2000
    python bench/harness.py leak --calls 1000 --concurrency 50
    python bench/harness.py progressive
    python bench/harness.py overhead

Each run prints a summary, writes ``bench/results/<name>-<time>.json`` and appends a row to
``docs/BENCHMARKS.md`` (section "Harness runs").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import free_port, run_redis, wait_for_port  # noqa: E402
from vantum_client import CallClient  # noqa: E402

RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "BENCHMARKS.md"


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 1)


def stats(values: list[float]) -> dict[str, float | None]:
    return {
        "p50": pct(values, 0.5),
        "p95": pct(values, 0.95),
        "p99": pct(values, 0.99),
        "max": round(max(values), 1) if values else None,
        "n": len(values),
    }


class Servers:
    """One or more bench server processes sharing a database (and Redis when several)."""

    def __init__(self, args: argparse.Namespace, *, buffered: bool = False) -> None:
        self.args = args
        self.buffered = buffered
        self.workdir = Path(tempfile.mkdtemp(prefix="vantum-bench-"))
        self.marks = self.workdir / "marks.jsonl"
        self.processes: list[subprocess.Popen] = []
        self.ports: list[int] = []
        self.stack = contextlib.ExitStack()

    def __enter__(self) -> Servers:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "vantum.settings",
            "LOG_LEVEL": "ERROR",
            # Production-like: DEBUG keeps every SQL query in memory and wraps each cursor.
            "DJANGO_DEBUG": "false",
            "DJANGO_SECRET_KEY": "bench-only-secret-key-" + "x7Qp2Lm9Zr4Tv8Nw1Ks6Hd3Jf5Gb0Yc",
            "DATABASE_URL": self.args.database_url or f"sqlite:///{self.workdir / 'bench.sqlite3'}",
            "VANTUM_MAX_CALLS": "100000",
            "VANTUM_MAX_EVENTS_PER_SECOND": "1000",
        }
        if self.args.processes > 1 or self.args.redis:
            env["REDIS_URL"] = self.stack.enter_context(run_redis())
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
        )
        for _ in range(self.args.processes):
            port = free_port()
            command = [
                sys.executable, "bench/serve.py", "--port", str(port), "--server", self.args.server,
                "--ttft", str(self.args.ttft), "--tps", str(self.args.tps), "--engine", self.args.engine,
                "--marks", str(self.marks),
            ]  # fmt: skip
            if self.buffered:
                command.append("--buffered")
            log = open(self.workdir / f"server-{port}.log", "wb")
            self.processes.append(
                subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            )
            self.ports.append(port)
        for process, port in zip(self.processes, self.ports, strict=True):
            wait_for_port(port, process=process, timeout=90)
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(15)
        self.stack.close()

    def urls(self) -> list[str]:
        return [f"ws://127.0.0.1:{port}/ws" for port in self.ports]

    def rss_mb(self) -> float:
        return sum(psutil.Process(p.pid).memory_info().rss for p in self.processes) / 2**20

    def cpu_seconds(self) -> float:
        total = 0.0
        for p in self.processes:
            times = psutil.Process(p.pid).cpu_times()
            total += times.user + times.system
        return total

    def marker_times(self) -> dict[str, float]:
        if not self.marks.exists():
            return {}
        return {
            row["tag"]: row["marker_wall"] for row in map(json.loads, self.marks.read_text().splitlines())
        }


async def one_call(url: str, *, turns: int, think: float, results: dict, start_delay: float) -> None:
    await asyncio.sleep(start_delay)
    try:
        async with CallClient(url, open_timeout=60) as call:
            for _ in range(turns):
                tag = uuid.uuid4().hex[:12]
                sent_wall = time.time()
                await call.send("voicechat.text.input", {"text": f"Tell me about Vantum [bench:{tag}]"})
                first_text = first_audio = None
                metrics: dict = {}
                while True:
                    event = await call.next_event(timeout=120)
                    if event.event_type == "voicechat.response.text" and first_text is None:
                        first_text = event.received_wall
                    if event.event_type == "voicechat.response.chunk" and first_audio is None:
                        first_audio = event.received_wall
                    if event.event_type == "voicechat.response.complete":
                        metrics = event.payload.get("metrics") or {}
                        break
                    if event.event_type.endswith("error"):
                        results["errors"].append(event.payload.get("message"))
                results["turns"].append(
                    {
                        "tag": tag,
                        "sent": sent_wall,
                        "first_text": first_text,
                        "first_audio": first_audio,
                        "server": metrics,
                    }
                )
                await asyncio.sleep(think * random.uniform(0.8, 1.2))
        results["calls"] += 1
    except Exception as error:  # counted and reported, never hidden
        results["errors"].append(f"{type(error).__name__}: {error}")


async def drive(urls: list[str], *, calls: int, turns: int, think: float, ramp: float) -> dict:
    results: dict = {"calls": 0, "turns": [], "errors": []}
    await asyncio.gather(
        *(
            one_call(
                urls[n % len(urls)], turns=turns, think=think, results=results, start_delay=ramp * n / calls
            )
            for n in range(calls)
        )
    )
    return results


def summarize(results: dict, marks: dict[str, float]) -> dict:
    turns = results["turns"]
    first_chunk = [(t["first_text"] - t["sent"]) * 1000 for t in turns if t["first_text"]]
    first_audio = [(t["first_audio"] - t["sent"]) * 1000 for t in turns if t["first_audio"]]
    added = [
        (t["first_audio"] - marks[t["tag"]]) * 1000 for t in turns if t["first_audio"] and t["tag"] in marks
    ]
    chunk_to_audio = [
        t["server"]["firstAudioMs"] - t["server"]["firstChunkMs"]
        for t in turns
        if t["server"].get("firstAudioMs") is not None and t["server"].get("firstChunkMs") is not None
    ]
    return {
        "calls": results["calls"],
        "turns": len(turns),
        "errors": len(results["errors"]),
        "error_samples": results["errors"][:5],
        "first_chunk_ms": stats(first_chunk),
        "first_audio_ms": stats(first_audio),
        "server_added_ms": stats(added),
        "server_chunk_to_audio_ms": stats(chunk_to_audio),
    }


def record(name: str, args: argparse.Namespace, summary: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
    meta = {
        "name": name,
        "date": stamp,
        "machine": f"{platform.machine()} x{os.cpu_count()}",
        "python": platform.python_version(),
        "args": {k: v for k, v in vars(args).items() if k not in {"command"}},
    }
    (RESULTS / f"{name}-{stamp.replace(' ', 'T').replace(':', '')}.json").write_text(
        json.dumps({**meta, **summary}, indent=2)
    )
    print(json.dumps(summary, indent=2))
    params = " ".join(f"{k}={v}" for k, v in meta["args"].items() if v not in ("", None, False))
    line = f"| {stamp} | {name} | {params} | {_headline(summary)} |\n"
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    if "## Harness runs" not in text:
        text += "\n## Harness runs\n\n| date (UTC) | run | parameters | headline |\n|---|---|---|---|\n"
    DOC.write_text(text + line)


def _headline(summary: dict) -> str:
    if "first_audio_ms" in summary:
        fa, sa, ca = (
            summary["first_audio_ms"],
            summary["server_added_ms"],
            summary["server_chunk_to_audio_ms"],
        )
        return (
            f"{summary['calls']} calls, {summary['turns']} turns, {summary['errors']} errors; "
            f"first audio p50 {fa['p50']} / p95 {fa['p95']} ms; "
            f"marker→audio at client p50 {sa['p50']} / p95 {sa['p95']} ms; "
            f"server chunk→audio p95 {ca['p95']} ms; server CPU {summary.get('server_cpu_percent')}%, "
            f"peak RSS {summary.get('server_rss_mb')} MB"
        )
    return "; ".join(f"{k}={v}" for k, v in summary.items() if not isinstance(v, dict | list))


async def run_capacity(args: argparse.Namespace) -> dict:
    with Servers(args) as servers:
        cpu_before, started = servers.cpu_seconds(), time.monotonic()
        rss_samples: list[float] = []

        async def sample() -> None:
            while True:
                rss_samples.append(servers.rss_mb())
                await asyncio.sleep(1)

        sampler = asyncio.create_task(sample())
        results = await drive(
            servers.urls(), calls=args.calls, turns=args.turns, think=args.think, ramp=args.ramp
        )
        sampler.cancel()
        elapsed = time.monotonic() - started
        summary = summarize(results, servers.marker_times())
        summary["server_cpu_percent"] = round(100 * (servers.cpu_seconds() - cpu_before) / elapsed, 1)
        summary["server_rss_mb"] = round(max(rss_samples), 1) if rss_samples else None
        summary["turns_per_second"] = round(summary["turns"] / elapsed, 1)
    return summary


async def run_memory(args: argparse.Namespace) -> dict:
    with Servers(args) as servers:
        await asyncio.sleep(2)
        base = servers.rss_mb()
        clients = []
        for n in range(args.connections):
            client = CallClient(servers.urls()[0], open_timeout=60)
            await client.connect()
            clients.append(client)
            if n % 200 == 199:
                await asyncio.sleep(0.2)
        await asyncio.sleep(3)
        loaded = servers.rss_mb()
        for client in clients:
            await client.close()
        await asyncio.sleep(3)
        after = servers.rss_mb()
    return {
        "connections": args.connections,
        "rss_idle_mb": round(base, 1),
        "rss_connected_mb": round(loaded, 1),
        "rss_after_close_mb": round(after, 1),
        "kb_per_idle_call": round((loaded - base) * 1024 / args.connections, 1),
    }


async def run_leak(args: argparse.Namespace) -> dict:
    with Servers(args) as servers:
        samples = []
        done = errors = 0
        while done < args.calls:
            batch = min(args.concurrency, args.calls - done)
            results = await drive(servers.urls(), calls=batch, turns=1, think=0, ramp=0.5)
            errors += len(results["errors"])
            done += batch
            samples.append((done, round(servers.rss_mb(), 1)))
    quarter = max(1, len(samples) // 4)
    first = statistics.mean(r for _, r in samples[:quarter])
    last = statistics.mean(r for _, r in samples[-quarter:])
    return {
        "calls": done,
        "errors": errors,
        "rss_first_quarter_mb": round(first, 1),
        "rss_last_quarter_mb": round(last, 1),
        "rss_growth_mb": round(last - first, 1),
        "rss_samples_mb": samples,
    }


async def run_progressive(args: argparse.Namespace) -> dict:
    out: dict = {}
    for buffered in (False, True):
        with Servers(args, buffered=buffered) as servers:
            results = await drive(servers.urls(), calls=args.calls, turns=args.turns, think=1.0, ramp=1.0)
            out["buffered" if buffered else "progressive"] = summarize(results, servers.marker_times())
    progressive = out["progressive"]["first_audio_ms"]["p50"]
    buffered_p50 = out["buffered"]["first_audio_ms"]["p50"]
    return {
        "progressive_first_audio_p50_ms": progressive,
        "buffered_first_audio_p50_ms": buffered_p50,
        "ratio": round(buffered_p50 / progressive, 2) if progressive and buffered_p50 else None,
        "detail": out,
    }


async def run_overhead(args: argparse.Namespace) -> dict:
    """Per token: the bare SDK consuming a stream against our whole path (SDK, chunker, turn)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vantum.settings")
    import openai

    from bench.bench_chunker import build_reply
    from llm.config import LLMConfig
    from llm.fake_openai import FakeOpenAI, FakeReply
    from llm.metrics import LLMServiceMetrics
    from llm.openai_adapter import OpenAIChatProvider
    from llm.session import Conversation
    from llm.turn import ReplyChunk

    tokens = build_reply(args.tokens)

    class NullSink:
        async def speak(self, chunk: ReplyChunk) -> None:
            chunk.audio_sent = True

    async def bare() -> float:
        fake = FakeOpenAI(default=FakeReply(tokens=tokens), keep_log=False)
        client = openai.AsyncOpenAI(api_key="k", http_client=fake.http_client(), max_retries=0)
        started = time.perf_counter()
        stream = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}], stream=True
        )
        async for _chunk in stream:
            pass
        return time.perf_counter() - started

    async def ours() -> float:
        fake = FakeOpenAI(default=FakeReply(tokens=tokens), keep_log=False)
        provider = OpenAIChatProvider(api_key="k", http_client=fake.http_client())
        conversation = Conversation(
            call_id="bench", provider=provider, config=LLMConfig(), metrics=LLMServiceMetrics()
        )
        started = time.perf_counter()
        await conversation.respond("x", sink=NullSink())
        return time.perf_counter() - started

    bare_runs = [await bare() for _ in range(7)]
    our_runs = [await ours() for _ in range(7)]
    bare_us = statistics.median(bare_runs) / len(tokens) * 1e6
    our_us = statistics.median(our_runs) / len(tokens) * 1e6
    return {
        "tokens": len(tokens),
        "bare_sdk_us_per_token": round(bare_us, 2),
        "ours_us_per_token": round(our_us, 2),
        "overhead_percent_of_bare_sdk": round(100 * (our_us - bare_us) / bare_us, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("capacity", "memory", "leak", "progressive", "overhead"):
        p = sub.add_parser(name)
        p.add_argument("--server", choices=["daphne", "uvicorn"], default="daphne")
        p.add_argument("--processes", type=int, default=1)
        p.add_argument("--redis", action="store_true")
        p.add_argument("--database-url", default="")
        p.add_argument("--engine", default="tone")
        p.add_argument("--ttft", type=float, default=0.3, help="fake model: seconds to the first token")
        p.add_argument("--tps", type=float, default=50.0, help="fake model: tokens per second")
        p.add_argument("--calls", type=int, default={"leak": 1000, "progressive": 20}.get(name, 100))
        p.add_argument("--turns", type=int, default=3)
        p.add_argument("--think", type=float, default=3.0, help="seconds between a reply and the next turn")
        p.add_argument("--ramp", type=float, default=5.0, help="seconds over which calls connect")
        p.add_argument("--connections", type=int, default=2000)
        p.add_argument("--concurrency", type=int, default=50)
        p.add_argument("--tokens", type=int, default=5000)
    args = parser.parse_args()
    runner = {
        "capacity": run_capacity,
        "memory": run_memory,
        "leak": run_leak,
        "progressive": run_progressive,
        "overhead": run_overhead,
    }[args.command]
    summary = asyncio.run(runner(args))
    record(args.command, args, summary)


if __name__ == "__main__":
    main()
