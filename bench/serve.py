"""A server process for the benchmarks: the real ASGI application on daphne or uvicorn,
with the HTTP-level fake model at chosen timing and a chosen speech engine.

    python bench/serve.py --port 8801 --server daphne --ttft 0.3 --tps 50 --engine tone
    python bench/serve.py --port 8801 --server uvicorn --workers 2   # one process per core (needs REDIS_URL)
    python bench/serve.py --port 8801 --server uvicorn --workers 2 --reuse-port

``--workers N`` is uvicorn's: one listening socket, opened by its supervisor and shared by
the N worker processes, each accepting from it. ``--reuse-port`` instead starts N uvicorn
processes that each open their own socket on the port with ``SO_REUSEPORT``, so the kernel
spreads new connections over them by hashing the client's address and port
(``bench/bench_workers.py`` measures the split both ways).

Every turn's user text carries a tag ``[bench:<id>]``; when the fake emits the token that
completes the reply's first marker it appends ``{"tag", "marker_wall"}`` to ``--marks``,
so the client can compute server-added latency. ``--buffered`` is the spec's design as a
baseline: nothing is spoken until the whole completion has arrived.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TAG = re.compile(r"\[bench:([\w-]+)\]")
REPLY = (
    "Thanks for asking, I'm glad you did. ||BREAK|| Vantum books qualified meetings straight into your "
    "calendar, so your reps spend their time closing instead of prospecting. ||BREAK|| Most teams see "
    "results in the first month, and setup takes about a day. ||BREAK|| "
    "Would a short demo next week be useful?"
)


WS_CHOICES = ["auto", "websockets", "websockets-sansio", "wsproto"]
CONFIG_VARIABLE = "VANTUM_BENCH_SERVE"  # the options, as JSON, for each uvicorn worker process


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--server", choices=["daphne", "uvicorn"], default="daphne")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes on one port")
    parser.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto", help="uvicorn only")
    parser.add_argument("--http", choices=["auto", "h11", "httptools"], default="auto", help="uvicorn only")
    parser.add_argument("--ws", choices=WS_CHOICES, default="auto", help="uvicorn only: WebSocket library")
    parser.add_argument("--ttft", type=float, default=0.3, help="seconds to the first token")
    parser.add_argument("--tps", type=float, default=50.0, help="tokens per second after the first")
    parser.add_argument("--engine", default="tone")
    parser.add_argument("--marks", default="", help="JSONL file for marker emission times")
    parser.add_argument("--buffered", action="store_true", help="the spec's buffered design (baseline)")
    parser.add_argument("--profile", default="", help="write a pyinstrument profile here (one process)")
    parser.add_argument(
        "--ws-deflate", action="store_true", help="uvicorn: permessage-deflate on (its default)"
    )
    parser.add_argument(
        "--tracemalloc",
        default="",
        help="trace allocations; each SIGUSR1 dumps a snapshot to <this>-<n>.snapshot (one process)",
    )
    parser.add_argument(
        "--push-paced",
        action="store_true",
        help="the fake model streams on its own clock (as a real one does), not when the server pulls",
    )
    parser.add_argument(
        "--reuse-port", action="store_true", help="uvicorn: N processes, each its own SO_REUSEPORT socket"
    )
    args = parser.parse_args()
    if args.workers > 1 and args.server != "uvicorn":
        parser.error("--workers needs --server uvicorn")
    os.environ[CONFIG_VARIABLE] = json.dumps(vars(args))
    if args.tracemalloc:
        trace_allocations(args.tracemalloc)

    profiler = None
    if args.profile:
        from pyinstrument import Profiler

        # uvicorn re-raises SIGTERM after its graceful shutdown: exit through Python so the
        # profile below gets written.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        profiler = Profiler(interval=0.001, async_mode="disabled")
        profiler.start()
    try:
        serve(args)
    finally:
        if profiler is not None:
            profiler.stop()
            Path(args.profile).write_text(
                profiler.output_text(unicode=True, color=False, show_all=False, timeline=False)
            )


def trace_allocations(prefix: str) -> None:
    """Each SIGUSR1 writes a ``tracemalloc`` snapshot ``<prefix>-<n>.snapshot``
    (``tracemalloc.Snapshot.load``), then ``<prefix>-<n>.done``. Tracing (25 frames deep)
    starts at the first signal: a slow start-up under tracing could miss the harness's
    timeout, and growth between two snapshots is all a benchmark compares."""
    import tracemalloc

    taken = [0]

    def dump(*_: object) -> None:
        if not tracemalloc.is_tracing():
            tracemalloc.start(25)
        taken[0] += 1
        path = f"{prefix}-{taken[0]}"
        tracemalloc.take_snapshot().dump(path + ".snapshot")
        Path(path + ".done").touch()

    signal.signal(signal.SIGUSR1, dump)


def serve(args: argparse.Namespace) -> None:
    if args.server == "uvicorn":
        import uvicorn

        if args.reuse_port and args.workers > 1:
            serve_reuse_port_group(args)
            return
        # An import string and a factory: each worker process builds its own application
        # (and its own fake model) from the options in the environment.
        options = {
            "factory": True,
            "host": "127.0.0.1",
            "port": args.port,
            "loop": args.loop,
            "http": args.http,
            "ws": args.ws,
            "log_level": "warning",
            "ws_max_size": 4 * 1024 * 1024,
            # As the README's production commands: no per-message compression (its zlib
            # state was ~45 KB of every idle call, and audio barely compresses).
            "ws_per_message_deflate": args.ws_deflate,
        }
        if args.reuse_port:
            server = uvicorn.Server(uvicorn.Config("bench.serve:application_from_environment", **options))
            server.run(sockets=[reuse_port_socket(args.port)])
            return
        uvicorn.run("bench.serve:application_from_environment", workers=args.workers, **options)
    else:
        from daphne.server import Server

        Server(
            application=application_from_environment(),
            endpoints=[f"tcp:port={args.port}:interface=127.0.0.1"],
            websocket_max_message_size=4 * 1024 * 1024,
            verbosity=0,
        ).run()


def reuse_port_socket(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1:``port`` that other processes may also bind
    (``SO_REUSEPORT``): the kernel gives each new connection to one of them by a hash of the
    client's address and port, so N processes get about 1/N of the connections each."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(2048)
    return sock


def serve_reuse_port_group(args: argparse.Namespace) -> None:
    """``args.workers`` single-process uvicorn servers on one port (``--reuse-port``), as a
    process manager would run them; SIGTERM/SIGINT stop them all."""
    command = [sys.executable, str(Path(__file__).resolve())]
    for name, value in vars(args).items():
        if name == "workers" or value in (False, None, ""):
            continue
        flag = "--" + name.replace("_", "-")
        command += [flag] if value is True else [flag, str(value)]
    children = [subprocess.Popen(command) for _ in range(args.workers)]

    def stop(*_: object) -> None:
        for child in children:
            if child.poll() is None:
                child.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for child in children:
        child.wait()


def _push_paced_fake_class():
    """Defined on first use: importing ``llm.fake_openai`` needs the path set up above."""
    import asyncio
    import dataclasses
    import time

    from llm.fake_openai import Emitted, FakeOpenAI

    @dataclasses.dataclass
    class PushPacedFake(FakeOpenAI):
        """The fake model on its own clock: token k leaves at start + first_token_delay +
        k * token_delay whatever the server is doing, as a real model's server pushes its
        stream into the socket. (The test fake is pulled: each token's delay starts when the
        server asks for it, so a busy event loop also slows the "model", and the lateness
        adds up over the tokens before the first marker.)"""

        paced_on_emit: object = None

        async def _sse(self, body, reply, record, request_index):
            tokens = reply.token_list()
            unpaced = dataclasses.replace(reply, first_token_delay=0.0, token_delay=0.0)
            started = time.monotonic()
            last = max(0, len(tokens) - 1)
            async for number, part in _enumerate(super()._sse(body, unpaced, record, request_index)):
                # part 0: the role chunk (at first_token_delay); part k: token k-1.
                due = started + reply.first_token_delay + min(max(0, number - 1), last) * reply.token_delay
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if self.paced_on_emit is not None and 1 <= number <= len(tokens):
                    emitted = Emitted(
                        request_index, number - 1, tokens[number - 1], time.monotonic(), time.time()
                    )
                    self.paced_on_emit(body, emitted)
                yield part

    return PushPacedFake


async def _enumerate(parts):
    number = 0
    async for part in parts:
        yield number, part
        number += 1


def push_paced_fake(**options):
    return _push_paced_fake_class()(**options)


def application_from_environment():
    """The ASGI application with the fake model and engine the options ask for."""
    sys.path.insert(0, str(ROOT))
    args = argparse.Namespace(**json.loads(os.environ[CONFIG_VARIABLE]))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vantum.settings")
    os.environ["TTS_ENGINE"] = args.engine
    import django

    django.setup()
    from calls import engines, session
    from llm.chunking import SemanticChunker
    from llm.fake_openai import FakeOpenAI, FakeReply
    from llm.openai_adapter import OpenAIChatProvider
    from llm.session import Conversation
    from vantum.asgi import application

    marks = open(args.marks, "a", buffering=1) if args.marks else None  # noqa: SIM115 (lives as long as the server)
    marker_token = next(
        i
        for i, _ in enumerate(FakeReply(text=REPLY).token_list())
        if "||BREAK||" in "".join(FakeReply(text=REPLY).token_list()[: i + 1])
    )

    def respond(body: dict) -> FakeReply:
        return FakeReply(text=REPLY, first_token_delay=args.ttft, token_delay=1.0 / args.tps)

    def on_emit(body: dict, emitted) -> None:
        if marks is None or emitted.index != marker_token:
            return
        last_user = next((m["content"] for m in reversed(body["messages"]) if m["role"] == "user"), "")
        found = TAG.search(last_user)
        if found:
            marks.write(json.dumps({"tag": found.group(1), "marker_wall": emitted.wall}) + "\n")

    if getattr(args, "push_paced", False):
        fake = push_paced_fake(responder=respond, keep_log=False, paced_on_emit=on_emit)
    else:
        fake = FakeOpenAI(responder=respond, keep_log=False, on_emit=on_emit)
    provider = OpenAIChatProvider(api_key="bench", http_client=fake.http_client(), name="bench-fake")
    override = engines.override_engines(chat=provider)
    override.__enter__()

    if args.buffered:

        class Buffered(SemanticChunker):
            """The spec's behaviour: collect everything, chunk at the end."""

            def feed(self, token: str) -> list[str]:
                self._spec_text = getattr(self, "_spec_text", "") + token
                return []

            def flush(self) -> list[str]:
                text, self._spec_text = getattr(self, "_spec_text", ""), ""
                return SemanticChunker.feed(self, text) + SemanticChunker.flush(self)

        session.Conversation = functools.partial(Conversation, chunker_factory=Buffered)
    return application


if __name__ == "__main__":
    main()
