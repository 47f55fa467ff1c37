"""Meetings and callbacks: the services' checks, the tools the model calls, the admin pages."""

from __future__ import annotations

import datetime as dt
import json
import uuid
import zoneinfo

import pytest
from django.utils import timezone

from bookings import services
from bookings.hours import parse_working_hours
from bookings.models import Callback, Meeting
from bookings.services import BookingError
from bookings.tools import call_tool_registry
from calls import services as call_services
from calls.models import Call
from llm.tools import ToolContext
from vantum.env import EnvError

LONDON = parse_working_hours(
    timezone="Europe/London", hours="09:00-17:00", days=["mon", "tue", "wed", "thu", "fri"]
)
ZONE = zoneinfo.ZoneInfo("Europe/London")
NOW = dt.datetime(2030, 1, 7, 12, 0, tzinfo=ZONE)  # a Monday, noon in London
TUESDAY_10 = dt.datetime(2030, 1, 8, 10, 0, tzinfo=ZONE)


def _call() -> uuid.UUID:
    session_id = uuid.uuid4()
    call_services.call_start(session_id=session_id, started_at=timezone.now(), prompt_version_id=None)
    return session_id


def _book(session_id, start, minutes=30, **extra):
    return services.meeting_book(
        session_id=session_id, start=start, duration_minutes=minutes, hours=LONDON, now=NOW, **extra
    )


def test_working_hours_settings_are_checked_with_the_variable_named():
    with pytest.raises(EnvError, match="BOOKING_TIMEZONE"):
        parse_working_hours(timezone="Mars/Olympus", hours="09:00-17:00", days=["mon"])
    with pytest.raises(EnvError, match=r"BOOKING_WORKING_HOURS.*HH:MM-HH:MM"):
        parse_working_hours(timezone="UTC", hours="9 to 5", days=["mon"])
    with pytest.raises(EnvError, match="closing time must be after opening time"):
        parse_working_hours(timezone="UTC", hours="17:00-09:00", days=["mon"])
    with pytest.raises(EnvError, match=r"BOOKING_WORKING_DAYS.*'funday'"):
        parse_working_hours(timezone="UTC", hours="09:00-17:00", days=["mon", "funday"])
    assert LONDON.describe() == "Mon-Fri 09:00-17:00 (Europe/London)"


@pytest.mark.django_db
def test_a_meeting_is_booked_for_the_call_and_the_call_is_marked_meeting_booked():
    session_id = _call()
    meeting = _book(session_id, TUESDAY_10, attendee_email=" ana@example.com ", notes="demo")
    assert (meeting.start, meeting.end) == (TUESDAY_10, TUESDAY_10 + dt.timedelta(minutes=30))
    assert meeting.call.session_id == session_id
    assert meeting.attendee_email == "ana@example.com"
    call = Call.objects.get(session_id=session_id)
    assert (call.outcome, call.outcome_source) == ("meeting_booked", "agent")
    assert call.outcome_summary == "Meeting Tuesday 8 January 2030 at 10:00 (Europe/London)"


@pytest.mark.django_db
def test_a_past_time_is_refused_and_nothing_is_stored():
    with pytest.raises(BookingError) as refused:
        _book(_call(), NOW - dt.timedelta(hours=1))
    assert str(refused.value) == (
        "Monday 7 January 2030 at 11:00 (Europe/London) is in the past (it is now "
        "Monday 7 January 2030 at 12:00 (Europe/London)). Offer a future time."
    )
    assert Meeting.objects.count() == 0


@pytest.mark.django_db
def test_times_outside_working_hours_are_refused():
    saturday = dt.datetime(2030, 1, 12, 10, 0, tzinfo=ZONE)
    late = dt.datetime(2030, 1, 8, 16, 45, tzinfo=ZONE)  # would end at 17:15
    for start in (saturday, late):
        with pytest.raises(
            BookingError, match=r"outside working hours \(Mon-Fri 09:00-17:00 \(Europe/London\)\)"
        ):
            _book(None, start)
    assert _book(None, dt.datetime(2030, 1, 8, 16, 30, tzinfo=ZONE)).end.astimezone(ZONE).hour == 17


