"""The end-of-call webhook against a real HTTP server on loopback: signed, retried from a
persistent outbox (through restarts, by one process at a time), off the call path."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from channels.db import database_sync_to_async
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from prometheus_client import REGISTRY

from calls import recorder, services, webhook
from calls.models import Call, WebhookDelivery, WebhookState
from calls.session import CallSession, Request
from calls.webhook import (
    SIGNATURE_HEADER,
    call_report,
    call_report_deliver_now,
    call_reports_deliver_due,
    sign,
    verify_signature,
    webhook_delivery_create,
)
from tests.servers import PYTHON, ROOT, migrate, run_postgres, server_env
from tests.support import BeepEngine, Script, ScriptedProvider, tokens_of
from tests.test_call_session import RecordingPort

SECRET = "whsec-test-123"


class Receiver:
    """A CRM stand-in: answers each POST with the next status of ``statuses`` (then 200)."""

    def __init__(self, statuses: list[int], port: int = 0) -> None:
        self.statuses = list(statuses)
        self.arrived = threading.Event()  # a request came in (answered or held)
        self.hold = threading.Event()  # cleared: the receiver answers only once it is set
        self.hold.set()
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.got = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.arrived.set()
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

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/calls"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made: list[Receiver] = []

    def make(statuses: list[int] | None = None, port: int = 0) -> Receiver:
        made.append(Receiver(statuses or [], port))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture
def crm_settings(settings):
    """A configured webhook whose failed attempts are due again at once (no waiting)."""
    settings.CALL_WEBHOOK_SECRET = SECRET
    settings.CALL_WEBHOOK_BACKOFF_SECONDS = 0.0
    settings.VANTUM_PUBLIC_URL = "https://voice.example.com"
    return settings


def _ended_call(*, started_at: datetime | None = None, outbox: bool = True) -> uuid.UUID:
    """An ended call's rows, and its report's outbox row (as the hang-up writes them)."""
    session_id = uuid.uuid4()
    services.call_start(
        session_id=session_id,
        started_at=started_at or timezone.now(),
        prompt_version_id=None,
        prospect={"name": "Dana Ruiz", "company": "Acme Logistics"},
    )
    services.call_end(session_id=session_id, reason="hangup")
    if outbox:
        webhook_delivery_create(session_id=session_id, created_at=timezone.now())
    return session_id


def _delivery(session_id: uuid.UUID) -> WebhookDelivery:
    return WebhookDelivery.objects.get(call__session_id=session_id)


def _metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def _in_thread(function, **kwargs):
    """Run ``function`` in a thread of its own (its own database connection), as the
    heartbeat's retry pass does."""
    result: list = []

    def run() -> None:
        try:
            result.append(function(**kwargs))
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def test_signature_round_trip_and_tampering():
    body = b'{"outcome":"callback"}'
    header = sign(body, secret=SECRET, timestamp=1_700_000_000)
    assert verify_signature(body, header, secret=SECRET, now=1_700_000_010)
    assert not verify_signature(body + b" ", header, secret=SECRET, now=1_700_000_010)
    assert not verify_signature(body, header, secret="other", now=1_700_000_010)
    assert not verify_signature(body, header, secret=SECRET, now=1_700_000_000 + 3600)  # replayed late
    assert not verify_signature(body, "garbage", secret=SECRET)


@pytest.mark.django_db(transaction=True)
def test_a_failing_receiver_gets_the_report_again_until_it_accepts(receiver, crm_settings):
    crm = receiver([500, 503])
    crm_settings.CALL_WEBHOOK_URL = crm.url
    session_id = _ended_call()
    for expected in (WebhookState.PENDING, WebhookState.PENDING, WebhookState.DELIVERED):
        assert call_reports_deliver_due() == 1
        assert _delivery(session_id).state == expected
    assert call_reports_deliver_due(now=timezone.now() + timedelta(days=1)) == 0  # never sent again
    delivery = _delivery(session_id)
    assert (delivery.attempts, delivery.last_status, delivery.next_attempt_at) == (3, 200, None)
    assert delivery.delivered_at is not None
    assert len(crm.requests) == 3
    for headers, body in crm.requests:
        assert verify_signature(body, headers[SIGNATURE_HEADER], secret=SECRET)
        assert json.loads(body)["sessionId"] == str(session_id)
    assert [h["X-Vantum-Delivery"] for h, _ in crm.requests] == [f"{session_id}/{n}" for n in (1, 2, 3)]


