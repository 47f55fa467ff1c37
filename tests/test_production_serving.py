"""The documented production serving set-up survives a slowloris: deploy/nginx.conf in front
of uvicorn, both on loopback. 1,100 half-open connections are held against nginx, and a real
caller still loads the page and connects a call over TLS; one address cannot hold more calls
than the per-address cap."""

from __future__ import annotations

import asyncio
import contextlib
import re
import resource
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets

from tests.servers import ROOT, _stop, free_port, migrate, require_program, server_env, wait_for_port
from tests.test_security_edges import STRONG_KEY, run_uvicorn

pytestmark = [pytest.mark.servers, pytest.mark.timeout(240)]
HALF_OPEN = 1100


def render_nginx_conf(workdir: Path, *, https_port: int, http_port: int, upstream_port: int) -> Path:
    """deploy/nginx.conf with loopback ports, a throwaway certificate and paths in ``workdir``."""
    text = (ROOT / "deploy" / "nginx.conf").read_text()
    replacements = [
        (r"user www-data;", "user root;"),  # ignored (with a notice) when not run as root
        (r"pid /run/nginx.pid;", f"pid {workdir}/nginx.pid;"),
        (r"error_log /var/log/nginx/error.log warn;", f"error_log {workdir}/error.log warn;"),
        (r"access_log /var/log/nginx/vantum-access.log vantum;", f"access_log {workdir}/access.log vantum;"),
        (r"listen 80;", f"listen 127.0.0.1:{http_port};"),
        (r"listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;"),
        (r"ssl_certificate /\S+;", f"ssl_certificate {workdir}/cert.pem;"),
        (r"ssl_certificate_key /\S+;", f"ssl_certificate_key {workdir}/key.pem;"),
        (r"server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream_port};"),
        (
            r"http \{",
            "http {\n"
            + "".join(
                f"    {kind}_temp_path {workdir}/{kind};\n"
                for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
            ),
        ),
    ]
    for pattern, replacement in replacements:
        text, count = re.subn(pattern, replacement, text, count=1)
        assert count == 1, f"deploy/nginx.conf no longer has {pattern!r}"
    path = workdir / "nginx.conf"
    path.write_text(text)
    return path


