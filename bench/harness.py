"""The benchmark harness: real WebSocket clients (this process) against a real server
process (``bench/serve.py``), speaking MessagePack per PROTOCOL.md.

    python bench/harness.py capacity --calls 100 --think 3 --turns 3 [--server uvicorn] [--processes 2]
    python bench/harness.py capacity --server uvicorn --open-loop --calls 400 --think 5 --turns 6
    python bench/harness.py capacity --server uvicorn --workers 2 ...   (Redis channel layer)
    python bench/harness.py memory --connections 2000
    python bench/harness.py memory --server uvicorn --connections 500 --talking 200 [--tracemalloc]
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
import functools
import json
import linecache
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import free_port, run_postgres, run_redis, wait_for_port  # noqa: E402
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
        # The code the servers run: this checkout, or another (--root) for before/after runs.
        self.root = Path(args.root).resolve() if getattr(args, "root", "") else ROOT
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
            "DATABASE_URL": self.args.database_url
            or (self.stack.enter_context(run_postgres()) if self.args.postgres else "")
            or f"sqlite:///{self.workdir / 'bench.sqlite3'}",
            "VANTUM_MAX_CALLS": "100000",
            "VANTUM_MAX_EVENTS_PER_SECOND": "1000",
            # Every bench caller is 127.0.0.1: the per-address and per-minute limits would
            # refuse the load itself.
            "VANTUM_MAX_CALLS_PER_ADDRESS": "0",
            "VANTUM_MAX_TURNS_PER_MINUTE": "0",
        }
        if self.args.processes > 1 or self.args.workers > 1 or self.args.redis:
            env["REDIS_URL"] = self.stack.enter_context(run_redis())
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"],
            cwd=self.root,
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
            if self.args.workers != 1:
                command += ["--workers", str(self.args.workers)]
            if self.args.loop != "auto" or self.args.http != "auto":
                command += ["--loop", self.args.loop, "--http", self.args.http]
            if self.buffered:
                command.append("--buffered")
            if getattr(self.args, "profile", ""):
                command += ["--profile", str(Path(self.args.profile).resolve())]
            if self.args.ws != "auto":
                command += ["--ws", self.args.ws]
            if getattr(self.args, "ws_deflate", False):
                command.append("--ws-deflate")
            if getattr(self.args, "tracemalloc", False):
                command += ["--tracemalloc", str(self.workdir / f"heap-{len(self.processes)}")]
            log = open(self.workdir / f"server-{port}.log", "wb")
            self.processes.append(
                subprocess.Popen(command, cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT)
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

    def _tree(self) -> list[psutil.Process]:
        """The server processes and their children (uvicorn's worker processes)."""
        found: list[psutil.Process] = []
        for p in self.processes:
            with contextlib.suppress(psutil.Error):
                parent = psutil.Process(p.pid)
                found += [parent, *parent.children(recursive=True)]
        return found

    def rss_mb(self) -> float:
        total = 0
        for process in self._tree():
            with contextlib.suppress(psutil.Error):
                total += process.memory_info().rss
        return total / 2**20

    def cpu_seconds(self) -> float:
        total = 0.0
        for process in self._tree():
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                total += times.user + times.system
        return total

    async def heap_snapshot(self) -> tracemalloc.Snapshot:
        """A ``tracemalloc`` snapshot of the (one) server process (``--tracemalloc``)."""
        process = self.processes[0]
        self.snapshots_taken = getattr(self, "snapshots_taken", 0) + 1
        path = self.workdir / f"heap-0-{self.snapshots_taken}"
        os.kill(process.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 120
        while not path.with_suffix(".done").exists():
            if time.monotonic() > deadline:
                raise TimeoutError("the server wrote no heap snapshot")
            await asyncio.sleep(0.2)
        snapshot = tracemalloc.Snapshot.load(str(path.with_suffix(".snapshot")))
        return snapshot.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])

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


CLIENT_FRAME_GAP = 0.010  # the product's browser client: each frame starts ~10 ms after the previous ends


