"""Servers that a test can stop and start again on the same port (outages), and uvicorn
processes it can signal (shutdown, crash). Loopback only; built on ``tests.servers``."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from tests.servers import PYTHON, ROOT, free_port, require_program, wait_for_port


def wait_until(predicate, *, timeout: float, interval: float = 0.1, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value (returned) or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached after {timeout}s (last: {value!r})")
        time.sleep(interval)


def _wait_port_closed(port: int, timeout: float = 10.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                pass
        except OSError:
            return
        time.sleep(0.05)
    raise TimeoutError(f"127.0.0.1:{port} still open after {timeout}s")


class StoppableRedis:
    """A redis-server that can be stopped (an outage) and started again, empty, on its port."""

    def __init__(self) -> None:
        self.binary = require_program("redis-server", "/usr/bin/redis-server")
        self.port = free_port()
        self.workdir = tempfile.mkdtemp(prefix="vantum-redis-")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.workdir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, process=self.process)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None
        _wait_port_closed(self.port)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


class StoppablePostgres:
    """A throwaway PostgreSQL cluster that can be stopped (``pg_ctl stop -m immediate``, as
    a crash or a network cut looks to clients) and started again with its data. Durable
    settings, unlike ``tests.servers.run_postgres``: committed rows survive the stop."""

    def __init__(self) -> None:
        initdb = require_program(
            "initdb", *sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
        )
        self.bindir = Path(initdb).resolve().parent
        self.port = free_port()
        self.workdir = tempfile.mkdtemp(prefix="vantum-pg-")
        self.as_postgres: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            self.as_postgres = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.workdir, "postgres")
        self.datadir = os.path.join(self.workdir, "data")
        subprocess.run(
            [
                *self.as_postgres,
                initdb,
                "-D",
                self.datadir,
                "-U",
                "vantum",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
        )
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"postgres://vantum@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                *self.as_postgres,
                str(self.bindir / "postgres"),
                "-D",
                self.datadir,
                "-p",
                str(self.port),
                "-h",
                "127.0.0.1",
                "-k",
                self.workdir,
                # Durable (the defaults): an immediate stop is a crash, and with fsync or
                # synchronous_commit off PostgreSQL itself may lose the last commits it
                # acknowledged, which would be counted against us.
                "-c",
                "max_connections=300",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, process=self.process)
        # Accepting TCP is not accepting queries (recovery after an immediate stop).
        import psycopg

        def ready() -> bool:
            try:
                with psycopg.connect(self.url, connect_timeout=1) as db:
                    db.execute("SELECT 1")
                return True
            except psycopg.OperationalError:
                return False

        wait_until(ready, timeout=30, what="PostgreSQL accepting queries")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            # Immediate shutdown: connections drop at once, like an outage.
            subprocess.run(
                [
                    *self.as_postgres,
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    self.datadir,
                    "stop",
                    "-m",
                    "immediate",
                ],
                check=False,
                capture_output=True,
                timeout=30,
            )
            self.process.wait(20)
        self.process = None
        _wait_port_closed(self.port)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


class Uvicorn:
    """A uvicorn process serving the project, like production (``--lifespan on``)."""

    def __init__(self, env: Mapping[str, str], *, log_path: Path | None = None, port: int | None = None):
        self.env = dict(env)
        self.port = port or free_port()
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self) -> Uvicorn:
        log = open(self.log_path or os.devnull, "ab")  # noqa: SIM115 (kept by the process)
        self.process = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "uvicorn",
                "vantum.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--ws-max-size",
                "4194304",
                "--lifespan",
                "on",
                "--timeout-graceful-shutdown",
                "15",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_for_port(self.port, process=self.process, timeout=60)
        return self

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""


@contextlib.contextmanager
def uvicorn(env: Mapping[str, str], *, log_path: Path | None = None) -> Iterator[Uvicorn]:
    server = Uvicorn(env, log_path=log_path).start()
    try:
        yield server
    finally:
        server.stop()