@contextlib.contextmanager
def run_nginx(conf: Path, port: int) -> Iterator[None]:
    nginx = require_program("nginx", "/usr/sbin/nginx")
    check = subprocess.run([nginx, "-t", "-c", str(conf)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    process = subprocess.Popen(
        [nginx, "-c", str(conf), "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(port, process=process, timeout=30)
        yield
    finally:
        _stop(process)


def _certificate(workdir: Path) -> None:
    openssl = require_program("openssl", "/usr/bin/openssl")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(workdir / "key.pem"), "-out", str(workdir / "cert.pem")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip


@pytest.fixture(scope="module")
def proxied(tmp_path_factory):
    """uvicorn as the README runs it in production, behind deploy/nginx.conf."""
    workdir = tmp_path_factory.mktemp("nginx")
    _certificate(workdir)
    env = server_env(
        {
            "DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}",
            "DJANGO_DEBUG": "false",
            "DJANGO_SECRET_KEY": STRONG_KEY,
            "DJANGO_SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto",
            "DJANGO_SECURE_SSL_REDIRECT": "true",
            "VANTUM_TRUSTED_PROXIES": "127.0.0.1",
        }
    )
    migrate(env)
    args = ("--proxy-headers", "--forwarded-allow-ips", "127.0.0.1", "--timeout-keep-alive", "5",
            "--limit-concurrency", "1200", "--ws-max-size", "4194304",
            "--ws-per-message-deflate", "false")  # fmt: skip
    https_port, http_port = free_port(), free_port()
    with run_uvicorn(env, log_path=workdir / "uvicorn.log", args=args) as upstream_port:
        conf = render_nginx_conf(
            workdir, https_port=https_port, http_port=http_port, upstream_port=upstream_port
        )
        with run_nginx(conf, https_port):
            yield {"https": https_port, "http": http_port, "workdir": workdir}


def _tls(workdir: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(workdir / "cert.pem"))


def _https_get(port: int, workdir: Path, path: str = "/") -> tuple[int, bytes]:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        _tls(workdir).wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data


async def _call(port: int, workdir: Path) -> bytes:
    async with websockets.connect(
        f"wss://127.0.0.1:{port}/ws", ssl=_tls(workdir), origin=f"https://127.0.0.1:{port}", open_timeout=15
    ) as call:
        return await asyncio.wait_for(call.recv(), 15)


def _half_open(port: int, first_bytes: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(first_bytes)  # then nothing more: the slowloris
    sock.setblocking(False)
    return sock


def _still_open(sock: socket.socket) -> bool:
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def test_a_caller_still_gets_through_while_1100_connections_hang_half_open(proxied):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < HALF_OPEN + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, HALF_OPEN + 500), hard))
    port, workdir = proxied["https"], proxied["workdir"]
    held: list[socket.socket] = []
    try:
        for n in range(HALF_OPEN):
            if n % 10 == 0:  # a few plain-HTTP ones with headers that never end
                held.append(_half_open(proxied["http"], b"GET / HTTP/1.1\r\nHost: voice\r\nX-a: "))
            else:  # the rest stall in the TLS handshake
                held.append(_half_open(port, b"\x16\x03\x01\x02\x00\x01"))
        opened_at = time.monotonic()
        assert all(_still_open(sock) for sock in held)

        status, body = _https_get(port, workdir)
        assert status == 200
        assert b"data-testid" in body
        ack = asyncio.run(_call(port, workdir))
        assert b"connection.ack" in ack
        # Still inside nginx's 10 s header timeout: the slowloris was really holding on.
        assert time.monotonic() - opened_at < 10
        assert sum(_still_open(sock) for sock in held) >= HALF_OPEN * 0.9
    finally:
        for sock in held:
            sock.close()


def test_the_slow_connections_are_dropped_after_the_header_timeout(proxied):
    held = [_half_open(proxied["https"], b"\x16\x03\x01") for _ in range(20)]
    try:
        deadline = time.monotonic() + 30
        while any(_still_open(sock) for sock in held) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not any(_still_open(sock) for sock in held)
    finally:
        for sock in held:
            sock.close()


def test_one_address_cannot_hold_more_than_20_calls(proxied):
    port, workdir = proxied["https"], proxied["workdir"]

    async def hold_calls(count: int) -> list[str]:
        outcomes: list[str] = []
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(count):
                try:
                    call = await stack.enter_async_context(
                        websockets.connect(
                            f"wss://127.0.0.1:{port}/ws",
                            ssl=_tls(workdir),
                            origin=f"https://127.0.0.1:{port}",
                            open_timeout=15,
                        )
                    )
                    await asyncio.wait_for(call.recv(), 15)
                    outcomes.append("connected")
                except websockets.exceptions.InvalidStatus as refused:
                    outcomes.append(str(refused.response.status_code))
        return outcomes

    assert asyncio.run(hold_calls(23)) == ["connected"] * 20 + ["429"] * 3


def test_metrics_are_not_served_through_the_proxy_and_plain_http_is_redirected(proxied):
    assert _https_get(proxied["https"], proxied["workdir"], "/metrics")[0] == 404
    with socket.create_connection(("127.0.0.1", proxied["http"]), timeout=10) as sock:
        sock.sendall(b"GET /?token=abc HTTP/1.1\r\nHost: voice.example.com\r\nConnection: close\r\n\r\n")
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 301")
    assert b"Location: https://voice.example.com/?token=abc" in reply
    access_log = proxied["workdir"] / "access.log"
    for _ in range(100):  # nginx writes the line after the reply has gone out
        log = access_log.read_text()
        if '"GET / HTTP/1.1" 301' in log:
            break
        time.sleep(0.05)
    assert '"GET / HTTP/1.1" 301' in log
    assert "token=abc" not in log
