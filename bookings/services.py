"""Booking meetings and scheduling callbacks, with the checks a salesperson would make.

Every refusal is a ``BookingError`` whose message says what was wrong and, where it helps,
what would work instead (the agent reads it to the caller). Keyword-only arguments; times
are timezone-aware (naive input is read in the business timezone by ``booking_time_parse``).
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone

from bookings.hours import WorkingHours
from bookings.models import Callback, Meeting
from calls.models import Call, Outcome, OutcomeSource
from calls.services import call_set_outcome

logger = logging.getLogger(__name__)

MIN_DURATION, MAX_DURATION = 15, 240
SLOT_STEP = dt.timedelta(minutes=30)
SEARCH_DAYS = 14


class BookingError(Exception):
    """A booking refused, with a message fit to be read to the caller; ``next_free`` is the
    first free start after a taken slot, when there is one."""

    def __init__(self, message: str, *, next_free: dt.datetime | None = None) -> None:
        super().__init__(message)
        self.next_free = next_free


def working_hours() -> WorkingHours:
    return settings.BOOKING_HOURS


def booking_time_parse(*, text: str, hours: WorkingHours | None = None) -> dt.datetime:
    """An ISO 8601 date and time; without an offset it is local time in the business timezone."""
    hours = hours or working_hours()
    try:
        moment = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BookingError(
            f"{text!r} is not a date and time. Use ISO 8601, e.g. 2026-12-01T10:00 "
            f"(local time in {hours.timezone.key})."
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=hours.timezone)
    return moment


def spoken_time(moment: dt.datetime, hours: WorkingHours | None = None) -> str:
    """e.g. ``"Tuesday 1 December 2026 at 10:00 (Europe/London)"``."""
    hours = hours or working_hours()
    local = moment.astimezone(hours.timezone)
    return f"{local:%A} {local.day} {local:%B %Y at %H:%M} ({hours.timezone.key})"


def _check_bookable(
    *, start: dt.datetime, end: dt.datetime, hours: WorkingHours, now: dt.datetime, what: str
) -> None:
    if timezone.is_naive(start):
        raise BookingError("The time has no timezone.")  # precondition; booking_time_parse adds one
    if start <= now:
        raise BookingError(
            f"{spoken_time(start, hours)} is in the past (it is now {spoken_time(now, hours)}). "
            f"Offer a future time."
        )
    if not hours.contains(start, end):
        raise BookingError(f"{spoken_time(start, hours)} is outside working hours ({hours.describe()}).")
    if start - now > dt.timedelta(days=365):
        raise BookingError(f"A {what} can be booked at most a year ahead.")


def _overlapping(start: dt.datetime, end: dt.datetime):
    return Meeting.objects.filter(status=Meeting.Status.BOOKED, start__lt=end, end__gt=start)


def meeting_next_free_start(
    *, after: dt.datetime, duration_minutes: int, hours: WorkingHours | None = None
) -> dt.datetime | None:
    """The first free start within working hours after ``after`` (on the half hour), within
    two weeks; None when nothing is free."""
    hours = hours or working_hours()
    duration = dt.timedelta(minutes=duration_minutes)
    local = after.astimezone(hours.timezone)
    candidate = local.replace(minute=0 if local.minute == 0 else 30, second=0, microsecond=0)
    if candidate <= local:
        candidate += SLOT_STEP
    limit = local + dt.timedelta(days=SEARCH_DAYS)
    busy = list(_overlapping(candidate, limit + duration).order_by("start").values_list("start", "end"))
    while candidate < limit:
        end = candidate + duration
        if hours.contains(candidate, end) and not any(s < end and e > candidate for s, e in busy):
            return candidate
        candidate = (candidate + SLOT_STEP).astimezone(hours.timezone)
    return None


def _call_for(session_id: uuid.UUID | None) -> Call | None:
    if session_id is None:
        return None
    return Call.objects.filter(session_id=session_id).first()


def meeting_book(
    *,
    session_id: uuid.UUID | None,
    start: dt.datetime,
    duration_minutes: int,
    attendee_email: str = "",
    notes: str = "",
    hours: WorkingHours | None = None,
    now: dt.datetime | None = None,
    store_outcome: bool = True,
) -> Meeting:
    """Book a meeting for the call ``session_id`` and mark the call ``meeting_booked``.

    Refuses (``BookingError``) a past time, a time outside working hours, a bad duration or
    e-mail address, and a slot that overlaps a booked meeting (then the next free slot is
    named). Two calls racing for the same start are kept apart by a unique constraint.
    ``store_outcome=False`` leaves the call's outcome to the caller (the call's write queue).
    """
    hours = hours or working_hours()
    now = now or timezone.now()
    end = _meeting_end(start=start, duration_minutes=duration_minutes, hours=hours, now=now)
    attendee_email = attendee_email.strip()
    if attendee_email:
        try:
            validate_email(attendee_email)
        except ValidationError:
            raise BookingError(f"{attendee_email!r} is not a valid e-mail address.") from None
    try:
        with transaction.atomic():
            if _overlapping(start, end).select_for_update().exists():
                raise IntegrityError("overlap")
            meeting = Meeting.objects.create(
                call=_call_for(session_id),
                call_session_id=session_id,
                start=start,
                end=end,
                duration_minutes=duration_minutes,
                attendee_email=attendee_email,
                notes=notes.strip(),
                created_at=now,
            )
    except IntegrityError:
        free = meeting_next_free_start(after=start, duration_minutes=duration_minutes, hours=hours)
        instead = f" The next free slot is {spoken_time(free, hours)}." if free else ""
        raise BookingError(
            f"{spoken_time(start, hours)} is already booked.{instead}", next_free=free
        ) from None
    if session_id is not None and store_outcome:
        _outcome_set(session_id, Outcome.MEETING_BOOKED, f"Meeting {spoken_time(start, hours)}")
    logger.info("call=%s meeting booked at %s", session_id, start.isoformat())
    return meeting


def _meeting_end(
    *, start: dt.datetime, duration_minutes: int, hours: WorkingHours, now: dt.datetime
) -> dt.datetime:
    """The end of a meeting at ``start``, once the slot is bookable (duration in range, not
    past, inside working hours); ``BookingError`` otherwise. Overlaps are checked by the caller,
    under its lock."""
    if not MIN_DURATION <= duration_minutes <= MAX_DURATION:
        raise BookingError(
            f"A meeting lasts {MIN_DURATION} to {MAX_DURATION} minutes, not {duration_minutes}."
        )
    end = start + dt.timedelta(minutes=duration_minutes)
    _check_bookable(start=start, end=end, hours=hours, now=now, what="meeting")
    return end


def meeting_reschedule(
    *,
    meeting: Meeting,
    start: dt.datetime,
    duration_minutes: int,
    hours: WorkingHours | None = None,
    now: dt.datetime | None = None,
) -> Meeting:
    """Move a meeting (staff editing it in admin) to ``start`` for ``duration_minutes``, as
    booked: the checks of ``meeting_book`` (a duration in range, not in the past, inside
    working hours, no overlap with another booked meeting; its own old slot does not count)
    and ``end`` recomputed, so the overlap check of later bookings stays right. A cancelled
    meeting moved here is booked again. Refusals are ``BookingError``; nothing is saved then."""
    hours = hours or working_hours()
    now = now or timezone.now()
    end = _meeting_end(start=start, duration_minutes=duration_minutes, hours=hours, now=now)
    try:
        with transaction.atomic():
            if _overlapping(start, end).exclude(pk=meeting.pk).select_for_update().exists():
                raise IntegrityError("overlap")
            meeting.start, meeting.end, meeting.duration_minutes = start, end, duration_minutes
            meeting.status = Meeting.Status.BOOKED
            meeting.save(update_fields=["start", "end", "duration_minutes", "status"])
    except IntegrityError:
        free = meeting_next_free_start(after=start, duration_minutes=duration_minutes, hours=hours)
        instead = f" The next free slot is {spoken_time(free, hours)}." if free else ""
        raise BookingError(
            f"{spoken_time(start, hours)} overlaps another booked meeting.{instead}", next_free=free
        ) from None
    logger.info("call=%s meeting %s moved to %s", meeting.call_session_id, meeting.pk, start.isoformat())
    return meeting


def callback_schedule(
    *,
    session_id: uuid.UUID | None,
    when: dt.datetime,
    reason: str = "",
    hours: WorkingHours | None = None,
    now: dt.datetime | None = None,
    store_outcome: bool = True,
) -> Callback:
    """Promise a call back at ``when`` (a task for staff) and mark the call ``callback``,
    unless it already booked a meeting (a meeting is the better outcome and stays).
    ``store_outcome=False`` leaves the call's outcome to the caller (the call's write queue)."""
    hours = hours or working_hours()
    now = now or timezone.now()
    _check_bookable(start=when, end=when, hours=hours, now=now, what="callback")
    callback = Callback.objects.create(
        call=_call_for(session_id),
        call_session_id=session_id,
        due_at=when,
        reason=reason.strip(),
        created_at=now,
    )
    if (
        session_id is not None
        and store_outcome
        and not Meeting.objects.filter(call_session_id=session_id, status=Meeting.Status.BOOKED).exists()
    ):
        _outcome_set(
            session_id, Outcome.CALLBACK, f"Call back {spoken_time(when, hours)}: {reason}".rstrip(": ")
        )
    logger.info("call=%s callback scheduled at %s", session_id, when.isoformat())
    return callback


def call_has_booked_meeting(*, session_id: uuid.UUID) -> bool:
    return Meeting.objects.filter(call_session_id=session_id, status=Meeting.Status.BOOKED).exists()


def call_has_callback(*, session_id: uuid.UUID) -> bool:
    return Callback.objects.filter(call_session_id=session_id).exists()


def call_outcome_from_agent(*, session_id: uuid.UUID, outcome: str, summary: str = "") -> str:
    """An outcome the agent's tools set. A meeting booked in this call keeps the outcome
    ``meeting_booked`` (the summary is still stored). Returns the outcome stored.

    Queued on the call's write queue (after the call's row) and replayable from the spool:
    idempotent, and a later outcome overwrites an earlier one, as the agent decided. A
    callback promised after a meeting was booked leaves the meeting's outcome as it was.

    ``meeting_booked`` without a booked meeting, or ``callback`` without a callback, is
    stored as ``no_decision``: the booking rate of the prompt A/B comparison counts these
    outcomes, so they must stand for a row staff can act on. (``end_call`` refuses such an
    outcome before it gets here; this catches the one it could not check, queued while
    the database was down.)"""
    booked = call_has_booked_meeting(session_id=session_id)
    if outcome != Outcome.MEETING_BOOKED and booked:
        if outcome == Outcome.CALLBACK:
            return Outcome.MEETING_BOOKED
        outcome = Outcome.MEETING_BOOKED
    elif (outcome == Outcome.MEETING_BOOKED and not booked) or (
        outcome == Outcome.CALLBACK and not call_has_callback(session_id=session_id)
    ):
        logger.warning(
            "call=%s outcome %s has no booking behind it: stored as no_decision", session_id, outcome
        )
        outcome = Outcome.NO_DECISION
    _outcome_set(session_id, outcome, summary)
    return outcome


def _outcome_set(session_id: uuid.UUID, outcome: str, summary: str) -> None:
    if not call_set_outcome(
        session_id=session_id, outcome=outcome, source=OutcomeSource.AGENT, summary=summary
    ):
        logger.warning("call=%s outcome %s not stored: the call is not stored yet", session_id, outcome)


def bookings_link_call(*, session_id: uuid.UUID) -> None:
    """Attach this call's meetings and callbacks to its row, and give the call their outcome
    if none was stored (both are missed when a tool ran before the queued call row was
    written). Queued by the call layer at hang-up, after the call row; idempotent."""
    call = _call_for(session_id)
    if call is None:
        return
    meetings = Meeting.objects.filter(call_session_id=session_id, status=Meeting.Status.BOOKED)
    callbacks = Callback.objects.filter(call_session_id=session_id)
    meetings.filter(call__isnull=True).update(call=call)
    callbacks.filter(call__isnull=True).update(call=call)
    if call.outcome:
        return
    if meetings.exists():
        _outcome_set(session_id, Outcome.MEETING_BOOKED, "")
    elif callbacks.exists():
        _outcome_set(session_id, Outcome.CALLBACK, "")