async def one_open_loop_call(
    url: str, *, turns: int, think: float, results: dict, start_delay: float
) -> None:
    """The issue's open-loop caller: the next turn goes ``think`` s (±20 %) after the previous
    one was sent, but never before that reply's first audio arrived, so a turn often
    interrupts the previous reply (a barge-in). Every audio frame's arrival is kept for the
    playback model (``playback_gaps``)."""
    await asyncio.sleep(start_delay)
    try:
        async with CallClient(url, open_timeout=60) as call:
            replies: dict[str, dict] = {}  # utteranceId -> the turn it answers
            waiting: list[dict] = []  # turns sent whose response.start has not come yet
            last: dict | None = None

            async def pump(until: float | None, turn: dict | None = None) -> None:
                """Read events until ``until`` has passed and ``turn``'s first audio came, or
                (``until`` None) until the last turn's reply ended."""
                while True:
                    now = time.time()
                    if (
                        until is not None
                        and now >= until
                        and (turn is None or turn["first_audio"] or turn["done"])
                    ):
                        return
                    long_wait = until is None or now >= until
                    try:
                        event = await call.next_event(timeout=120.0 if long_wait else until - now)
                    except TimeoutError:
                        if long_wait:
                            raise
                        continue
                    kind, payload = event.event_type, event.payload
                    if kind == "voicechat.response.start" and waiting:
                        replies[payload["utteranceId"]] = waiting.pop(0)
                    answered = replies.get(payload.get("utteranceId", ""))
                    if answered is None:
                        if kind.endswith("error"):
                            results["errors"].append(payload.get("message"))
                        continue
                    if kind == "voicechat.response.text" and answered["first_text"] is None:
                        answered["first_text"] = event.received_wall
                    elif kind == "voicechat.response.chunk":
                        if answered["first_audio"] is None:
                            answered["first_audio"] = event.received_wall
                        seconds = len(payload["audio"]) / (2 * payload["sampleRate"])
                        answered["frames"].append((event.received_wall, seconds))
                    elif kind == "voicechat.response.complete":
                        answered["server"] = payload.get("metrics") or {}
                        answered["done"] = True
                        if answered is last and until is None:
                            return
                    elif kind == "voicechat.response.stop":
                        answered["stopped"] = True
                        answered["done"] = True
                        if answered is last and until is None:
                            return
                    elif kind.endswith("error"):
                        results["errors"].append(payload.get("message"))

            for number in range(turns):
                tag = uuid.uuid4().hex[:12]
                turn = {
                    "tag": tag, "number": number, "sent": time.time(), "first_text": None,
                    "first_audio": None, "frames": [], "server": {}, "done": False, "stopped": False,
                }  # fmt: skip
                waiting.append(turn)
                last = turn
                results["turns"].append(turn)
                await call.send("voicechat.text.input", {"text": f"Tell me about Vantum [bench:{tag}]"})
                if number < turns - 1:
                    next_at = turn["sent"] + think * random.uniform(0.8, 1.2)
                    await pump(next_at, turn)
            if last is not None and not last["done"]:
                await pump(None)
        results["calls"] += 1
    except Exception as error:  # counted and reported, never hidden
        results["errors"].append(f"{type(error).__name__}: {error}")


def playback_gaps(turns: list[dict], frame_gap: float = CLIENT_FRAME_GAP) -> dict:
    """Replay each reply's frames in the product client's model (a frame starts when it has
    arrived and the previous one has ended, plus ``frame_gap``): the silence a caller hears
    inside replies, and underruns (a frame that arrived after the previous one ended)."""
    silences: list[float] = []  # ms of silence between consecutive frames
    underruns: list[float] = []  # ms a frame came late (beyond the playing audio)
    stretch: list[float] = []  # % longer than the audio itself
    for turn in turns:
        frames = turn.get("frames") or []
        if len(frames) < 2 or turn.get("stopped"):
            continue
        end = frames[0][0] + frames[0][1]
        audio = frames[0][1]
        for arrived, seconds in frames[1:]:
            start = max(arrived, end + frame_gap)
            silences.append((start - end) * 1000)
            if arrived > end:
                underruns.append((arrived - end) * 1000)
            end = start + seconds
            audio += seconds
        stretch.append(100 * ((end - frames[0][0]) / audio - 1))
    return {
        "silence_ms": stats(silences),
        "underrun_ms": stats(underruns),
        "underruns": len(underruns),
        "frames": len(silences) + len([t for t in turns if t.get("frames")]),
        "reply_stretch_percent": stats(stretch),
    }


