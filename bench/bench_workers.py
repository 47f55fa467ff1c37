"""Do N uvicorn workers scale? The tone-engine capacity load (the same open-loop callers as
``harness.py capacity --open-loop``) against the production-like server with 1 and 2 workers,
at rising call counts, pinned to 2 cores.

    .venv/bin/python bench/bench_workers.py                       # N = 1, 2; 50, 150, 200, 250, ... calls
    .venv/bin/python bench/bench_workers.py --workers 2 --calls 50,400,600 --sqlite
    .venv/bin/python bench/bench_workers.py --quick               # a smoke run (20 and 40 calls)

Server side: ``uvicorn --workers N --loop uvloop --http httptools`` (``bench/serve.py``: the
project's ASGI application, the HTTP-level fake model at 300 ms to the first token and 50
tokens/s, the tone engine), ``DJANGO_DEBUG=false``, ``REDIS_URL`` to a redis-server it starts
on loopback (also for N = 1, so both rows pay the same channel layer), PostgreSQL (or SQLite
with ``--sqlite``). The workers, redis-server and PostgreSQL run with ``taskset -c
<--server-cpus>`` (default ``0,1``); the load generator (this process) runs on the remaining
cores. When the machine has no other core (a 2-core machine), the load generator shares the
server's cores at a higher priority (``--client-nice``, default 5 below the server side), so
the clients read their events as promptly as they would on a core of their own and the
server gets what the clients leave: the load generator's CPU is reported next to every row.
On a machine shared with other work, the server side runs at ``--server-nice`` (default -5
when allowed, i.e. as root) so that it gets the cores as it would on a machine of its own
rather than its fair share next to the neighbours; what the other processes still used is
reported per row ("other processes"). As a user who may not raise priorities, the server
side runs at nice 5 and the load generator at 0.

With N > 1, ``--balance`` chooses how connections reach the workers: ``shared`` is uvicorn's
``--workers`` (one listening socket shared by the worker processes; whichever wakes first
accepts), ``reuseport`` is N single-process uvicorn servers each with its own
``SO_REUSEPORT`` socket on the port (the kernel spreads connections by a hash of the
client's address); both by default.

Load model (the issue's): each call types its next turn ~``--think`` s (±20 %) after its
previous one, never before that reply's first audio arrived (most turns interrupt the
previous reply); ``--turns`` turns per call; calls connect over max(5 s, calls/40 s).

The series (1 worker, 2 workers per balance) run interleaved, count by count, so a shared
machine's changing load hits them alike. For each the counts rise until a run has errors or
its first audio p95 exceeds ``--p95-factor`` (1.5) × the run's 50-call (first count) figure
(the best series' p95 at that count); the largest count meeting both is N's capacity.
Reported per run: errors, first audio p50/p95, server CPU per turn
(uvicorn processes; redis-server and PostgreSQL separately), how the calls and the CPU split
over the workers (established connections per worker at the peak), Redis commands per turn,
the load generator's CPU, ``uptime`` load. Prints the table, writes
``bench/results/workers-<time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import drive, playback_gaps, stats, summarize  # noqa: E402
from tests.servers import free_port, run_postgres, run_redis, wait_for_port  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def parse_cpus(spec: str) -> set[int]:
    cpus: set[int] = set()
    for part in spec.split(","):
        if "-" in part:
            low, high = part.split("-")
            cpus.update(range(int(low), int(high) + 1))
        elif part.strip():
            cpus.add(int(part))
    return cpus


def cpu_seconds(process: psutil.Process, *, with_reaped: bool = False) -> float:
    """CPU time of a process (and, ``with_reaped``, of its children already waited for:
    PostgreSQL backends that have exited)."""
    with contextlib.suppress(psutil.Error):
        t = process.cpu_times()
        return t.user + t.system + ((t.children_user + t.children_system) if with_reaped else 0.0)
    return 0.0


class ServerSide:
    """redis-server and the database, started once and pinned; uvicorn started per run."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.cpus = parse_cpus(args.server_cpus)
        self.stack = contextlib.ExitStack()
        self.workdir = Path(tempfile.mkdtemp(prefix="vantum-workers-"))
        self.redis_url = ""
        self.database_url = ""
        self.redis_process: psutil.Process | None = None
        self.postgres_process: psutil.Process | None = None

    def _pin(self, process: psutil.Process) -> None:
        """Pin a helper server (and its children: PostgreSQL forks backends from the
        postmaster, so they inherit it) to the server's cores at the server's priority."""
        for p in [process, *process.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                p.cpu_affinity(sorted(self.cpus))
                p.nice(self.args.server_nice)

    def _new_child(self, before: set[int], name: str) -> psutil.Process:
        for child in psutil.Process().children(recursive=True):
            if child.pid not in before and name in child.name():
                return child
        raise RuntimeError(f"{name} did not start")

    def __enter__(self) -> ServerSide:
        before = {p.pid for p in psutil.Process().children(recursive=True)}
        self.redis_url = self.stack.enter_context(run_redis())
        self.redis_process = self._new_child(before, "redis")
        self._pin(self.redis_process)
        if self.args.sqlite:
            self.database_url = f"sqlite:///{self.workdir / 'bench.sqlite3'}"
        else:
            before = {p.pid for p in psutil.Process().children(recursive=True)}
            self.database_url = self.stack.enter_context(run_postgres())
            self.postgres_process = self._new_child(before, "postgres")
            self._pin(self.postgres_process)
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"],
            cwd=ROOT,
            env=self.env(),
            check=True,
            capture_output=True,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "vantum.settings",
            "LOG_LEVEL": "ERROR",
            "DJANGO_DEBUG": "false",
            "DJANGO_SECRET_KEY": "bench-only-secret-key-" + "x7Qp2Lm9Zr4Tv8Nw1Ks6Hd3Jf5Gb0Yc",
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            # Limits are per process: each worker would refuse beyond its own share. Lifted,
            # as the 1-process capacity bench does (every bench caller is 127.0.0.1).
            "VANTUM_MAX_CALLS": "100000",
            "VANTUM_MAX_EVENTS_PER_SECOND": "1000",
            "VANTUM_MAX_CALLS_PER_ADDRESS": "0",
            "VANTUM_MAX_TURNS_PER_MINUTE": "0",
        }

    def helper_cpu(self) -> dict[str, float]:
        out = {"redis": cpu_seconds(self.redis_process) if self.redis_process else 0.0}
        if self.postgres_process is not None:
            total = cpu_seconds(self.postgres_process, with_reaped=True)
            with contextlib.suppress(psutil.Error):
                total += sum(cpu_seconds(c) for c in self.postgres_process.children(recursive=True))
            out["postgres"] = total
        return out

    def redis_commands(self) -> dict[str, int]:
        client = redis.Redis.from_url(self.redis_url)
        try:
            stats = client.info("commandstats")
        finally:
            client.close()
        return {name.removeprefix("cmdstat_"): row["calls"] for name, row in stats.items()}