@pytest.mark.django_db(transaction=True)
def test_a_refusal_is_final_and_not_retried(receiver, crm_settings):
    crm = receiver([400])
    crm_settings.CALL_WEBHOOK_URL = crm.url
    refused = _metric("vantum_webhooks_refused_total")
    session_id = _ended_call()
    assert call_reports_deliver_due() == 1
    assert call_reports_deliver_due(now=timezone.now() + timedelta(hours=2)) == 0
    delivery = _delivery(session_id)
    assert (delivery.state, delivery.attempts, delivery.last_status) == (WebhookState.FAILED, 1, 400)
    assert (delivery.next_attempt_at, delivery.delivered_at) == (None, None)
    assert len(crm.requests) == 1
    assert _metric("vantum_webhooks_refused_total") == refused + 1


@pytest.mark.django_db(transaction=True)
def test_an_unreachable_receiver_is_given_up_after_the_retries_and_counted(receiver, crm_settings):
    crm = receiver()
    crm.close()  # nobody listens at its address any more
    crm_settings.CALL_WEBHOOK_URL, crm_settings.CALL_WEBHOOK_RETRIES = crm.url, 2
    lost = _metric("vantum_webhooks_lost_total")
    session_id = _ended_call()
    for _ in range(3):
        assert call_reports_deliver_due() == 1
    assert call_reports_deliver_due(now=timezone.now() + timedelta(hours=2)) == 0
    delivery = _delivery(session_id)
    assert (delivery.state, delivery.attempts, delivery.last_status) == (WebhookState.FAILED, 3, None)
    assert delivery.last_error.startswith("URLError")
    assert "Connection refused" in delivery.last_error
    assert _metric("vantum_webhooks_lost_total") == lost + 1


@pytest.mark.django_db(transaction=True)
def test_a_report_past_the_age_limit_is_given_up_at_its_next_failure(receiver, crm_settings):
    crm = receiver([503])
    crm_settings.CALL_WEBHOOK_URL, crm_settings.CALL_WEBHOOK_MAX_AGE_SECONDS = crm.url, 3600.0
    session_id = _ended_call()
    WebhookDelivery.objects.update(created_at=timezone.now() - timedelta(hours=2))  # stored late
    assert call_reports_deliver_due() == 1  # still tried once: the CRM may be back
    delivery = _delivery(session_id)
    assert (delivery.state, delivery.attempts, delivery.last_status) == (WebhookState.FAILED, 1, 503)
    assert len(crm.requests) == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("first_pass_minutes", [0, 5])  # 5: a long pass, at its end
def test_two_retry_passes_at_once_deliver_a_due_report_exactly_once(
    receiver, crm_settings, first_pass_minutes
):
    crm = receiver()
    crm.hold.clear()  # the CRM sits on the first request until told
    crm_settings.CALL_WEBHOOK_URL = crm.url
    session_id = _ended_call()
    WebhookDelivery.objects.update(next_attempt_at=timezone.now() - timedelta(minutes=10))
    started = timezone.now() - timedelta(minutes=first_pass_minutes)
    first, first_made = _in_thread(call_reports_deliver_due, now=started)
    assert crm.arrived.wait(15)  # the first pass is sending the report, still unanswered
    second, second_made = _in_thread(call_reports_deliver_due)  # another process's heartbeat
    second.join(15)
    assert second_made == [0]  # the report is leased to the first pass
    crm.hold.set()
    first.join(15)
    assert first_made == [1]
    assert len(crm.requests) == 1
    delivery = _delivery(session_id)
    assert (delivery.state, delivery.attempts) == (WebhookState.DELIVERED, 1)


