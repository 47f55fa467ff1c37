"""The optional end-of-call webhook: a signed JSON report POSTed to ``CALL_WEBHOOK_URL``.

The report says what a CRM needs: the outcome, the prospect, a link to the transcript in
admin and the meeting booked, if any.

Delivery goes through an outbox, so a restart, a crash or a database outage never loses a
report: at hang-up a ``WebhookDelivery`` row is queued on the call's write queue, after the
call's own rows (``call_report_queue``; spooled with them through a database outage). Once
the call's writes are done, the process sends it off the call path
(``schedule_call_report``); a report not accepted then is retried with back-off by a pass
the heartbeat starts (``call_reports_retry_soon``), on whichever process gets there first:
each attempt first claims the row with a lease (a conditional UPDATE, atomic on PostgreSQL
and SQLite), so two processes never send the same report at the same time. A connection
error, a timeout or a 5xx/429 answer is retried; a 4xx other than 429 is the receiver
refusing the report and is final. After ``1 + CALL_WEBHOOK_RETRIES`` attempts or
``CALL_WEBHOOK_MAX_AGE_SECONDS`` the report is given up, logged as an error and counted in
``vantum_webhooks_lost_total``. Rows are kept (delivered or failed) for audit and deleted
with their call. Delivery is at least once: a process dying between the receiver's answer
and the row's update sends the report again after the lease (``X-Vantum-Delivery`` names the
session and attempt, so a receiver can drop duplicates).

Signature (like Stripe's): header ``X-Vantum-Signature: t=<unix time>,v1=<hex>``, where
``<hex>`` is HMAC-SHA256 with ``CALL_WEBHOOK_SECRET`` of ``"<t>." + body``. The receiver
recomputes it and rejects old timestamps to stop replays (``verify_signature``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.client
import json
import logging
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import F
from django.utils import timezone

from calls import telemetry

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Vantum-Signature"
EVENT_TYPE = "call.ended"
BACKOFF_MAX_SECONDS = 3600.0  # the longest pause between two attempts
LEASE_MARGIN_SECONDS = 60.0  # a claimed attempt's lease: its HTTP timeout plus this
DUE_PER_PASS = 100  # reports one retry pass takes at most (the next pass takes the rest)
_background: set[asyncio.Task[Any]] = set()


def sign(body: bytes, *, secret: str, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(
    body: bytes, header: str, *, secret: str, tolerance_seconds: int = 300, now: float | None = None
) -> bool:
    """For receivers (and tests): the header matches the body and is recent enough."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((now if now is not None else time.time()) - timestamp) > tolerance_seconds:
        return False
    expected = sign(body, secret=secret, timestamp=timestamp)
    return hmac.compare_digest(expected, header.strip())


def call_report(*, session_id: uuid.UUID | str, base_url: str) -> dict[str, Any] | None:
    """The report of one ended call (a database read; run it in a thread)."""
    from django.urls import reverse

    from calls.models import Call

    call = Call.objects.select_related("prompt_version").filter(session_id=session_id).first()
    if call is None:
        return None
    return {
        "type": EVENT_TYPE,
        "sessionId": str(call.session_id),
        "startedAt": call.started_at.isoformat(),
        "endedAt": call.ended_at.isoformat() if call.ended_at else None,
        "durationSeconds": (
            round((call.ended_at - call.started_at).total_seconds(), 1) if call.ended_at else None
        ),
        "endReason": call.end_reason,
        "outcome": call.outcome or None,
        "outcomeSource": call.outcome_source or None,
        "summary": call.outcome_summary,
        "prospect": call.prospect if isinstance(call.prospect, dict) else {},
        "promptVersion": call.prompt_version.number if call.prompt_version else None,
        "transcriptUrl": base_url.rstrip("/") + reverse("admin:calls_call_change", args=[call.pk]),
        "recording": bool(call.recording),
        "meeting": _meeting(call),
    }


def _meeting(call: Any) -> dict[str, Any] | None:
    """The meeting booked on this call, when the bookings app is installed and has one
    (linked by the call, or by its session id when the row was written before the call's)."""
    from django.apps import apps
    from django.core.exceptions import FieldError
    from django.db.models import Q

    try:
        meeting_model = apps.get_model("bookings", "Meeting")
        meeting = (
            meeting_model.objects.filter(Q(call=call) | Q(call_session_id=call.session_id))
            .order_by("-pk")
            .first()
        )
    except (LookupError, FieldError):
        return None
    if meeting is None:
        return None
    report: dict[str, Any] = {"id": meeting.pk}
    for name in ("start", "end", "duration_minutes", "attendee_email", "notes", "status"):
        value = getattr(meeting, name, None)
        if value is not None:
            report[name] = value.isoformat() if hasattr(value, "isoformat") else value
    return report


# ---------------------------------------------------------------------------- the outbox