class Uvicorn:
    """``bench/serve.py --server uvicorn --workers N`` pinned to the server's cores."""

    def __init__(self, side: ServerSide, workers: int, balance: str) -> None:
        self.side = side
        self.workers = workers
        self.balance = balance
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Uvicorn:
        args = self.side.args
        command = [
            "taskset", "-c", args.server_cpus,
            sys.executable, "bench/serve.py", "--port", str(self.port), "--server", "uvicorn",
            "--workers", str(self.workers), "--loop", "uvloop", "--http", "httptools",
            "--ttft", str(args.ttft), "--tps", str(args.tps), "--engine", "tone",
        ]  # fmt: skip
        if self.balance == "reuseport" and self.workers > 1:
            command.append("--reuse-port")
        if args.push_paced:
            command.append("--push-paced")
        log = open(self.side.workdir / f"uvicorn-{self.port}.log", "wb")
        env = self.side.env()
        if self.balance == "in-memory":  # one process without Redis: what the channel layer costs
            env["REDIS_URL"] = ""
        nice = args.server_nice  # absolute: not the load generator's own (inherited) priority
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: os.setpriority(os.PRIO_PROCESS, 0, nice),
        )
        wait_for_port(self.port, process=self.process, timeout=120)
        # The port answers once the first worker listens; the others may still be importing
        # Django. Wait until all are there and the server side is idle (its CPU time stops
        # growing), so no start-up work is counted as the calls' CPU.
        deadline = time.monotonic() + 90
        previous = -1.0
        while time.monotonic() < deadline:
            time.sleep(1.0)
            used = self.cpu_total()
            if len(self.worker_processes()) >= self.workers and used - previous < 0.03:
                break
            previous = used
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        self.process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(20)
        if self.process.poll() is None:
            self.process.kill()

    def tree(self) -> list[psutil.Process]:
        assert self.process is not None
        with contextlib.suppress(psutil.Error):
            parent = psutil.Process(self.process.pid)
            return [parent, *parent.children(recursive=True)]
        return []

    def worker_processes(self) -> list[psutil.Process]:
        """The processes that serve connections: uvicorn's workers (children of the
        supervisor that are Python), or the one process itself when N = 1."""
        tree = self.tree()
        if self.workers == 1:
            return [p for p in tree if _is_python(p)][:1]
        return [p for p in tree[1:] if _is_python(p) and "resource_tracker" not in " ".join(_cmdline(p))]

    def connections_per_worker(self) -> dict[int, int]:
        out = {}
        for p in self.worker_processes():
            with contextlib.suppress(psutil.Error):
                out[p.pid] = sum(
                    1
                    for c in p.net_connections(kind="tcp")
                    if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == self.port
                )
        return out

    def cpu_per_worker(self) -> dict[int, float]:
        return {p.pid: cpu_seconds(p) for p in self.worker_processes()}

    def cpu_total(self) -> float:
        return sum(cpu_seconds(p) for p in self.tree())