@pytest.mark.django_db
def test_a_double_booking_of_the_same_slot_is_refused_and_the_next_free_slot_named():
    _book(_call(), TUESDAY_10)
    second_call = _call()
    with pytest.raises(BookingError) as refused:
        _book(second_call, TUESDAY_10)
    assert str(refused.value) == (
        "Tuesday 8 January 2030 at 10:00 (Europe/London) is already booked. "
        "The next free slot is Tuesday 8 January 2030 at 10:30 (Europe/London)."
    )
    assert refused.value.next_free == dt.datetime(2030, 1, 8, 10, 30, tzinfo=ZONE)
    # An overlapping slot is refused too; the call that was refused has no outcome.
    with pytest.raises(BookingError, match="already booked"):
        _book(second_call, TUESDAY_10 + dt.timedelta(minutes=15), minutes=45)
    assert Meeting.objects.count() == 1
    assert Call.objects.get(session_id=second_call).outcome == ""


@pytest.mark.django_db
def test_a_time_in_utc_or_without_offset_is_read_in_the_business_timezone():
    assert services.booking_time_parse(text="2030-07-09T10:00", hours=LONDON) == dt.datetime(
        2030, 7, 9, 10, 0, tzinfo=ZONE
    )
    assert services.booking_time_parse(text="2030-07-09T09:00Z", hours=LONDON).astimezone(ZONE).hour == 10
    with pytest.raises(BookingError, match=r"'next tuesday' is not a date and time\. Use ISO 8601"):
        services.booking_time_parse(text="next tuesday", hours=LONDON)


@pytest.mark.django_db
def test_bad_duration_and_email_are_refused():
    with pytest.raises(BookingError, match=r"A meeting lasts 15 to 240 minutes, not 5\."):
        _book(None, TUESDAY_10, minutes=5)
    with pytest.raises(BookingError, match=r"'ana@' is not a valid e-mail address\."):
        _book(None, TUESDAY_10, attendee_email="ana@")


@pytest.mark.django_db
def test_a_callback_is_a_task_for_staff_and_never_replaces_a_booked_meeting():
    session_id = _call()
    callback = services.callback_schedule(
        session_id=session_id, when=TUESDAY_10, reason="after budget review", hours=LONDON, now=NOW
    )
    assert (callback.status, callback.reason, callback.call.session_id) == (
        "open",
        "after budget review",
        session_id,
    )
    assert Call.objects.get(session_id=session_id).outcome == "callback"
    _book(session_id, TUESDAY_10 + dt.timedelta(days=1))
    services.callback_schedule(session_id=session_id, when=TUESDAY_10, hours=LONDON, now=NOW)
    assert Call.objects.get(session_id=session_id).outcome == "meeting_booked"
    with pytest.raises(BookingError, match="is in the past"):
        services.callback_schedule(session_id=session_id, when=NOW, hours=LONDON, now=NOW)


@pytest.mark.django_db
def test_a_booking_made_before_the_call_row_was_written_is_linked_at_hang_up():
    session_id = uuid.uuid4()
    meeting = _book(session_id, TUESDAY_10)
    assert meeting.call is None
    call_services.call_start(session_id=session_id, started_at=timezone.now(), prompt_version_id=None)
    services.bookings_link_call(session_id=session_id)
    meeting.refresh_from_db()
    assert meeting.call.session_id == session_id
    assert Call.objects.get(session_id=session_id).outcome == "meeting_booked"


# ------------------------------------------------------------------ the tools the model calls


@pytest.fixture
def london(settings):
    settings.BOOKING_HOURS = LONDON


def _next_tuesday_10() -> str:
    today = timezone.now().astimezone(ZONE).date()
    days = (1 - today.weekday() - 1) % 7 + 1
    return f"{today + dt.timedelta(days=days):%Y-%m-%d}T10:00"