def _shell(env: dict[str, str], code: str) -> subprocess.Popen:
    """A separate server-like process running ``code`` with Django set up."""
    return subprocess.Popen(
        [PYTHON, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.servers
def test_two_processes_on_postgresql_send_a_due_report_once(receiver):
    crm = receiver()
    crm.hold.clear()
    with run_postgres() as database_url:
        env = server_env(
            {"DATABASE_URL": database_url, "CALL_WEBHOOK_URL": crm.url, "CALL_WEBHOOK_SECRET": SECRET}
        )
        migrate(env)
        session_id = uuid.uuid4()
        stored = _shell(
            env,
            "import uuid; from django.utils import timezone; from calls import services; "
            "from calls.webhook import webhook_delivery_create; "
            f"s = uuid.UUID('{session_id}'); "
            "services.call_start(session_id=s, started_at=timezone.now(), prompt_version_id=None); "
            "services.call_end(session_id=s, reason='hangup'); "
            "webhook_delivery_create(session_id=s, created_at=timezone.now())",
        )
        assert stored.wait(60) == 0, stored.stderr.read()
        retry_pass = "from calls.webhook import call_reports_deliver_due; print(call_reports_deliver_due())"
        first = _shell(env, retry_pass)
        assert crm.arrived.wait(60)  # the first process is sending it, still unanswered
        second = _shell(env, retry_pass)  # another worker's heartbeat, meanwhile
        out, err = second.communicate(timeout=60)
        assert (second.returncode, out.split()[-1]) == (0, "0"), err
        crm.hold.set()
        out, err = first.communicate(timeout=60)
        assert (first.returncode, out.split()[-1]) == (0, "1"), err
        assert len(crm.requests) == 1
        headers, body = crm.requests[0]
        assert verify_signature(body, headers[SIGNATURE_HEADER], secret=SECRET)
        assert json.loads(body)["sessionId"] == str(session_id)


@pytest.mark.django_db(transaction=True)
async def test_a_report_the_receiver_missed_at_hang_up_is_delivered_by_a_later_retry_pass(
    receiver, crm_settings, use_engines
):
    down = receiver()
    port = down.server.server_address[1]
    down.close()  # the CRM is down when the call ends
    crm_settings.CALL_WEBHOOK_URL, crm_settings.CALL_WEBHOOK_BACKOFF_SECONDS = down.url, 30.0
    crm_settings.CALL_RECORDINGS = False
    use_engines(chat=ScriptedProvider([Script(tokens_of("Hi."))]), speech=BeepEngine())
    session = CallSession(port=RecordingPort())
    await session.start()
    await session.text_input("Hello", request=Request("voicechat.text.input", "r1"))
    await asyncio.wait_for(asyncio.gather(*session.turn_tasks), 10)
    await session.hangup()
    await asyncio.wait_for(asyncio.gather(*webhook._background), 15)  # the attempt at hang-up
    assert not webhook._background  # nothing of the report is left in memory: as after a restart
    session_id = uuid.UUID(session.session_id)
    delivery = await database_sync_to_async(_delivery)(session_id)
    assert (delivery.state, delivery.attempts, delivery.last_status) == (WebhookState.PENDING, 1, None)
    assert "Connection refused" in delivery.last_error
    assert delivery.next_attempt_at >= delivery.created_at + timedelta(seconds=30)

    crm = receiver(port=port)  # the CRM is back
    retry_pass = database_sync_to_async(call_reports_deliver_due, thread_sensitive=False)
    assert await retry_pass() == 0  # not due yet (back-off)
    assert await retry_pass(now=timezone.now() + timedelta(seconds=31)) == 1  # a later beat
    delivery = await database_sync_to_async(_delivery)(session_id)
    assert (delivery.state, delivery.attempts, delivery.last_status) == (WebhookState.DELIVERED, 2, 200)
    assert len(crm.requests) == 1
    headers, body = crm.requests[0]
    assert verify_signature(body, headers[SIGNATURE_HEADER], secret=SECRET)
    assert headers["X-Vantum-Delivery"] == f"{session.session_id}/2"
    report = json.loads(body)
    assert (report["sessionId"], report["outcome"], report["endReason"]) == (
        session.session_id,
        "no_decision",
        "hangup",
    )


@pytest.mark.django_db(transaction=True)
async def test_the_outbox_row_is_spooled_with_the_calls_writes_and_stored_at_replay(crm_settings, tmp_path):
    crm_settings.CALL_WEBHOOK_URL = "http://127.0.0.1:9/hooks/calls"  # never called here
    crm_settings.VANTUM_SPOOL_DIR = str(tmp_path)
    session_id = await database_sync_to_async(_ended_call)(outbox=False)
    writes = recorder.TranscriptRecorder(call_id=str(session_id))
    writes.spooling = True  # as once the database has been unreachable past VANTUM_SPOOL_AFTER_SECONDS
    webhook.call_report_queue(record=writes.record, session_id=session_id)
    await writes.close()
    assert (writes.spooled_writes, writes.failed_writes) == (1, 0)
    assert await database_sync_to_async(WebhookDelivery.objects.count)() == 0
    assert await database_sync_to_async(recorder.spool_replay)() == (1, 0)  # the database is back
    delivery = await database_sync_to_async(_delivery)(session_id)
    assert (delivery.state, delivery.attempts) == (WebhookState.PENDING, 0)
    assert delivery.next_attempt_at == delivery.created_at  # due at once


@pytest.mark.django_db
def test_purge_calls_deletes_the_report_row_with_its_call():
    _ended_call(started_at=timezone.now() - timedelta(days=40))
    kept = _ended_call()
    call_command("purge_calls", "--older-than", "30", "--execute", stdout=io.StringIO())
    assert list(WebhookDelivery.objects.values_list("call__session_id", flat=True)) == [kept]
    assert Call.objects.count() == 1


@pytest.mark.django_db(transaction=True)
async def test_the_report_carries_outcome_prospect_and_transcript_link(receiver, crm_settings):
    crm = receiver()
    crm_settings.CALL_WEBHOOK_URL = crm.url
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
    before = await database_sync_to_async(call_report)(session_id=session_id, base_url="https://x.example")
    assert before is not None and before["meeting"] is None
    await database_sync_to_async(booked)(pk)
    await database_sync_to_async(webhook_delivery_create)(session_id=session_id, created_at=timezone.now())
    sent = database_sync_to_async(call_report_deliver_now, thread_sensitive=False)
    assert await sent(session_id=session_id) == WebhookState.DELIVERED
    report = json.loads(crm.requests[0][1])
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
async def test_hang_up_does_not_wait_for_a_slow_receiver(receiver, crm_settings, use_engines):
    crm = receiver()
    crm.hold.clear()  # the CRM sits on the request until the call is over
    crm_settings.CALL_WEBHOOK_URL = crm.url
    crm_settings.CALL_RECORDINGS = False
    use_engines(chat=ScriptedProvider([Script(tokens_of("Hi."))]), speech=BeepEngine())
    session = CallSession(port=RecordingPort())
    await session.start()
    await session.text_input("Hello", request=Request("voicechat.text.input", "r1"))
    await asyncio.wait_for(asyncio.gather(*session.turn_tasks), 10)
    await session.hangup()
    assert not crm.got.is_set()  # the hang-up finished while the report was still unanswered
    crm.hold.set()
    assert await asyncio.to_thread(crm.got.wait, 15)
    await asyncio.wait_for(asyncio.gather(*webhook._background), 15)
    report = json.loads(crm.requests[-1][1])
    assert (report["sessionId"], report["outcome"]) == (session.session_id, "no_decision")
    assert len(crm.requests) == 1
    delivery = await database_sync_to_async(_delivery)(uuid.UUID(session.session_id))
    assert (delivery.state, delivery.attempts) == (WebhookState.DELIVERED, 1)


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_starts_a_retry_pass_that_delivers_due_reports(receiver, crm_settings):
    from calls.instances import Heartbeat

    crm = receiver([503])
    crm_settings.CALL_WEBHOOK_URL = crm.url
    session_id = _ended_call()
    assert call_reports_deliver_due() == 1  # the attempt at hang-up: the CRM answers 503
    Heartbeat(interval=5).beat_once()
    webhook._retrier.join(15)
    delivery = _delivery(session_id)
    assert (delivery.state, delivery.attempts) == (WebhookState.DELIVERED, 2)
    assert len(crm.requests) == 2


@pytest.mark.django_db(transaction=True)
def test_the_calls_admin_page_shows_its_report_state(receiver, crm_settings, admin_client):
    crm = receiver([400])
    crm_settings.CALL_WEBHOOK_URL = crm.url
    silent = _ended_call(outbox=False)  # no webhook configured at the time: no row
    session_id = _ended_call()
    page = admin_client.get(f"/admin/calls/call/{Call.objects.get(session_id=session_id).pk}/change/")
    assert '<td id="call-webhook">pending</td>' in page.content.decode()
    call_reports_deliver_due()
    page = admin_client.get(f"/admin/calls/call/{Call.objects.get(session_id=session_id).pk}/change/")
    assert '<td id="call-webhook">failed after 1 attempt: HTTP 400</td>' in page.content.decode()
    page = admin_client.get(f"/admin/calls/call/{Call.objects.get(session_id=silent).pk}/change/")
    assert page.status_code == 200
    assert "call-webhook" not in page.content.decode()
