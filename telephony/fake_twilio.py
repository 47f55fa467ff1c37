"""A fake of Twilio's REST API (the Calls resource) on loopback, for tests and benchmarks.

The real ``twilio`` SDK talks to it through ``TWILIO_API_BASE_URL``. It checks HTTP basic
auth, creates calls (``POST .../Calls.json``), ends them (``POST .../Calls/{sid}.json``
with ``Status=completed``), lists them (``GET .../Calls.json?To=``), fetches one
(``GET .../Calls/{sid}.json``; a test sets ``calls[sid].status``), and records every
request. Faults: ``refuse_next`` (a Twilio error answer: the call is not placed) and
``drop_after_create_next`` (the call is created, then the connection is cut before the
answer — a worker cannot know whether its request reached Twilio).
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

_CALLS = re.compile(r"^/2010-04-01/Accounts/(?P<account>AC\w+)/Calls\.json$")
_CALL = re.compile(r"^/2010-04-01/Accounts/(?P<account>AC\w+)/Calls/(?P<sid>CA\w+)\.json$")


@dataclass
class FakeCall:
    sid: str
    to: str
    from_: str
    url: str
    status_callback: str
    machine_detection: str
    status: str = "queued"
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def resource(self, account: str) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "account_sid": account,
            "to": self.to,
            "from": self.from_,
            "status": self.status,
            "date_created": format_datetime(self.created_at),
            "uri": f"/2010-04-01/Accounts/{account}/Calls/{self.sid}.json",
        }


class FakeTwilio:
    def __init__(self, *, account_sid: str, auth_token: str) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.calls: dict[str, FakeCall] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.hangups: list[str] = []
        self.hangup_times: list[float] = []  # time.monotonic() of each hang-up request
        self.refuse_next = 0
        self.drop_after_create_next = 0
        self._sids = itertools.count(1)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ server life
    def start(self) -> str:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-twilio", daemon=True)
        self._thread.start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def placed_to(self, number: str) -> list[FakeCall]:
        return [c for c in self.calls.values() if c.to == number]

    # ------------------------------------------------------------ requests
    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length).decode() if length else ""
        params = {k: v[0] for k, v in parse_qs(body or parts.query).items()}
        with self._lock:
            self.requests.append((method, parts.path, params))
        expected = "Basic " + base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if handler.headers.get("Authorization") != expected:
            return self._reply(handler, 401, {"code": 20003, "message": "Authenticate", "status": 401})
        if (match := _CALLS.match(parts.path)) and method == "POST":
            return self._create(handler, params, match["account"])
        if (match := _CALLS.match(parts.path)) and method == "GET":
            with self._lock:
                found = [
                    c.resource(match["account"])
                    for c in self.calls.values()
                    if c.to == params.get("To", c.to)
                ]
            return self._reply(
                handler,
                200,
                {"calls": found, "page": 0, "page_size": 50, "next_page_uri": None, "uri": parts.path},
            )
        if (match := _CALL.match(parts.path)) and method == "GET":
            with self._lock:
                call = self.calls.get(match["sid"])
                resource = call.resource(match["account"]) if call is not None else None
            if resource is None:
                return self._reply(handler, 404, {"code": 20404, "message": "Not found", "status": 404})
            return self._reply(handler, 200, resource)
        if (match := _CALL.match(parts.path)) and method == "POST":
            with self._lock:
                call = self.calls.get(match["sid"])
                if call is None:
                    return self._reply(handler, 404, {"code": 20404, "message": "Not found", "status": 404})
                if params.get("Status") == "completed":
                    call.status = "completed"
                    self.hangups.append(call.sid)
                    self.hangup_times.append(time.monotonic())
                resource = call.resource(match["account"])
            return self._reply(handler, 200, resource)
        return self._reply(handler, 404, {"code": 20404, "message": "Not found", "status": 404})

    def _create(self, handler: BaseHTTPRequestHandler, params: dict[str, str], account: str) -> None:
        with self._lock:
            if self.refuse_next:
                self.refuse_next -= 1
                return self._reply(
                    handler, 400, {"code": 21211, "message": "The 'To' number is not valid.", "status": 400}
                )
            sid = f"CA{next(self._sids):032x}"
            call = FakeCall(
                sid=sid,
                to=params.get("To", ""),
                from_=params.get("From", ""),
                url=params.get("Url", ""),
                status_callback=params.get("StatusCallback", ""),
                machine_detection=params.get("MachineDetection", ""),
            )
            self.calls[sid] = call
            drop = self.drop_after_create_next > 0
            if drop:
                self.drop_after_create_next -= 1
        if drop:  # created at Twilio, but the answer never arrives
            handler.close_connection = True
            handler.connection.shutdown(2)
            return None
        return self._reply(handler, 201, call.resource(account))

    @staticmethod
    def _reply(handler: BaseHTTPRequestHandler, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