@pytest.mark.django_db(transaction=True)
async def test_book_meeting_tool_books_and_refuses_with_a_result_the_model_can_speak(london):
    from channels.db import database_sync_to_async

    session_id = await database_sync_to_async(_call)()
    registry = call_tool_registry(timeout=5)
    context = ToolContext(call_id=str(session_id))
    start = _next_tuesday_10()
    arguments = json.dumps({"start": start, "duration_minutes": 30, "attendee_email": "ana@example.com"})

    booked = await registry.run(name="book_meeting", arguments=arguments, context=context)
    again = await registry.run(name="book_meeting", arguments=arguments, context=context)
    past = await registry.run(
        name="book_meeting",
        arguments=json.dumps({"start": "2020-01-07T10:00", "duration_minutes": 30}),
        context=context,
    )

    result = json.loads(booked.content)
    assert result["ok"] is True
    assert result["booked"].endswith("at 10:00 (Europe/London), 30 minutes")
    assert result["start"].startswith(start)
    refused = json.loads(again.content)
    assert refused["ok"] is False
    assert refused["error"].startswith(
        result["booked"].split(",")[0] + " is already booked. The next free slot is "
    )
    assert refused["next_free_start"].startswith(start[:11] + "10:30")
    assert json.loads(past.content)["error"].startswith(
        "Tuesday 7 January 2020 at 10:00 (Europe/London) is in the past"
    )
    assert await database_sync_to_async(Meeting.objects.count)() == 1


@pytest.mark.django_db(transaction=True)
async def test_end_call_tool_stores_the_outcome_and_asks_to_end_the_call(london):
    from channels.db import database_sync_to_async

    session_id = await database_sync_to_async(_call)()
    registry = call_tool_registry(timeout=5)
    result = await registry.run(
        name="end_call",
        arguments=json.dumps({"outcome": "not_interested", "summary": "Happy with their agency"}),
        context=ToolContext(call_id=str(session_id)),
    )
    assert result.ends_call is True and result.ok is True
    call = await database_sync_to_async(Call.objects.get)(session_id=session_id)
    assert (call.outcome, call.outcome_source, call.outcome_summary) == (
        "not_interested",
        "agent",
        "Happy with their agency",
    )
    bad = await registry.run(
        name="end_call", arguments='{"outcome": "sold"}', context=ToolContext(call_id=str(session_id))
    )
    assert json.loads(bad.content)["error"].startswith(
        "Invalid arguments: 'outcome' must be one of meeting_booked"
    )
    assert bad.ends_call is False


@pytest.mark.django_db(transaction=True)
async def test_end_call_refuses_an_outcome_no_booking_in_this_call_backs(london):
    from channels.db import database_sync_to_async

    session_id = await database_sync_to_async(_call)()
    other_call = await database_sync_to_async(_call)()
    registry = call_tool_registry(timeout=5)
    context = ToolContext(call_id=str(session_id))
    # Another call's meeting and callback do not count for this one.
    await registry.run(
        name="book_meeting",
        arguments=json.dumps({"start": _next_tuesday_10(), "duration_minutes": 30}),
        context=ToolContext(call_id=str(other_call)),
    )
    await registry.run(
        name="schedule_callback",
        arguments=json.dumps({"when": _next_tuesday_10()}),
        context=ToolContext(call_id=str(other_call)),
    )

    claimed = await registry.run(name="end_call", arguments='{"outcome": "meeting_booked"}', context=context)
    callback = await registry.run(name="end_call", arguments='{"outcome": "callback"}', context=context)

    assert (claimed.ok, claimed.ends_call) == (False, False)
    assert json.loads(claimed.content)["error"] == (
        "No meeting was booked in this call, so the outcome cannot be meeting_booked. If the "
        "caller agreed to a time, book it with book_meeting first; otherwise end the call "
        "with the outcome that applies."
    )
    assert (callback.ok, callback.ends_call) == (False, False)
    assert json.loads(callback.content)["error"].startswith(
        "No callback was scheduled in this call, so the outcome cannot be callback."
    )
    assert (await database_sync_to_async(Call.objects.get)(session_id=session_id)).outcome == ""

    # Once the meeting is booked in this call, the same end_call ends it as meeting_booked.
    booked = await registry.run(
        name="book_meeting",
        arguments=json.dumps({"start": f"{_next_tuesday_10()[:11]}11:00", "duration_minutes": 30}),
        context=context,
    )
    assert json.loads(booked.content)["ok"] is True
    ended = await registry.run(name="end_call", arguments='{"outcome": "meeting_booked"}', context=context)
    assert (ended.ok, ended.ends_call) == (True, True)
    call = await database_sync_to_async(Call.objects.get)(session_id=session_id)
    assert (call.outcome, call.outcome_source) == ("meeting_booked", "agent")