def _is_python(process: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        return "python" in process.name()
    return False


def _cmdline(process: psutil.Process) -> list[str]:
    with contextlib.suppress(psutil.Error):
        return process.cmdline()
    return []


async def run_one(
    side: ServerSide, *, workers: int, balance: str, calls: int, args: argparse.Namespace
) -> dict:
    with Uvicorn(side, workers, balance) as server:
        me = psutil.Process()
        ramp = max(5.0, calls / 40)
        helper_before, redis_before = side.helper_cpu(), side.redis_commands()
        worker_cpu_before = server.cpu_per_worker()
        cpu_before, client_before, started = server.cpu_total(), cpu_seconds(me), time.monotonic()
        machine_before = psutil.cpu_times()
        peak: dict[int, int] = {}
        load_samples: list[float] = []

        async def sample() -> None:
            nonlocal peak
            while True:
                await asyncio.sleep(2)
                counts = server.connections_per_worker()
                if sum(counts.values()) > sum(peak.values()):
                    peak = counts
                load_samples.append(os.getloadavg()[0])

        lags: list[float] = []

        async def loop_lag() -> None:
            # The load generator's own delay: how late a 50 ms timer fires. Large values mean
            # the clients, not the server, add to the measured first audio.
            while True:
                due = time.perf_counter() + 0.05
                await asyncio.sleep(0.05)
                lags.append((time.perf_counter() - due) * 1000)

        sampler = asyncio.create_task(sample())
        lagger = asyncio.create_task(loop_lag())
        results = await drive(
            [f"ws://127.0.0.1:{server.port}/ws"],
            calls=calls,
            turns=args.turns,
            think=args.think,
            ramp=ramp,
            open_loop=True,
        )
        sampler.cancel()
        lagger.cancel()
        elapsed = time.monotonic() - started
        cpu = server.cpu_total() - cpu_before
        client_cpu = cpu_seconds(me) - client_before
        machine_after = psutil.cpu_times()
        helper_after, redis_after = side.helper_cpu(), side.redis_commands()
        worker_cpu = {
            pid: round(value - worker_cpu_before.get(pid, 0.0), 2)
            for pid, value in server.cpu_per_worker().items()
        }
    summary = summarize(results, {})
    turns = max(1, summary["turns"])
    # The whole machine's busy time: what the server side and the load generator left to
    # other processes (on a shared machine, what the server could not get).
    busy = (sum(machine_after) - machine_after.idle - machine_after.iowait) - (
        sum(machine_before) - machine_before.idle - machine_before.iowait
    )
    helpers = sum(helper_after.values()) - sum(helper_before.values())
    redis_calls = {k: redis_after.get(k, 0) - redis_before.get(k, 0) for k in redis_after}
    redis_calls = {k: v for k, v in sorted(redis_calls.items(), key=lambda kv: -kv[1]) if v > 0}
    frames = playback_gaps(results["turns"])["frames"]
    # Where first audio goes: by turn number (a call's first turn also connects), and the
    # server's own view (turns that completed: request received -> first token / first audio).
    by_turn = {}
    for number in range(args.turns):
        values = [
            (t["first_audio"] - t["sent"]) * 1000
            for t in results["turns"]
            if t.get("number") == number and t["first_audio"]
        ]
        by_turn[number + 1] = stats(values)
    server_view = {
        key: stats([t["server"][key] for t in results["turns"] if t["server"].get(key) is not None])
        for key in ("firstTokenMs", "firstChunkMs", "firstAudioMs")
    }
    return {
        "first_audio_ms_by_turn": by_turn,
        "server_measured_ms": server_view,
        "workers": workers,
        "balance": balance,
        "calls": calls,
        "calls_completed": summary["calls"],
        "turns": summary["turns"],
        "errors": summary["errors"],
        "error_samples": summary["error_samples"],
        "first_audio_ms": summary["first_audio_ms"],
        "first_text_ms": summary["first_chunk_ms"],
        "server_cpu_ms_per_turn": round(1000 * cpu / turns, 2),
        "server_cpu_cores": round(cpu / elapsed, 2),
        "redis_cpu_ms_per_turn": round(1000 * (helper_after["redis"] - helper_before["redis"]) / turns, 2),
        "postgres_cpu_ms_per_turn": (
            round(1000 * (helper_after["postgres"] - helper_before["postgres"]) / turns, 2)
            if "postgres" in helper_after
            else None
        ),
        "redis_commands_per_turn": round(sum(redis_calls.values()) / turns, 1),
        "redis_commands": redis_calls,
        "audio_frames": frames,
        "connections_per_worker_at_peak": sorted(peak.values(), reverse=True),
        "cpu_seconds_per_worker": sorted(worker_cpu.values(), reverse=True),
        "client_cpu_cores": round(client_cpu / elapsed, 2),
        "machine_busy_cores": round(busy / elapsed, 2),
        "load_generator_lag_ms": stats(lags),
        "other_processes_cores": round((busy - cpu - helpers - client_cpu) / elapsed, 2),
        "seconds": round(elapsed, 1),
        "turns_per_second": round(summary["turns"] / elapsed, 1),
        "load_average_max": max(load_samples, default=os.getloadavg()[0]),
        "load_average_end": os.getloadavg(),
    }


def judge(
    row: dict, reference: float | None, args: argparse.Namespace, cap: dict, alive: list, key: tuple
) -> None:
    """Mark ``row`` against the goal (0 errors, p95 ≤ factor × reference); a series that
    fails stops rising."""
    p95 = row["first_audio_ms"]["p95"]
    row["p95_ratio"] = round(p95 / reference, 2) if p95 and reference else None
    row["meets_goal"] = bool(row["errors"] == 0 and row["p95_ratio"] and row["p95_ratio"] <= args.p95_factor)
    if row["meets_goal"]:
        cap["largest_calls_meeting_goal"] = row["calls"]
    elif key in alive:
        alive.remove(key)


def split(values: list[float | int]) -> str:
    total = sum(values)
    if len(values) < 2 or not total:
        return "—"
    return " / ".join(f"{100 * v / total:.0f} %" for v in values)


def print_row(row: dict) -> None:
    fa = row["first_audio_ms"]
    print(
        f"| {row['workers']} {row['balance']} | {row['calls']} | {row['errors']} | {fa['p50']} / {fa['p95']} "
        f"| {row.get('p95_ratio', '—')} | {row['server_cpu_ms_per_turn']} | {row['redis_cpu_ms_per_turn']}"
        f" / {row['postgres_cpu_ms_per_turn']} | {row['server_cpu_cores']} | {row['client_cpu_cores']}"
        f" | {split(row['connections_per_worker_at_peak'])} | {split(row['cpu_seconds_per_worker'])}"
        f" | {row['redis_commands_per_turn']} | {row['turns_per_second']} | {row['other_processes_cores']}"
        f" | {row['load_generator_lag_ms']['p95']}"
        f" | {row['load_average_max']:.1f} |",
        flush=True,
    )


HEADER = (
    "| workers | calls | errors | first audio p50 / p95 (ms) | p95 ÷ 50-call p95 | server CPU per turn (ms)"
    " | redis / postgres CPU per turn (ms) | server cores used | load generator cores"
    " | calls per worker | CPU per worker | Redis commands per turn | turns/s | other processes (cores)"
    " | load generator lag p95 (ms) | load (1 min, max) |\n" + "|---" * 16 + "|"
)


async def main_async(args: argparse.Namespace) -> dict:
    counts = [int(c) for c in args.calls.split(",")]
    report: dict = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} x{os.cpu_count()}",
        "python": platform.python_version(),
        "args": vars(args),
        "load_before": os.getloadavg(),
        "runs": [],
        "capacity": {},
    }
    client_cpus = sorted(set(range(os.cpu_count() or 1)) - parse_cpus(args.server_cpus))
    if args.client_cpus:
        client_cpus = sorted(parse_cpus(args.client_cpus))
    if client_cpus:
        os.sched_setaffinity(0, client_cpus)
        report["layout"] = f"server cores {args.server_cpus}, load generator cores {client_cpus}"
    else:
        report["layout"] = (
            f"server cores {args.server_cpus}, load generator on the same cores (no other core;"
            f" load generator at nice {args.client_nice}, server side at nice {args.server_nice})"
        )
    print(report["layout"], "| uptime load", report["load_before"], flush=True)
    print(HEADER, flush=True)
    with ServerSide(args) as side:
        series = []
        for workers in [int(w) for w in args.workers.split(",")]:
            balances = args.balance.split(",") if workers > 1 else [""]
            series += [(workers, balance) for balance in balances]
        if args.in_memory:
            series.insert(0, (1, "in-memory"))
        # Interleaved: every count runs each series back to back, so a shared machine's
        # changing load hits 1 and 2 workers alike; a series stops at its first failing count.
        names = {(w, b): f"{w} {b}".strip() for w, b in series}
        capacity = {
            names[key]: {"largest_calls_meeting_goal": None, "reference_p95_ms": None} for key in series
        }
        alive = list(series)
        reference: float | None = None  # the run's 50-call (first count) p95: the best series'
        for number, calls in enumerate(counts):
            rows = []
            for workers, balance in list(alive):
                row = await run_one(side, workers=workers, balance=balance, calls=calls, args=args)
                rows.append(row)
                if number > 0:
                    judge(
                        row, reference, args, capacity[names[(workers, balance)]], alive, (workers, balance)
                    )
                    report["runs"].append(row)
                    print_row(row)
            if number == 0:
                # One reference for every series: the first count's best p95 in this run (a
                # neighbour's burst during one series' 50-call run must not loosen its goal).
                reference = min((r["first_audio_ms"]["p95"] or float("inf")) for r in rows)
                for row, key in zip(rows, list(alive), strict=True):
                    judge(row, reference, args, capacity[names[key]], alive, key)
                    report["runs"].append(row)
                    print_row(row)
            if not alive:
                break
        for cap in capacity.values():
            cap["reference_p95_ms"] = reference
        report["capacity"] = capacity
    report["load_after"] = os.getloadavg()
    print()
    for workers, cap in report["capacity"].items():
        print(
            f"{workers} worker(s): largest count with 0 errors and first audio p95 ≤ {args.p95_factor}× "
            f"the run's {counts[0]}-call p95 ({cap['reference_p95_ms']} ms): "
            f"{cap['largest_calls_meeting_goal']}"
        )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", default="1,2", help="worker counts to run, comma-separated")
    parser.add_argument("--calls", default="50,150,200,250,300,400,500,600", help="rising call counts")
    parser.add_argument("--server-cpus", default="0,1", help="taskset -c list for the server side")
    parser.add_argument("--client-cpus", default="", help="cores of the load generator (default: the rest)")
    parser.add_argument("--server-nice", type=int, default=None, help="server side priority")
    parser.add_argument("--client-nice", type=int, default=None, help="load generator priority")
    parser.add_argument("--balance", default="shared,reuseport", help="N > 1: shared and/or reuseport")
    parser.add_argument(
        "--in-memory", action="store_true", help="also 1 process on the in-memory channel layer (no Redis)"
    )
    parser.add_argument(
        "--push-paced",
        action="store_true",
        help="the fake model streams on its own clock, as a real one (bench/serve.py --push-paced)",
    )
    parser.add_argument("--sqlite", action="store_true", help="SQLite instead of a throwaway PostgreSQL")
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--think", type=float, default=5.0)
    parser.add_argument("--ttft", type=float, default=0.3)
    parser.add_argument("--tps", type=float, default=50.0)
    parser.add_argument("--p95-factor", type=float, default=1.5)
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 and 40 calls, 2 turns")
    args = parser.parse_args()
    if args.quick:
        args.calls, args.turns = "20,40", 2
    shared = not (set(range(os.cpu_count() or 1)) - parse_cpus(args.server_cpus)) and not args.client_cpus
    if args.server_nice is None:
        args.server_nice = -5 if os.geteuid() == 0 else 0
    if args.client_nice is None:
        args.client_nice = args.server_nice - 5 if shared else 0
    try:
        os.setpriority(os.PRIO_PROCESS, 0, args.client_nice)
    except PermissionError:
        args.server_nice, args.client_nice = 5, 0
    try:
        import uvloop

        report = uvloop.run(main_async(args))
    except ImportError:
        report = asyncio.run(main_async(args))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"workers-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nuptime load before {report['load_before']}, after {report['load_after']}; wrote {path}")


if __name__ == "__main__":
    main()
