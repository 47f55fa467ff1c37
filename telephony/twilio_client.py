"""The only module that talks to Twilio's REST API (through the ``twilio`` package).

``TWILIO_API_BASE_URL`` points the client at another server (the loopback fake in tests, a
regional edge or a proxy in production): every request the SDK builds for
``https://api.twilio.com`` is sent there instead, through the SDK's own HTTP client.
Calls are synchronous; async callers run them with ``asyncio.to_thread``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

logger = logging.getLogger(__name__)

TWILIO_API = "https://api.twilio.com"
REST_TIMEOUT_SECONDS = 10.0
CLOCK_MARGIN_SECONDS = 120


class TelephonyNotConfigured(RuntimeError):
    """Twilio credentials are missing; the message names the variables."""


class TwilioCallError(RuntimeError):
    """Twilio refused or could not be reached. ``rejected`` is True when Twilio answered with
    an error (the call was certainly not placed), False when the request may have reached it."""

    def __init__(self, message: str, *, rejected: bool) -> None:
        super().__init__(message)
        self.rejected = rejected


class _BaseUrlHttpClient(TwilioHttpClient):
    def __init__(self, base_url: str) -> None:
        super().__init__(timeout=REST_TIMEOUT_SECONDS, max_retries=0)
        self.base_url = base_url

    def request(self, method, url, *args, **kwargs):  # type: ignore[override]
        if url.startswith(TWILIO_API):
            url = self.base_url + url[len(TWILIO_API) :]
        return super().request(method, url, *args, **kwargs)


def configured() -> bool:
    return bool(settings.TWILIO_ACCOUNT_SID and settings.TWILIO_AUTH_TOKEN)


def rest_client() -> Client:
    if not configured():
        raise TelephonyNotConfigured("Set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN to use the phone.")
    base = settings.TWILIO_API_BASE_URL
    http_client = _BaseUrlHttpClient(base) if base else TwilioHttpClient(timeout=REST_TIMEOUT_SECONDS)
    return Client(settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN, http_client=http_client)


@dataclass(frozen=True)
class PlacedCall:
    call_sid: str
    status: str


def call_place(
    *,
    to: str,
    from_: str,
    voice_url: str,
    status_callback: str,
    machine_detection: str | None = None,
) -> PlacedCall:
    """Ask Twilio to dial ``to``; when answered, Twilio fetches TwiML from ``voice_url``."""
    options = {}
    if machine_detection:
        options["machine_detection"] = machine_detection
    try:
        call = rest_client().calls.create(
            to=to,
            from_=from_,
            url=voice_url,
            method="POST",
            status_callback=status_callback,
            status_callback_method="POST",
            status_callback_event=["initiated", "ringing", "answered", "completed"],
            **options,
        )
    except TwilioRestException as error:
        raise TwilioCallError(
            f"Twilio refused the call: {error.msg} (code {error.code})", rejected=True
        ) from None
    except (TwilioException, OSError) as error:
        raise TwilioCallError(f"Twilio could not be reached: {error}", rejected=False) from None
    return PlacedCall(call_sid=call.sid, status=call.status or "queued")


def call_hang_up(*, call_sid: str) -> None:
    """End a call in progress (``status=completed``). A call already over is not an error."""
    try:
        rest_client().calls(call_sid).update(status="completed")
    except TwilioRestException as error:
        if error.status == 404:
            return
        raise TwilioCallError(f"Twilio refused to hang up: {error.msg}", rejected=True) from None
    except (TwilioException, OSError) as error:
        raise TwilioCallError(f"Twilio could not be reached to hang up: {error}", rejected=False) from None


def call_status(*, call_sid: str) -> str | None:
    """Twilio's current status of a call (``in-progress``, ``completed``, ``busy`` ...), or
    None when Twilio does not know the call. Used when its final status callback never came."""
    try:
        call = rest_client().calls(call_sid).fetch()
    except TwilioRestException as error:
        if error.status == 404:
            return None
        raise TwilioCallError(f"Twilio refused the call's status: {error.msg}", rejected=True) from None
    except (TwilioException, OSError) as error:
        raise TwilioCallError(f"Twilio could not be reached: {error}", rejected=False) from None
    return call.status


def calls_to_since(*, to: str, since) -> list[str]:
    """CallSids of calls to ``to`` created since ``since`` (reconciling a lead a worker
    claimed before it died: did its request reach Twilio?)."""
    try:
        calls = rest_client().calls.list(to=to, limit=50)
    except TwilioRestException as error:
        raise TwilioCallError(f"Twilio refused the call list: {error.msg}", rejected=True) from None
    except (TwilioException, OSError) as error:
        raise TwilioCallError(f"Twilio could not be reached: {error}", rejected=False) from None
    # Filtered here: Twilio's StartTime filter skips calls that never started (queued ones).
    # Twilio's dates have whole seconds and its clock is not ours: a margin, and callers
    # ignore the CallSids they already know.
    after = since - timedelta(seconds=CLOCK_MARGIN_SECONDS)
    return [c.sid for c in calls if c.date_created is not None and c.date_created >= after]