def call_report_queue(*, record: Callable[..., None], session_id: uuid.UUID) -> None:
    """Queue the call's outbox row on its write queue (``TranscriptRecorder.record``), after
    the call's own rows, when a webhook is configured. The hang-up time is passed along:
    through a database outage the row is stored late, and the age limit counts from it."""
    if not settings.CALL_WEBHOOK_URL:
        return
    record(webhook_delivery_create, session_id=session_id, created_at=timezone.now())


def webhook_delivery_create(*, session_id: uuid.UUID, created_at: datetime) -> Any:
    """Store the report's outbox row, due at once. Idempotent (a spool replay may run it
    again). Raises ``Call.DoesNotExist`` when the call's own row was never stored: the
    recorder then logs and counts the write as lost."""
    from calls.models import Call, WebhookDelivery

    call = Call.objects.get(session_id=session_id)
    delivery, _ = WebhookDelivery.objects.get_or_create(
        call=call, defaults={"created_at": created_at, "next_attempt_at": created_at}
    )
    return delivery


def webhook_delivery_claim(*, delivery_id: int, now: datetime, lease: timedelta) -> int | None:
    """Take a due report for one attempt: push its due time past the lease, in one
    conditional UPDATE, so no other pass (thread or process) can take it meanwhile.
    Returns the attempt's number, or None when the report is not (or no longer) due.
    The lease runs from the clock, not from ``now``: a long pass (``now`` is when it
    started) must not claim a report with a lease that has already run out."""
    from calls.models import WebhookDelivery, WebhookState

    claimed = WebhookDelivery.objects.filter(
        pk=delivery_id, state=WebhookState.PENDING, next_attempt_at__lte=now
    ).update(next_attempt_at=max(now, timezone.now()) + lease, attempts=F("attempts") + 1)
    if not claimed:
        return None
    return WebhookDelivery.objects.values_list("attempts", flat=True).get(pk=delivery_id)


def webhook_delivery_finish(
    *,
    delivery_id: int,
    attempt: int,
    state: str,
    next_attempt_at: datetime | None,
    status: int | None,
    error: str,
    now: datetime,
) -> bool:
    """Record the outcome of attempt ``attempt``; False when the row has moved on since
    (a lease that ran out while this attempt was still being answered)."""
    from calls.models import WebhookDelivery, WebhookState

    return bool(
        WebhookDelivery.objects.filter(pk=delivery_id, state=WebhookState.PENDING, attempts=attempt).update(
            state=state,
            next_attempt_at=next_attempt_at,
            delivered_at=now if state == WebhookState.DELIVERED else None,
            last_status=status,
            last_error=error[:2000],
        )
    )


def webhook_deliveries_due(*, now: datetime, limit: int = DUE_PER_PASS) -> list[int]:
    """Ids of the pending reports whose next attempt is due, the longest waiting first."""
    from calls.models import WebhookDelivery, WebhookState

    return list(
        WebhookDelivery.objects.filter(state=WebhookState.PENDING, next_attempt_at__lte=now)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def _send(report: dict[str, Any], *, attempt: int) -> tuple[int | None, str]:
    """POST the report once, signed now. Returns (HTTP status or None, error text)."""
    body = json.dumps(report, separators=(",", ":"), sort_keys=True).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "VantumVoice-Webhook/1",
        SIGNATURE_HEADER: sign(body, secret=settings.CALL_WEBHOOK_SECRET, timestamp=int(time.time())),
        "X-Vantum-Delivery": f"{report.get('sessionId', '')}/{attempt}",
    }
    try:
        return _post(settings.CALL_WEBHOOK_URL, body, headers, settings.CALL_WEBHOOK_TIMEOUT), ""
    except (OSError, http.client.HTTPException) as error:  # refused, reset, DNS, timeout, garbage
        return None, f"{type(error).__name__}: {error}"


def backoff_seconds(attempt: int) -> float:
    """The pause after failed attempt ``attempt`` (1-based): doubling, capped."""
    return min(settings.CALL_WEBHOOK_BACKOFF_SECONDS * 2 ** (attempt - 1), BACKOFF_MAX_SECONDS)