@pytest.mark.django_db
def test_a_queued_meeting_booked_outcome_without_a_meeting_is_stored_as_no_decision():
    # end_call could not read the bookings (database down) and queued the outcome unchecked.
    session_id = _call()
    stored = services.call_outcome_from_agent(session_id=session_id, outcome="meeting_booked", summary="s")
    assert stored == "no_decision"
    assert services.call_outcome_from_agent(session_id=session_id, outcome="callback") == "no_decision"
    assert Call.objects.get(session_id=session_id).outcome == "no_decision"


def test_the_tool_descriptions_tell_the_model_the_date_timezone_and_hours(london):
    schemas = {s["function"]["name"]: s["function"] for s in call_tool_registry(timeout=5).schemas()}
    assert set(schemas) == {"book_meeting", "schedule_callback", "end_call"}
    description = schemas["book_meeting"]["description"]
    assert "Mon-Fri 09:00-17:00 (Europe/London)" in description
    assert f"{timezone.now().astimezone(ZONE):%Y-%m-%d}" in description
    assert schemas["book_meeting"]["parameters"]["required"] == ["start", "duration_minutes"]


# ------------------------------------------------------------------ admin


@pytest.mark.django_db
def test_admin_lists_meetings_and_callbacks_with_a_link_to_their_call(admin_client):
    session_id = _call()
    _book(session_id, TUESDAY_10, attendee_email="ana@example.com")
    services.callback_schedule(session_id=session_id, when=TUESDAY_10, reason="budget", hours=LONDON, now=NOW)
    call = Call.objects.get(session_id=session_id)
    call_url = f"/admin/calls/call/{call.pk}/change/"
    meetings = admin_client.get("/admin/bookings/meeting/").content.decode()
    callbacks = admin_client.get("/admin/bookings/callback/").content.decode()
    assert "ana@example.com" in meetings and call_url in meetings
    assert "budget" in callbacks and call_url in callbacks
    assert Callback.objects.count() == 1


@pytest.mark.django_db
def test_the_call_view_shows_each_tool_call_with_its_arguments_and_result(admin_client):
    session_id = _call()
    call_services.message_record_assistant(
        session_id=session_id,
        seq=2,
        text="You're booked.",
        raw_text="You're booked.",
        chunks=[{"index": 0, "text": "You're booked.", "spoken": True, "fallback": False}],
        interrupted=False,
        fallback_tier=None,
        error_kind="",
        utterance_id="u1",
        created_at=timezone.now(),
        metrics={},
        tool_calls=[
            {
                "id": "c1",
                "name": "book_meeting",
                "arguments": '{"start": "x"}',
                "ok": False,
                "result": '{"error": "taken"}',
            },
            {
                "id": "c2",
                "name": "book_meeting",
                "arguments": '{"start": "y"}',
                "ok": True,
                "result": '{"ok": true}',
            },
        ],
    )
    call = Call.objects.get(session_id=session_id)
    page = admin_client.get(f"/admin/calls/call/{call.pk}/change/").content.decode()
    assert page.count('data-testid="tool-call"') == 2
    assert "book_meeting · refused" in page and "book_meeting · done" in page
    assert "{&quot;start&quot;: &quot;y&quot;}" in page


