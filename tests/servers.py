"""Real servers for tests, on loopback only: daphne, redis-server, PostgreSQL.

Each starts from the installed binary in a temporary directory and stops at the end.
Where a binary is missing the test is skipped with the reason, except in CI
(``CI=true``), where ``.ci/run`` installs them and a missing one is a failure.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def require_program(name: str, *candidates: str, package: str | None = None) -> str:
    """Path of an installed program, or skip (fail in CI) naming the package to install."""
    for candidate in (shutil.which(name), *candidates):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    package = package or ("postgresql" if name == "initdb" else name)
    message = f"{name} is not installed (apt-get install {package})"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, *, process: subprocess.Popen | None = None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


# Recordings and the write spool of server processes: out of the repository (one folder per
# test run, shared by its servers like the repository's default folders would be).
_SCRATCH = Path(tempfile.mkdtemp(prefix="vantum-test-servers-"))


def server_env(extra: Mapping[str, str]) -> dict[str, str]:
    """A clean environment for a server process of ours: no key (demo), fast engines."""
    env = {
        "MEDIA_ROOT": str(_SCRATCH / "media"),
        "VANTUM_SPOOL_DIR": str(_SCRATCH / "spool"),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "DJANGO_SETTINGS_MODULE": "vantum.settings",
        "DJANGO_DEBUG": "true",  # development mode, as `make run` (production is the default)
        "LOG_LEVEL": "WARNING",
        "TTS_ENGINE": "tone",
        "STT_ENGINE": "fake",
    }
    env.update(extra)
    return env


def migrate(env: Mapping[str, str]) -> None:
    subprocess.run(
        [PYTHON, "manage.py", "migrate", "--noinput"],
        cwd=ROOT,
        env=dict(env),
        check=True,
        capture_output=True,
    )


@contextlib.contextmanager
def run_daphne(env: Mapping[str, str], *, log_path: Path | None = None) -> Iterator[int]:
    """A daphne process serving the project on a free loopback port; yields the port."""
    port = free_port()
    log = open(log_path or os.devnull, "wb")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        [PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "vantum.asgi:application"],
        cwd=ROOT,
        env=dict(env),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, process=process, timeout=60)
        yield port
    finally:
        _stop(process)
        log.close()


@contextlib.contextmanager
def run_redis() -> Iterator[str]:
    binary = require_program("redis-server", "/usr/bin/redis-server")
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        process = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(port, process=process)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            _stop(process)


@contextlib.contextmanager
def run_postgres() -> Iterator[str]:
    """A throwaway PostgreSQL cluster; yields a DATABASE_URL."""
    initdb = require_program("initdb", *sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True))
    bindir = Path(initdb).resolve().parent
    postgres = bindir / "postgres"
    port = free_port()
    as_postgres: list[str] = []
    workdir = tempfile.mkdtemp(prefix="vantum-pg-")
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        as_postgres = ["runuser", "-u", "postgres", "--"]
        shutil.chown(workdir, "postgres")
    datadir = os.path.join(workdir, "data")
    subprocess.run(
        [*as_postgres, initdb, "-D", datadir, "-U", "vantum", "--auth=trust", "-E", "UTF8", "--no-sync"],
        check=True,
        capture_output=True,
    )
    process = subprocess.Popen(
        [
            *as_postgres,
            str(postgres),
            "-D",
            datadir,
            "-p",
            str(port),
            "-h",
            "127.0.0.1",
            "-k",
            workdir,
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process=process)
        yield f"postgres://vantum@127.0.0.1:{port}/postgres"
    finally:
        _stop(process)
        shutil.rmtree(workdir, ignore_errors=True)
