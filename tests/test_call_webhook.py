"""The end-of-call webhook against a real HTTP server on loopback: signed, retried, off the call path."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from calls import services
from calls.session import CallSession, Request
from calls.webhook import SIGNATURE_HEADER, deliver, send_call_report, sign, verify_signature
from tests.support import BeepEngine, Script, ScriptedProvider, tokens_of
from tests.test_call_session import RecordingPort

SECRET = "whsec-test-123"


class Receiver:
    """A CRM stand-in: answers each POST with the next status of ``statuses`` (then 200)."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.hold = threading.Event()  # cleared: the receiver answers only once it is set
        self.hold.set()
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.got = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.hold.wait(30)
                receiver.requests.append((dict(self.headers), body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                if status == 200:
                    receiver.got.set()

            def log_message(self, *args) -> None:  # keep test output quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/calls"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made: list[Receiver] = []

    def make(statuses: list[int] | None = None) -> Receiver:
        made.append(Receiver(statuses or []))
        return made[-1]

    yield make
    for r in made:
        r.close()


def test_signature_round_trip_and_tampering():
    body = b'{"outcome":"callback"}'
    header = sign(body, secret=SECRET, timestamp=1_700_000_000)
    assert verify_signature(body, header, secret=SECRET, now=1_700_000_010)
    assert not verify_signature(body + b" ", header, secret=SECRET, now=1_700_000_010)
    assert not verify_signature(body, header, secret="other", now=1_700_000_010)
    assert not verify_signature(body, header, secret=SECRET, now=1_700_000_000 + 3600)  # replayed late
    assert not verify_signature(body, "garbage", secret=SECRET)


async def test_a_failing_receiver_gets_the_report_again_until_it_accepts(receiver):
    crm = receiver([500, 503])
    result = await deliver(
        {"sessionId": "s1", "outcome": "callback"}, url=crm.url, secret=SECRET, backoff=0.01
    )
    assert (result.delivered, result.attempts, result.status) == (True, 3, 200)
    assert len(crm.requests) == 3
    for headers, body in crm.requests:
        assert verify_signature(body, headers[SIGNATURE_HEADER], secret=SECRET)
        assert json.loads(body) == {"sessionId": "s1", "outcome": "callback"}
    assert [h["X-Vantum-Delivery"] for h, _ in crm.requests] == ["s1/1", "s1/2", "s1/3"]


async def test_a_refusal_is_not_retried_and_an_unreachable_receiver_gives_up(receiver):
    crm = receiver([400])
    result = await deliver({"sessionId": "s2"}, url=crm.url, secret=SECRET, backoff=0.01)
    assert (result.delivered, result.attempts, result.status) == (False, 1, 400)
    crm.close()
    gone = await deliver({"sessionId": "s3"}, url=crm.url, secret=SECRET, retries=2, backoff=0.01, timeout=2)
    assert (gone.delivered, gone.attempts, gone.status) == (False, 3, None)
    assert "Error" in gone.error


@pytest.mark.django_db(transaction=True)
async def test_the_report_carries_outcome_prospect_and_transcript_link(receiver, settings):
    crm = receiver()
    settings.CALL_WEBHOOK_URL, settings.CALL_WEBHOOK_SECRET = crm.url, SECRET
    settings.VANTUM_PUBLIC_URL = "https://voice.example.com"
    session_id = uuid.uuid4()

    def stored_call() -> int:
        call = services.call_start(
            session_id=session_id,
            started_at=timezone.now(),
            prompt_version_id=None,
            prospect={"name": "Dana Ruiz", "company": "Acme Logistics"},
        )
        services.call_set_outcome(
            session_id=session_id, outcome="callback", source="agent", summary="Call Friday"
        )
        services.call_end(session_id=session_id, reason="hangup")
        return call.pk

    def booked(pk: int) -> None:
        from bookings.models import Meeting

        start = timezone.now().replace(microsecond=0) + timedelta(days=2)
        Meeting.objects.create(
            call_id=pk,
            call_session_id=session_id,
            start=start,
            end=start + timedelta(minutes=30),
            duration_minutes=30,
            attendee_email="dana@acme.example",
            created_at=timezone.now(),
        )

    pk = await database_sync_to_async(stored_call)()
    result = await send_call_report(session_id=session_id)
    assert json.loads(crm.requests[0][1])["meeting"] is None
    await database_sync_to_async(booked)(pk)
    result = await send_call_report(session_id=session_id)
    assert result is not None and result.delivered
    report = json.loads(crm.requests[1][1])
    assert report["type"] == "call.ended"
    assert report["meeting"]["duration_minutes"] == 30
    assert report["meeting"]["attendee_email"] == "dana@acme.example"
    assert (report["outcome"], report["outcomeSource"], report["summary"]) == (
        "callback",
        "agent",
        "Call Friday",
    )
    assert report["prospect"] == {"name": "Dana Ruiz", "company": "Acme Logistics"}
    assert report["transcriptUrl"] == f"https://voice.example.com/admin/calls/call/{pk}/change/"
    assert report["endReason"] == "hangup"


@pytest.mark.django_db(transaction=True)
async def test_hang_up_does_not_wait_for_a_slow_receiver(receiver, settings, use_engines):
    crm = receiver()
    crm.hold.clear()  # the CRM sits on the request until the call is over
    settings.CALL_WEBHOOK_URL, settings.CALL_WEBHOOK_SECRET = crm.url, SECRET
    settings.CALL_RECORDINGS = False
    use_engines(chat=ScriptedProvider([Script(tokens_of("Hi."))]), speech=BeepEngine())
    session = CallSession(port=RecordingPort())
    await session.start()
    await session.text_input("Hello", request=Request("voicechat.text.input", "r1"))
    await asyncio.wait_for(asyncio.gather(*session.turn_tasks), 10)
    await session.hangup()
    assert not crm.got.is_set()  # the hang-up finished while the report was still unanswered
    crm.hold.set()
    assert await asyncio.to_thread(crm.got.wait, 15)
    report = json.loads(crm.requests[-1][1])
    assert (report["sessionId"], report["outcome"]) == (session.session_id, "no_decision")
    assert len(crm.requests) == 1
