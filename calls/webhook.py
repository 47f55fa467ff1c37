"""The optional end-of-call webhook: a signed JSON report POSTed to ``CALL_WEBHOOK_URL``.

The report says what a CRM needs: the outcome, the prospect, a link to the transcript in
admin and the meeting booked, if any. Delivery runs off the call path (a background task
started after the call ended) and is retried with back-off on a connection error, a
timeout or a 5xx/429 answer; a 4xx other than 429 is the receiver refusing the report and
is not retried.

Signature (like Stripe's): header ``X-Vantum-Signature: t=<unix time>,v1=<hex>``, where
``<hex>`` is HMAC-SHA256 with ``CALL_WEBHOOK_SECRET`` of ``"<t>." + body``. The receiver
recomputes it and rejects old timestamps to stop replays (``verify_signature``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from calls import telemetry

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Vantum-Signature"
EVENT_TYPE = "call.ended"
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


@dataclass(frozen=True)
class Delivery:
    delivered: bool
    attempts: int
    status: int | None
    error: str = ""


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


async def deliver(
    report: dict[str, Any],
    *,
    url: str,
    secret: str,
    retries: int = 4,
    timeout: float = 5.0,
    backoff: float = 1.0,
    clock: Callable[[], float] = time.time,
) -> Delivery:
    """POST ``report`` until a 2xx answer, at most ``1 + retries`` times, waiting
    ``backoff * 2**n`` seconds between attempts. The blocking HTTP call runs in a thread.
    Each attempt is signed afresh (its timestamp is the time it is sent)."""
    body = json.dumps(report, separators=(",", ":"), sort_keys=True).encode()
    status: int | None = None
    error = ""
    attempt = 0
    for attempt in range(1, retries + 2):
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "VantumVoice-Webhook/1",
            SIGNATURE_HEADER: sign(body, secret=secret, timestamp=int(clock())),
            "X-Vantum-Delivery": f"{report.get('sessionId', '')}/{attempt}",
        }
        try:
            status = await asyncio.to_thread(_post, url, body, headers, timeout)
            error = ""
        except (OSError, TimeoutError) as exc:  # refused, reset, DNS, timeout
            status, error = None, f"{type(exc).__name__}: {exc}"
        if status is not None and 200 <= status < 300:
            return Delivery(True, attempt, status)
        if status is not None and 400 <= status < 500 and status != 429:
            break  # the receiver refuses this report; sending it again will not help
        if attempt <= retries:
            await asyncio.sleep(backoff * 2 ** (attempt - 1))
    return Delivery(False, attempt, status, error)


async def _ended_call_report(session_id: uuid.UUID | str, *, wait_seconds: float) -> dict[str, Any] | None:
    """The call's report once its rows say it ended. Through a database outage the rows
    arrive late (retried, or spooled and replayed at recovery): wait for them, with a
    growing pause, up to ``wait_seconds``."""
    from channels.db import database_sync_to_async
    from django.conf import settings

    from calls.recorder import database_unreachable

    deadline = time.monotonic() + wait_seconds
    pause = 0.25
    while True:
        try:
            report = await database_sync_to_async(call_report, thread_sensitive=False)(
                session_id=session_id, base_url=settings.VANTUM_PUBLIC_URL
            )
        except Exception as error:
            if not database_unreachable(error):
                raise
            report = None
        if report is not None and report.get("endedAt"):
            return report
        if time.monotonic() + pause > deadline:
            return None
        await asyncio.sleep(pause)
        pause = min(pause * 2, 15.0)


async def send_call_report(*, session_id: uuid.UUID | str) -> Delivery | None:
    """Build and deliver the report of an ended call, if ``CALL_WEBHOOK_URL`` is set."""
    from django.conf import settings

    url = getattr(settings, "CALL_WEBHOOK_URL", "")
    if not url:
        return None
    report = await _ended_call_report(session_id, wait_seconds=settings.CALL_WEBHOOK_WAIT_SECONDS)
    if report is None:
        telemetry.WEBHOOKS_LOST.inc()
        logger.error(
            "call=%s WEBHOOK LOST: the ended call was not readable from the database within %ss",
            session_id,
            settings.CALL_WEBHOOK_WAIT_SECONDS,
        )
        return None
    result = await deliver(
        report,
        url=url,
        secret=settings.CALL_WEBHOOK_SECRET,
        retries=settings.CALL_WEBHOOK_RETRIES,
        timeout=settings.CALL_WEBHOOK_TIMEOUT,
    )
    if result.delivered:
        logger.info("call=%s webhook delivered (attempt %s)", session_id, result.attempts)
    else:
        logger.warning(
            "call=%s webhook not delivered after %s attempts: %s",
            session_id,
            result.attempts,
            result.error or f"HTTP {result.status}",
        )
    return result


def schedule_call_report(*, session_id: uuid.UUID | str) -> asyncio.Task[Any] | None:
    """Start delivering the report in the background (the call's hang-up does not wait
    for it). Returns the task, or None when no webhook is configured."""
    from django.conf import settings

    if not getattr(settings, "CALL_WEBHOOK_URL", ""):
        return None
    task = asyncio.get_running_loop().create_task(send_call_report(session_id=session_id))
    _background.add(task)  # keep a reference: the loop holds tasks only weakly
    task.add_done_callback(_background.discard)
    return task