async def drive(
    urls: list[str], *, calls: int, turns: int, think: float, ramp: float, open_loop: bool = False
) -> dict:
    results: dict = {"calls": 0, "turns": [], "errors": []}
    caller = one_open_loop_call if open_loop else one_call
    await asyncio.gather(
        *(
            caller(
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
    DOC.write_text(append_to_section(text, "## Harness runs", line))


def append_to_section(text: str, heading: str, line: str) -> str:
    """``text`` with ``line`` added at the end of the section ``heading`` (sections after it,
    written by hand, stay where they are)."""
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    if end == -1:
        return text.rstrip("\n") + "\n" + line
    return text[:end].rstrip("\n") + "\n" + line + "\n" + text[end + 1 :]


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
            servers.urls(),
            calls=args.calls,
            turns=args.turns,
            think=args.think,
            ramp=args.ramp,
            open_loop=args.open_loop,
        )
        sampler.cancel()
        elapsed = time.monotonic() - started
        cpu = servers.cpu_seconds() - cpu_before
        summary = summarize(results, servers.marker_times())
        summary["server_cpu_percent"] = round(100 * cpu / elapsed, 1)
        summary["server_cpu_ms_per_turn"] = round(1000 * cpu / max(1, summary["turns"]), 2)
        summary["server_rss_mb"] = round(max(rss_samples), 1) if rss_samples else None
        summary["turns_per_second"] = round(summary["turns"] / elapsed, 1)
        summary["playback"] = playback_gaps(results["turns"])
        summary["load_average"] = os.getloadavg()
    return summary


async def run_memory(args: argparse.Namespace) -> dict:
    """RSS per idle call (``--connections`` calls connected, nothing said), then per talking
    call (``--talking`` of them each type one turn; RSS sampled while the replies play).
    ``--tracemalloc``: the server's Python heap growth too, per call, by allocating site."""
    with Servers(args) as servers:
        await asyncio.sleep(2)
        heaps = {"base": await servers.heap_snapshot()} if args.tracemalloc else {}
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
        if args.tracemalloc:
            heaps["idle"] = await servers.heap_snapshot()
        talking = await talk(servers, clients[: args.talking], heaps) if args.talking else {}
        for client in clients:
            await client.close()
        await asyncio.sleep(3)
        after = servers.rss_mb()
    summary = {
        "connections": args.connections,
        "rss_idle_mb": round(base, 1),
        "rss_connected_mb": round(loaded, 1),
        "rss_after_close_mb": round(after, 1),
        "kb_per_idle_call": round((loaded - base) * 1024 / args.connections, 1),
    }
    if talking:
        peak = talking.pop("rss_peak_mb")
        summary.update(
            talking_calls=args.talking,
            rss_talking_peak_mb=round(peak, 1),
            kb_per_talking_call_over_idle=round((peak - loaded) * 1024 / args.talking, 1),
            **talking,
        )
    if heaps:
        summary["heap_kb_per_idle_call"] = heap_growth(heaps["base"], heaps["idle"], args.connections)
        if "talking" in heaps:
            summary["heap_kb_per_talking_call_over_idle"] = heap_growth(
                heaps["idle"], heaps["talking"], args.talking
            )
        print_heap_growth(summary)
    summary["load_average"] = os.getloadavg()
    return summary


async def talk(servers: Servers, clients: list[CallClient], heaps: dict) -> dict:
    """Each client types one turn at once; RSS is sampled every 0.2 s until every reply is
    complete (the heap snapshot, if any, once every reply's first audio has arrived)."""
    for client in clients:
        while not client.events.empty():
            client.events.get_nowait()
    started = time.monotonic()
    await asyncio.gather(*(c.send("voicechat.text.input", {"text": "Tell me about Vantum"}) for c in clients))
    first_audio = [asyncio.Event() for _ in clients]
    errors: list[str] = []

    async def follow(client: CallClient, heard: asyncio.Event) -> None:
        while True:
            event = await client.next_event(timeout=120)
            if event.event_type == "voicechat.response.chunk":
                heard.set()
            elif event.event_type == "voicechat.response.complete":
                heard.set()
                return
            elif event.event_type.endswith("error"):
                errors.append(str(event.payload.get("message")))

    followers = asyncio.gather(*(follow(c, e) for c, e in zip(clients, first_audio, strict=True)))
    samples: list[float] = []

    async def sample() -> None:
        while True:
            samples.append(servers.rss_mb())
            await asyncio.sleep(0.2)

    sampler = asyncio.create_task(sample())
    await asyncio.gather(*(e.wait() for e in first_audio))
    if heaps:
        await asyncio.sleep(1)
        heaps["talking"] = await servers.heap_snapshot()
    await followers
    sampler.cancel()
    return {
        "rss_peak_mb": max(samples),
        "talk_seconds": round(time.monotonic() - started, 1),
        "talk_errors": len(errors),
    }


def heap_growth(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, calls: int) -> dict:
    """Python heap growth per call between two snapshots: in total, by the innermost project
    line that allocated (the cause, ``<file>:<line> <source>``), and by allocating line."""

    def sizes(snapshot: tracemalloc.Snapshot) -> tuple[dict[str, int], dict[str, int]]:
        cause: dict[str, int] = {}
        site: dict[str, int] = {}
        for stat in snapshot.statistics("traceback"):  # grouped in C: far fewer than traces
            frames = list(stat.traceback)  # oldest first
            inner = frames[-1]
            key = f"{_short(inner.filename)}:{inner.lineno}"
            site[key] = site.get(key, 0) + stat.size
            ours = next((f for f in reversed(frames) if _is_project(f.filename)), inner)
            source = linecache.getline(ours.filename, ours.lineno).strip()[:70]
            key = f"{_short(ours.filename)}:{ours.lineno} {source}"
            cause[key] = cause.get(key, 0) + stat.size
        return cause, site

    (cause_a, site_a), (cause_b, site_b) = sizes(before), sizes(after)

    def top(a: dict[str, int], b: dict[str, int], n: int = 25) -> list[list]:
        diff = {k: b.get(k, 0) - a.get(k, 0) for k in a.keys() | b.keys()}
        ranked = sorted(diff.items(), key=lambda kv: -kv[1])[:n]
        return [[key, round(size / calls / 1024, 2)] for key, size in ranked if size > 0]

    total = sum(t.size for t in after.traces) - sum(t.size for t in before.traces)
    return {
        "total": round(total / calls / 1024, 2),
        "by_project_line": top(cause_a, cause_b),
        "by_allocating_line": top(site_a, site_b),
    }


@functools.cache
def _is_project(filename: str) -> bool:
    path = Path(filename)
    return ROOT in path.parents and ".venv" not in path.parts and "bench" not in path.parts


@functools.cache
def _short(filename: str) -> str:
    path = Path(filename)
    if ROOT in path.parents and ".venv" not in path.parts:
        return str(path.relative_to(ROOT))
    parts = path.parts
    return "/".join(parts[parts.index("site-packages") + 1 :]) if "site-packages" in parts else path.name


def print_heap_growth(summary: dict) -> None:
    for name in ("heap_kb_per_idle_call", "heap_kb_per_talking_call_over_idle"):
        growth = summary.get(name)
        if not growth:
            continue
        print(f"\n{name}: {growth['total']} KB")
        for title in ("by_project_line", "by_allocating_line"):
            print(f"  {title}:")
            for key, kb in growth[title]:
                print(f"    {kb:8.2f} KB  {key}")


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
    """Per token, same run, same fake body: the bare SDK's objects, the SDK's raw lines with
    ``json`` (a floor), our adapter alone (SDK request + ``llm.sse`` + ``orjson``), and our
    whole path (adapter, streaming turn, chunker). CPU time of this process (the fake
    server included, measured alone as ``fake_server_only``), so other processes' load on
    the machine does not count."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vantum.settings")
    import openai

    from bench.bench_chunker import build_reply
    from llm.config import LLMConfig, ModelParams
    from llm.fake_openai import FakeOpenAI, FakeReply
    from llm.metrics import LLMServiceMetrics
    from llm.openai_adapter import OpenAIChatProvider
    from llm.session import Conversation
    from llm.turn import ReplyChunk

    tokens = build_reply(args.tokens)
    messages = [{"role": "user", "content": "x"}]

    class NullSink:
        async def speak(self, chunk: ReplyChunk) -> None:
            chunk.audio_sent = True

    def fake_client() -> openai.AsyncOpenAI:
        fake = FakeOpenAI(default=FakeReply(tokens=tokens), keep_log=False)
        return openai.AsyncOpenAI(api_key="k", http_client=fake.http_client(), max_retries=0)

    async def bare_sdk() -> float:
        client = fake_client()
        started = time.process_time()
        stream = await client.chat.completions.create(model="m", messages=messages, stream=True)
        async for _chunk in stream:
            pass
        return time.process_time() - started

    async def lines_json() -> float:
        client = fake_client()
        started = time.process_time()
        async with client.chat.completions.with_streaming_response.create(
            model="m", messages=messages, stream=True
        ) as response:
            async for line in response.iter_lines():
                if line.startswith("data: {"):
                    json.loads(line[6:])
        return time.process_time() - started

    async def adapter() -> float:
        fake = FakeOpenAI(default=FakeReply(tokens=tokens), keep_log=False)
        provider = OpenAIChatProvider(api_key="k", http_client=fake.http_client())
        started = time.process_time()
        async for _delta in provider.stream_chat(messages=messages, params=ModelParams(), call_id="b"):
            pass
        return time.process_time() - started

    async def whole() -> float:
        fake = FakeOpenAI(default=FakeReply(tokens=tokens), keep_log=False)
        provider = OpenAIChatProvider(api_key="k", http_client=fake.http_client())
        conversation = Conversation(
            call_id="bench", provider=provider, config=LLMConfig(), metrics=LLMServiceMetrics()
        )
        started = time.process_time()
        await conversation.respond("x", sink=NullSink())
        return time.process_time() - started

    async def fake_only() -> float:
        # What the fake server itself costs per token (generating and handing over the body).
        fake = FakeOpenAI(default=FakeReply(tokens=tokens), keep_log=False)
        client = fake.http_client()
        body = {"model": "m", "messages": messages, "stream": True}
        started = time.process_time()
        async with client.stream("POST", "/chat/completions", json=body) as response:
            async for _part in response.aiter_raw():
                pass
        return time.process_time() - started

    paths = {
        "bare_sdk": bare_sdk,
        "sdk_lines_json": lines_json,
        "our_adapter": adapter,
        "our_whole_path": whole,
        "fake_server_only": fake_only,
    }
    runs: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(7):  # interleaved, so load from other processes hits every path alike
        for name, path in paths.items():
            runs[name].append(await path())
    per_token = {name: statistics.median(r) / len(tokens) * 1e6 for name, r in runs.items()}
    bare_us, our_us = per_token["bare_sdk"], per_token["our_whole_path"]
    print("| path (same run, median of 7) | µs of CPU per token |")
    print("|---|---|")
    for name, value in per_token.items():
        print(f"| {name} | {value:.2f} |")

    # Per request: a 2-token reply to a 12-message conversation, the SDK's create() (its
    # type-driven transformation of every message) against our plain-JSON post.
    history = [{"role": "system", "content": "You are a helpful sales agent. " * 20}] + [
        {"role": "user" if n % 2 == 0 else "assistant", "content": "Tell me about Vantum please. " * 3}
        for n in range(11)
    ]
    short = FakeOpenAI(default=FakeReply(tokens=["Hi", "."]), keep_log=False)
    short_client = openai.AsyncOpenAI(api_key="k", http_client=short.http_client(), max_retries=0)
    short_provider = OpenAIChatProvider(api_key="k", http_client=short.http_client())

    async def sdk_create() -> None:
        async with short_client.chat.completions.with_streaming_response.create(
            model="m", messages=history, stream=True, stream_options={"include_usage": True}
        ) as response:
            async for _ in response.iter_bytes():
                pass

    async def our_post() -> None:
        async for _ in short_provider.stream_chat(messages=history, params=ModelParams(), call_id="b"):
            pass

    per_request: dict[str, list[float]] = {"sdk_create": [], "our_post": []}
    for _ in range(5):
        for name, request in (("sdk_create", sdk_create), ("our_post", our_post)):
            started = time.process_time()
            for _ in range(100):
                await request()
            per_request[name].append((time.process_time() - started) * 10)  # ms per request
    request_ms = {name: statistics.median(values) for name, values in per_request.items()}
    for name, value in request_ms.items():
        print(f"| request: {name} | {value:.2f} ms (CPU) |")
    return {
        "tokens": len(tokens),
        **{f"{name}_us_per_token": round(value, 2) for name, value in per_token.items()},
        "ours_us_per_token": round(our_us, 2),
        "bare_sdk_over_ours": round(bare_us / our_us, 1),
        **{f"request_{name}_cpu_ms": round(value, 2) for name, value in request_ms.items()},
        "load_average": os.getloadavg(),
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
        p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes sharing one port")
        p.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto")
        p.add_argument("--http", choices=["auto", "h11", "httptools"], default="auto")
        p.add_argument("--ws", choices=["auto", "websockets", "websockets-sansio", "wsproto"], default="auto")
        p.add_argument("--open-loop", action="store_true", help="the issue's open-loop callers (barge-ins)")
        p.add_argument("--redis", action="store_true")
        p.add_argument("--database-url", default="")
        p.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL (SQLite otherwise)")
        p.add_argument("--root", default="", help="serve another checkout's code (before/after comparisons)")
        p.add_argument("--profile", default="", help="pyinstrument text profile of the server, to this file")
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
        p.add_argument("--talking", type=int, default=0, help="memory: calls that then each type one turn")
        p.add_argument("--tracemalloc", action="store_true", help="memory: the server's heap growth per call")
        p.add_argument("--ws-deflate", action="store_true", help="uvicorn: permessage-deflate on")
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