@pytest.mark.django_db(transaction=True)
def test_a_booking_made_while_another_call_writes_waits_for_it_instead_of_failing():
    # Another call's write queue holds SQLite's write lock for a moment (PostgreSQL rows
    # lock per row; this is about the embedded default). CI once saw the booking fail
    # with "database is locked" here: a transaction that read and then wanted to write.
    import threading

    from django.db import connection, connections, transaction

    if connection.vendor != "sqlite":
        pytest.skip("SQLite's database-wide write lock")
    session_id = _call()
    writing, done = threading.Event(), threading.Event()

    def other_call_writes() -> None:
        try:
            with transaction.atomic():
                call_services.call_start(
                    session_id=uuid.uuid4(), started_at=timezone.now(), prompt_version_id=None
                )
                writing.set()
                done.wait(0.5)  # still inside its transaction
        finally:
            connections.close_all()

    other = threading.Thread(target=other_call_writes)
    other.start()
    assert writing.wait(5)
    meeting = _book(session_id, TUESDAY_10)
    done.set()
    other.join(5)
    assert Meeting.objects.get().pk == meeting.pk
    assert Call.objects.get(session_id=session_id).outcome == "meeting_booked"


def _edit(admin_client, meeting: Meeting, *, day: str, time: str, minutes: int = 30, status: str = "booked"):
    return admin_client.post(
        f"/admin/bookings/meeting/{meeting.pk}/change/",
        {
            "start_0": day,
            "start_1": time,
            "duration_minutes": str(minutes),
            "attendee_email": meeting.attendee_email,
            "notes": "moved by staff",
            "status": status,
        },
    )


@pytest.mark.django_db
def test_moving_a_meeting_in_admin_runs_the_booking_checks_and_recomputes_its_end(
    admin_client, london, settings
):
    settings.TIME_ZONE = "Europe/London"  # the admin's times are read in the business timezone
    today = timezone.now().astimezone(ZONE).date()
    tuesday = today + dt.timedelta(days=(1 - today.weekday()) % 7 + 14)  # in two to three weeks
    at = lambda hour, minute=0: dt.datetime.combine(tuesday, dt.time(hour, minute), tzinfo=ZONE)  # noqa: E731
    meeting = services.meeting_book(session_id=_call(), start=at(10), duration_minutes=30, hours=LONDON)
    services.meeting_book(
        session_id=_call(), start=at(11), duration_minutes=30, hours=LONDON
    )  # another call's
    day, saturday = f"{tuesday:%Y-%m-%d}", f"{tuesday + dt.timedelta(days=4):%Y-%m-%d}"

    refusals = {
        "overlap": _edit(admin_client, meeting, day=day, time="10:45:00"),
        "saturday": _edit(admin_client, meeting, day=saturday, time="10:00:00"),
        "past": _edit(admin_client, meeting, day="2020-01-07", time="10:00:00"),
        "too long": _edit(admin_client, meeting, day=day, time="14:00:00", minutes=300),
    }
    errors = {
        name: [str(e) for e in r.context["adminform"].form.non_field_errors()] for name, r in refusals.items()
    }
    assert errors == {
        "overlap": [
            f"Not moved: {services.spoken_time(at(10, 45), LONDON)} overlaps another booked meeting. "
            f"The next free slot is {services.spoken_time(at(11, 30), LONDON)}."
        ],
        "saturday": [
            f"Not moved: {services.spoken_time(at(10) + dt.timedelta(days=4), LONDON)} is outside "
            "working hours (Mon-Fri 09:00-17:00 (Europe/London))."
        ],
        "past": [errors["past"][0]],
        "too long": ["Not moved: A meeting lasts 15 to 240 minutes, not 300."],
    }
    assert errors["past"][0].startswith(
        "Not moved: Tuesday 7 January 2020 at 10:00 (Europe/London) is in the past"
    )
    meeting.refresh_from_db()
    assert (meeting.start, meeting.end, meeting.notes) == (at(10), at(10, 30), "")

    # A move that overlaps only the meeting's own old slot is fine; end follows start and length.
    moved = _edit(admin_client, meeting, day=day, time="10:15:00", minutes=45)
    assert moved.status_code == 302
    meeting.refresh_from_db()
    assert (meeting.start, meeting.end, meeting.duration_minutes, meeting.notes) == (
        at(10, 15),
        at(11),
        45,
        "moved by staff",
    )
    # The recomputed end is what the next booking is checked against: 10:45 is now taken.
    with pytest.raises(BookingError, match="already booked"):
        services.meeting_book(session_id=_call(), start=at(10, 45), duration_minutes=15, hours=LONDON)
