"""The sales call's tools for the model: ``book_meeting``, ``schedule_callback``, ``end_call``.

Each is a thin async wrapper around a ``bookings.services`` function, run in a worker thread
with ``database_sync_to_async``; the model gets a short JSON result it can speak from
("booked for Tuesday 1 December 2026 at 10:00") or the refusal's reason. The LLM core never
imports this module: the call layer builds one registry per call (``call_tool_registry``).
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable
from typing import Any

from channels.db import database_sync_to_async
from django.db import DatabaseError
from django.utils import timezone

from bookings import services
from bookings.services import BookingError
from llm.tools import Tool, ToolContext, ToolError, ToolRegistry, ToolResult

logger = logging.getLogger(__name__)

# Queues a write that belongs to the call (``TranscriptRecorder.record``): run in order after
# the call's own row, retried and spooled through a database outage.
RecordWrite = Callable[..., None]

END_OUTCOMES = ["meeting_booked", "callback", "not_interested", "no_decision", "do_not_call"]


def _when(text: str) -> Any:
    try:
        return services.booking_time_parse(text=text)
    except BookingError as error:
        raise ToolError(str(error)) from None


def _session(context: ToolContext) -> uuid.UUID:
    return uuid.UUID(context.call_id)


async def _outcome_store(
    record: RecordWrite | None, session_id: uuid.UUID, outcome: str, summary: str
) -> None:
    """Store the agent's outcome for the call. With the call's write queue it waits behind
    the call's row (a tool may run before that row is written, right after the call
    started); without one (tools run on their own) it is written at once."""
    if record is not None:
        record(services.call_outcome_from_agent, session_id=session_id, outcome=outcome, summary=summary)
    else:
        await database_sync_to_async(services.call_outcome_from_agent)(
            session_id=session_id, outcome=outcome, summary=summary
        )


async def book_meeting(
    context: ToolContext,
    *,
    record: RecordWrite | None = None,
    start: str,
    duration_minutes: int,
    attendee_email: str = "",
    notes: str = "",
) -> dict[str, Any]:
    when = _when(start)
    try:
        meeting = await database_sync_to_async(services.meeting_book)(
            session_id=_session(context),
            start=when,
            duration_minutes=duration_minutes,
            attendee_email=attendee_email,
            notes=notes,
            store_outcome=False,
        )
    except BookingError as error:
        data = {}
        if error.next_free is not None:
            data["next_free_start"] = error.next_free.astimezone(
                services.working_hours().timezone
            ).isoformat()
        raise ToolError(str(error), data=data) from None
    await _outcome_store(
        record,
        _session(context),
        services.Outcome.MEETING_BOOKED,
        f"Meeting {services.spoken_time(meeting.start)}",
    )
    return {
        "booked": f"{services.spoken_time(meeting.start)}, {meeting.duration_minutes} minutes",
        "start": meeting.start.astimezone(services.working_hours().timezone).isoformat(),
        "attendee_email": meeting.attendee_email or None,
    }


async def schedule_callback(
    context: ToolContext, *, record: RecordWrite | None = None, when: str, reason: str = ""
) -> dict[str, Any]:
    moment = _when(when)
    try:
        callback = await database_sync_to_async(services.callback_schedule)(
            session_id=_session(context), when=moment, reason=reason, store_outcome=False
        )
    except BookingError as error:
        raise ToolError(str(error)) from None
    summary = f"Call back {services.spoken_time(callback.due_at)}: {callback.reason}".rstrip(": ")
    await _outcome_store(record, _session(context), services.Outcome.CALLBACK, summary)
    return {"callback": services.spoken_time(callback.due_at)}


async def end_call(
    context: ToolContext, *, record: RecordWrite | None = None, outcome: str, summary: str = ""
) -> ToolResult:
    """Store the call's outcome and ask the call layer to end the call after the goodbye.

    ``meeting_booked`` with no meeting booked in this call, or ``callback`` with no callback,
    is refused with an error result (the call goes on), not downgraded to ``no_decision``:
    a model claims a booking it did not make mostly because it promised one and skipped the
    tool, so the caller believes they are booked. The error lets the model book it now or
    end with the outcome that is true; a silent downgrade would hang up on a caller
    expecting a meeting nobody has. Either way the outcome never inflates the booking rate
    the prompt A/B comparison is read from. With the database down the bookings cannot be
    read: the call still ends, and ``call_outcome_from_agent`` checks the queued outcome
    when it is written."""
    session_id = _session(context)
    try:
        # A meeting booked in this call stays the outcome (call_outcome_from_agent keeps it).
        booked = await database_sync_to_async(services.call_has_booked_meeting)(session_id=session_id)
        promised = booked or await database_sync_to_async(services.call_has_callback)(session_id=session_id)
    except DatabaseError:
        # The database is down: still end the call; the queued outcome is applied later.
        logger.warning("call=%s end_call: bookings not readable, outcome %s queued", session_id, outcome)
        booked = promised = None
    if outcome == services.Outcome.MEETING_BOOKED and booked is False:
        raise ToolError(
            "No meeting was booked in this call, so the outcome cannot be meeting_booked. If the "
            "caller agreed to a time, book it with book_meeting first; otherwise end the call "
            "with the outcome that applies."
        )
    if outcome == services.Outcome.CALLBACK and promised is False:
        raise ToolError(
            "No callback was scheduled in this call, so the outcome cannot be callback. If the "
            "caller asked to be called back, schedule it with schedule_callback first; otherwise "
            "end the call with the outcome that applies."
        )
    await _outcome_store(record, session_id, outcome, summary)
    stored = services.Outcome.MEETING_BOOKED if booked else outcome
    return ToolResult.success(
        {"ending": True, "outcome": stored, "next": "Say a short, warm goodbye. The call ends after it."},
        ends_call=True,
    )


def call_tool_registry(*, timeout: float, record: RecordWrite | None = None) -> ToolRegistry:
    """The tools of one call. Descriptions carry today's date, the business timezone and
    working hours, so the model can turn "next Tuesday at ten" into a time.

    ``record`` is the call's write queue: outcomes the tools set are queued there, behind the
    call's own row, so one set a moment after the call started is never lost. Only the
    handlers are the call's own (bound to ``record``); names, descriptions and schemas are
    shared by every call started in the same minute (``_tool_specs``)."""
    return ToolRegistry(
        [
            Tool(
                name=name,
                description=description,
                parameters=parameters,
                handler=functools.partial(run, record=record),
            )
            for name, description, parameters, run in _tool_specs()
        ],
        timeout=timeout,
    )


ToolSpec = tuple[str, str, dict[str, Any], Callable[..., Any]]
_specs_cache: tuple[tuple[str, str], tuple[ToolSpec, ...]] | None = None


def _tool_specs() -> tuple[ToolSpec, ...]:
    """(name, description, JSON schema, handler) of each tool, built once per minute and
    working hours: the descriptions name the current minute. Callers must not change them."""
    global _specs_cache
    hours = services.working_hours()
    now = timezone.now().astimezone(hours.timezone)
    today = f"Now it is {now:%A %Y-%m-%d %H:%M} in {hours.timezone.key}."
    working = f"Working hours: {hours.describe()}."
    if _specs_cache is not None and _specs_cache[0] == (today, working):
        return _specs_cache[1]
    when_help = (
        "ISO 8601 local date and time in the business timezone, e.g. 2026-12-01T10:00 "
        f"({hours.timezone.key}); an explicit offset is also accepted."
    )
    specs: tuple[ToolSpec, ...] = (
        (
            "book_meeting",
            (
                "Book a meeting or demo with the prospect once they agreed to a time. "
                f"{working} {today} Refuses past times, times outside "
                "working hours and taken slots (then it names the next free slot). "
                "Say the result to the caller."
            ),
            {
                "type": "object",
                "properties": {
                    "start": {"type": "string", "minLength": 1, "description": when_help},
                    "duration_minutes": {
                        "type": "integer",
                        "minimum": services.MIN_DURATION,
                        "maximum": services.MAX_DURATION,
                        "description": "Length of the meeting; 30 unless agreed otherwise.",
                    },
                    "attendee_email": {
                        "type": "string",
                        "description": "The prospect's e-mail, if given.",
                    },
                    "notes": {"type": "string", "description": "What the meeting is about."},
                },
                "required": ["start", "duration_minutes"],
                "additionalProperties": False,
            },
            book_meeting,
        ),
        (
            "schedule_callback",
            (
                "Promise to call the prospect back at a time they chose (a task for the sales team). "
                f"{working} {today}"
            ),
            {
                "type": "object",
                "properties": {
                    "when": {"type": "string", "minLength": 1, "description": when_help},
                    "reason": {"type": "string", "description": "Why and about what to call back."},
                },
                "required": ["when"],
                "additionalProperties": False,
            },
            schedule_callback,
        ),
        (
            "end_call",
            (
                "End the call: when the prospect is not interested, asks to stop, or everything is "
                "settled. Say goodbye in the same reply; the call ends after your goodbye was spoken. "
                "Outcome meeting_booked only after book_meeting succeeded in this call, callback "
                "only after schedule_callback did."
            ),
            {
                "type": "object",
                "properties": {
                    "outcome": {"type": "string", "enum": END_OUTCOMES},
                    "summary": {"type": "string", "description": "One sentence for the sales team."},
                },
                "required": ["outcome"],
                "additionalProperties": False,
            },
            end_call,
        ),
    )
    _specs_cache = ((today, working), specs)
    return specs