def call_report_attempt(*, delivery_id: int, now: datetime | None = None) -> str | None:
    """One attempt at one due report, if this pass wins its lease (synchronous: run it in
    a thread). Returns the report's state afterwards, or None when it was not claimed."""
    from calls.models import WebhookDelivery, WebhookState

    now = now or timezone.now()
    lease = timedelta(seconds=settings.CALL_WEBHOOK_TIMEOUT + LEASE_MARGIN_SECONDS)
    attempt = webhook_delivery_claim(delivery_id=delivery_id, now=now, lease=lease)
    if attempt is None:
        return None
    delivery = WebhookDelivery.objects.select_related("call").get(pk=delivery_id)
    session_id = delivery.call.session_id
    report = call_report(session_id=session_id, base_url=settings.VANTUM_PUBLIC_URL)
    if report is None:  # the call was deleted meanwhile (its row goes with it)
        return None
    status, error = _send(report, attempt=attempt)
    done_at = timezone.now()
    if status is not None and 200 <= status < 300:
        state, next_at = WebhookState.DELIVERED, None
        telemetry.WEBHOOKS_DELIVERED.inc()
        logger.info("call=%s webhook delivered (attempt %d)", session_id, attempt)
    elif status is not None and 400 <= status < 500 and status != 429:
        state, next_at = WebhookState.FAILED, None  # refused: sending it again will not help
        telemetry.WEBHOOKS_REFUSED.inc()
        logger.error("call=%s WEBHOOK REFUSED by the receiver: HTTP %d (not retried)", session_id, status)
    elif attempt > settings.CALL_WEBHOOK_RETRIES or done_at - delivery.created_at >= timedelta(
        seconds=settings.CALL_WEBHOOK_MAX_AGE_SECONDS
    ):
        state, next_at = WebhookState.FAILED, None
        telemetry.WEBHOOKS_LOST.inc()
        logger.error(
            "call=%s WEBHOOK LOST: given up after %d attempts over %.0fs, last: %s",
            session_id,
            attempt,
            (done_at - delivery.created_at).total_seconds(),
            error or f"HTTP {status}",
        )
    else:
        state = WebhookState.PENDING
        next_at = done_at + timedelta(seconds=backoff_seconds(attempt))
        logger.warning(
            "call=%s webhook attempt %d failed (%s); next at %s",
            session_id,
            attempt,
            error or f"HTTP {status}",
            next_at.isoformat(timespec="seconds"),
        )
    if not webhook_delivery_finish(
        delivery_id=delivery_id,
        attempt=attempt,
        state=state,
        next_attempt_at=next_at,
        status=status,
        error=error,
        now=done_at,
    ):
        logger.warning("call=%s webhook attempt %d outlived its lease: outcome dropped", session_id, attempt)
    return state


def call_reports_deliver_due(*, now: datetime | None = None) -> int:
    """A retry pass: one attempt at each due report (synchronous). Returns how many
    attempts this pass made (reports another pass holds are skipped)."""
    from calls.models import WebhookDelivery, WebhookState

    now = now or timezone.now()
    made = 0
    for delivery_id in webhook_deliveries_due(now=now):
        if call_report_attempt(delivery_id=delivery_id, now=now) is not None:
            made += 1
    telemetry.WEBHOOKS_PENDING.set(WebhookDelivery.objects.filter(state=WebhookState.PENDING).count())
    return made


def call_report_deliver_now(*, session_id: uuid.UUID | str) -> str | None:
    """The first attempt at a just-ended call's report (synchronous). None when its row is
    not stored yet (spooled through a database outage: the retry pass sends it later)."""
    from calls.models import WebhookDelivery, WebhookState

    delivery_id = (
        WebhookDelivery.objects.filter(call__session_id=session_id, state=WebhookState.PENDING)
        .values_list("pk", flat=True)
        .first()
    )
    if delivery_id is None:
        return None
    return call_report_attempt(delivery_id=delivery_id)


async def _deliver_now(session_id: uuid.UUID | str) -> None:
    from channels.db import database_sync_to_async

    from calls.recorder import database_unreachable

    try:
        await database_sync_to_async(call_report_deliver_now, thread_sensitive=False)(session_id=session_id)
    except Exception as error:
        if not database_unreachable(error):
            logger.exception("call=%s webhook: first attempt failed; the retry pass will send it", session_id)
            return
        logger.warning("call=%s webhook: database unreachable; the retry pass will send it", session_id)


def schedule_call_report(*, session_id: uuid.UUID | str) -> asyncio.Task[Any] | None:
    """Make the first attempt at the report in the background, once the call's writes are
    done (the hang-up does not wait for it; a report it does not deliver stays in the
    outbox for the retry pass). Returns the task, or None when no webhook is configured."""
    if not settings.CALL_WEBHOOK_URL:
        return None
    task = asyncio.get_running_loop().create_task(_deliver_now(session_id))
    _background.add(task)  # keep a reference: the loop holds tasks only weakly
    task.add_done_callback(_background.discard)
    return task


_retrier_lock = threading.Lock()
_retrier: threading.Thread | None = None


def call_reports_retry_soon() -> None:
    """Start a retry pass in a thread of its own, unless one is still running (called by
    the heartbeat each beat: slow receivers must not hold its beat up)."""
    global _retrier
    if not settings.CALL_WEBHOOK_URL:
        return
    with _retrier_lock:
        if _retrier is not None and _retrier.is_alive():
            return
        _retrier = threading.Thread(target=_retry_pass, name="vantum-webhook-retry", daemon=True)
        _retrier.start()


def _retry_pass() -> None:
    from calls.recorder import database_unreachable

    try:
        call_reports_deliver_due()
    except Exception as error:
        if database_unreachable(error):
            logger.warning("webhook retry pass: database unreachable (%s); next beat", error)
        else:
            logger.exception("webhook retry pass failed; next beat")
    finally:
        connection.close()
