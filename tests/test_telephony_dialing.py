"""Outbound dialing through the real ``twilio`` SDK against the loopback fake REST server:
claiming within limits and calling hours, the do-not-call list, refusals, a request whose
answer was lost (reconciled, never dialed twice), status callbacks, AMD, CSV import, and
hanging up through the REST API after the last words were played."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from calls import live
from telephony import services
from telephony.fake_twilio import FakeTwilio
from telephony.models import Campaign, DoNotCall, Lead, PhoneCall, Prospect
from telephony.testing import TwilioSimulator, caller_speech
from tests.support import BeepEngine, CannedTranscriber, Script, ScriptedProvider, tokens_of

TOKEN = "test-auth-token"
BASE = "https://voice.example.com"
# A Wednesday, 15:00 UTC: 10:00 in New York, 07:00 in Los Angeles, 00:00 in Tokyo (Thursday).
WEDNESDAY_15_UTC = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


@pytest.fixture
def fake_twilio(settings):
    fake = FakeTwilio(account_sid="ACtest", auth_token=TOKEN)
    url = fake.start()
    settings.TWILIO_ACCOUNT_SID = "ACtest"
    settings.TWILIO_AUTH_TOKEN = TOKEN
    settings.TWILIO_PUBLIC_BASE_URL = BASE
    settings.TWILIO_API_BASE_URL = url
    settings.TWILIO_FROM_NUMBER = "+14155550000"
    settings.VAD_ENGINE = "energy"  # the caller's "speech" is a square wave
    yield fake
    fake.stop()


ALL_DAY = {
    "calling_hours_start": "00:00",
    "calling_hours_end": "23:59:59",
    "calling_weekdays": "0,1,2,3,4,5,6",
}


def _campaign(**fields) -> Campaign:
    defaults = {"name": "Autumn", "active": True, "max_concurrent_calls": 2}
    return Campaign.objects.create(**{**defaults, **fields})


def _lead(campaign: Campaign, phone: str, tz: str = "America/New_York", name: str = "P") -> Lead:
    prospect = Prospect.objects.create(name=name, phone=phone, timezone=tz)
    return Lead.objects.create(campaign=campaign, prospect=prospect)


def _dial(campaign: Campaign, now: datetime = WEDNESDAY_15_UTC) -> list[PhoneCall]:
    return [
        services.phone_call_place(phone_call_id=pk)
        for pk in services.leads_claim(campaign_id=campaign.pk, now=now)
    ]


@pytest.mark.django_db
def test_a_pass_dials_up_to_the_limit_within_calling_hours_and_never_the_do_not_call_list(fake_twilio):
    campaign = _campaign(max_concurrent_calls=2)
    ny1 = _lead(campaign, "+12125550101")
    _lead(campaign, "+13105550102", tz="America/Los_Angeles")  # 07:00 there: too early
    dnc = _lead(campaign, "+12125550103")
    ny2 = _lead(campaign, "+12125550104")
    ny3 = _lead(campaign, "+12125550105")
    DoNotCall.objects.create(phone="+12125550103")

    placed = _dial(campaign)

    assert [c.to_number for c in placed] == ["+12125550101", "+12125550104"]
    assert sorted(c.to for c in fake_twilio.calls.values()) == ["+12125550101", "+12125550104"]
    assert all(c.call_sid and c.status == "queued" for c in placed)
    created = fake_twilio.placed_to("+12125550101")[0]
    assert created.url == f"{BASE}/telephony/twilio/voice?attempt={placed[0].public_id}"
    assert created.status_callback == f"{BASE}/telephony/twilio/status?attempt={placed[0].public_id}"
    assert created.from_ == "+14155550000"
    states = {lead.pk: lead.state for lead in Lead.objects.all()}
    assert (states[ny1.pk], states[ny2.pk], states[ny3.pk], states[dnc.pk]) == (
        "in_call",
        "in_call",
        "queued",
        "skipped",
    )
    # The limit holds: two calls in progress, nothing more is dialed.
    assert _dial(campaign) == []
    # One call ends: its slot goes to the next lead.
    services.phone_call_record_status(call_sid=placed[0].call_sid, status="completed")
    assert [c.to_number for c in _dial(campaign)] == ["+12125550105"]
    assert len(fake_twilio.calls) == 3


@pytest.mark.django_db
def test_busy_and_no_answer_are_retried_later_then_given_up(fake_twilio):
    campaign = _campaign(max_attempts=2, retry_minutes=30)
    lead = _lead(campaign, "+12125550111")
    [first] = _dial(campaign)
    services.phone_call_record_status(call_sid=first.call_sid, status="ringing")
    services.phone_call_record_status(call_sid=first.call_sid, status="busy", at=WEDNESDAY_15_UTC)
    lead.refresh_from_db()
    assert (lead.state, lead.next_attempt_at) == ("queued", WEDNESDAY_15_UTC + timedelta(minutes=30))
    assert _dial(campaign, WEDNESDAY_15_UTC + timedelta(minutes=10)) == []
    [second] = _dial(campaign, WEDNESDAY_15_UTC + timedelta(minutes=31))
    services.phone_call_record_status(call_sid=second.call_sid, status="no-answer")
    lead.refresh_from_db()
    assert (lead.state, lead.attempts, lead.outcome) == ("failed", 2, "no-answer")
    first.refresh_from_db()
    assert [s["status"] for s in first.status_history] == ["ringing", "busy"]
    assert (first.status, first.outcome) == ("busy", "busy")


@pytest.mark.django_db
def test_a_call_twilio_refuses_fails_the_lead_with_twilios_reason(fake_twilio):
    campaign = _campaign()
    lead = _lead(campaign, "+12125550121")
    fake_twilio.refuse_next = 1
    [phone_call] = _dial(campaign)
    lead.refresh_from_db()
    assert lead.state == "failed"
    assert "The 'To' number is not valid. (code 21211)" in lead.last_error
    assert (phone_call.status, phone_call.call_sid) == ("failed", None)


@pytest.mark.django_db
def test_a_lost_answer_is_reconciled_with_twilio_and_never_dialed_twice(fake_twilio, settings):
    settings.TELEPHONY_DIAL_STUCK_SECONDS = 60
    campaign = _campaign(**ALL_DAY)
    lead = _lead(campaign, "+12125550131")
    fake_twilio.drop_after_create_next = 1
    now = datetime.now(UTC)
    [phone_call] = _dial(campaign, now)
    lead.refresh_from_db()
    assert (lead.state, phone_call.call_sid) == ("dialing", None)  # unknown: not retried blindly
    assert _dial(campaign, now) == []
    assert services.leads_reconcile_stuck(now=now + timedelta(seconds=30)) == 0  # not stuck yet
    assert services.leads_reconcile_stuck(now=now + timedelta(seconds=90)) == 1
    lead.refresh_from_db()
    phone_call.refresh_from_db()
    assert lead.state == "in_call"
    assert phone_call.call_sid == next(iter(fake_twilio.calls))
    assert len(fake_twilio.placed_to("+12125550131")) == 1


@pytest.mark.django_db
def test_a_claim_that_never_reached_twilio_is_queued_again(fake_twilio, settings):
    settings.TELEPHONY_DIAL_STUCK_SECONDS = 60
    campaign = _campaign(**ALL_DAY)
    lead = _lead(campaign, "+12125550141")
    now = datetime.now(UTC)
    # A worker claimed the lead and died before sending anything.
    [claimed] = services.leads_claim(campaign_id=campaign.pk, now=now)
    assert services.leads_reconcile_stuck(now=now + timedelta(seconds=90)) == 1
    lead.refresh_from_db()
    assert (lead.state, lead.attempts) == ("queued", 0)
    assert PhoneCall.objects.get(pk=claimed).status == "canceled"
    [placed] = _dial(campaign, now + timedelta(seconds=91))
    assert len(fake_twilio.placed_to("+12125550141")) == 1 and placed.call_sid


@pytest.mark.django_db
def test_a_lost_final_status_callback_does_not_hold_a_dialing_slot_forever(fake_twilio, settings):
    settings.TELEPHONY_IN_CALL_CHECK_SECONDS = 600
    campaign = _campaign(max_concurrent_calls=2, **ALL_DAY)
    ended = _lead(campaign, "+12125550135")
    talking = _lead(campaign, "+12125550136")
    waiting = _lead(campaign, "+12125550137")
    now = datetime.now(UTC)
    first, second = _dial(campaign, now)
    # Twilio ended the first call, but its "completed" callback never reached us.
    fake_twilio.calls[first.call_sid].status = "completed"
    fake_twilio.calls[second.call_sid].status = "in-progress"
    later = now + timedelta(minutes=5)
    assert services.leads_reconcile_stuck(now=later) == 0  # too early to ask Twilio
    assert _dial(campaign, later) == []  # both slots still held

    much_later = now + timedelta(minutes=11)
    assert services.leads_reconcile_stuck(now=much_later) == 1
    states = dict(Lead.objects.values_list("pk", "state"))
    assert (states[ended.pk], states[talking.pk], states[waiting.pk]) == ("done", "in_call", "queued")
    first.refresh_from_db()
    assert (first.status, first.ended_at) == ("completed", much_later)
    fetched = [path for method, path, _ in fake_twilio.requests if method == "GET" and "/Calls/" in path]
    assert sorted(fetched) == sorted(
        f"/2010-04-01/Accounts/ACtest/Calls/{sid}.json" for sid in (first.call_sid, second.call_sid)
    )
    # The freed slot goes to the next lead; the call still in progress keeps its own.
    assert [c.to_number for c in _dial(campaign, much_later)] == ["+12125550137"]


@pytest.mark.django_db
def test_an_in_call_lead_twilio_does_not_know_is_retried_not_kept(fake_twilio, settings):
    settings.TELEPHONY_IN_CALL_CHECK_SECONDS = 600
    campaign = _campaign(retry_minutes=30, **ALL_DAY)
    lead = _lead(campaign, "+12125550138")
    now = datetime.now(UTC)
    [placed] = _dial(campaign, now)
    del fake_twilio.calls[placed.call_sid]
    checked = now + timedelta(minutes=11)
    assert services.leads_reconcile_stuck(now=checked) == 1
    lead.refresh_from_db()
    placed.refresh_from_db()
    assert (lead.state, lead.outcome, lead.next_attempt_at) == (
        "queued",
        "failed",
        checked + timedelta(minutes=30),
    )
    assert (placed.status, placed.error) == ("failed", "unknown to Twilio when checked")


def _pending_passes() -> list[tuple[int, int | None]]:
    """Take every dialing message off the (stub) broker's queues: (campaign, pass) each."""
    import dramatiq

    from telephony import tasks

    taken = []
    for name in ("default", "default.DQ"):
        queue = tasks.broker.queues.get(name)
        while queue is not None and not queue.empty():
            message = dramatiq.Message.decode(queue.get_nowait())
            assert message.actor_name == "dial_campaign"
            taken.append(tuple(message.args) + (None,) * (2 - len(message.args)))
    return taken


def _run_passes(passes: list[tuple[int, int | None]]) -> None:
    from telephony import tasks

    for campaign_id, dial_pass in passes:
        tasks.dial_campaign.fn(campaign_id, dial_pass)


@pytest.mark.django_db
def test_start_clicks_and_a_stop_then_start_leave_one_dialing_chain(fake_twilio, admin_client, monkeypatch):
    from django.urls import reverse

    from telephony import tasks

    monkeypatch.setattr(tasks, "queue_ready", lambda: True)
    campaign = _campaign(active=False, max_concurrent_calls=1, **ALL_DAY)
    _lead(campaign, "+12125550201")
    changelist = reverse("admin:telephony_campaign_changelist")

    def click(action: str) -> None:
        admin_client.post(changelist, {"action": action, "_selected_action": [campaign.pk]})

    _pending_passes()  # nothing left over from other tests
    click("start_dialing")
    click("start_dialing")  # an impatient second click
    first = _pending_passes()
    assert first == [(campaign.pk, 1), (campaign.pk, 2)]
    _run_passes(first)
    # The first click's pass is out of date: only the second one dialed and scheduled a next.
    assert len(fake_twilio.calls) == 1
    assert _pending_passes() == [(campaign.pk, 3)]  # taken: as if about to run

    click("stop_dialing")
    click("start_dialing")  # within one tick: the old chain's pass 3 is still queued
    _run_passes([(campaign.pk, 3), *_pending_passes()])
    assert _pending_passes() == [(campaign.pk, 5)]

    # A redelivered duplicate of a pass: both run, one schedules the next.
    _run_passes([(campaign.pk, 5), (campaign.pk, 5)])
    assert _pending_passes() == [(campaign.pk, 6)]
    assert len(fake_twilio.calls) == 1  # the limit of one call held throughout
    click("stop_dialing")
    _run_passes([(campaign.pk, 6)])
    assert _pending_passes() == []


@pytest.mark.django_db
def test_the_watchdog_restarts_an_active_campaign_whose_dialing_chain_died(fake_twilio, settings):
    from telephony import tasks

    settings.TELEPHONY_DIAL_TICK_SECONDS = 10
    stopped = _campaign(name="Stopped", active=False)
    campaign = _campaign(**ALL_DAY)
    _lead(campaign, "+12125550211")
    now = datetime.now(UTC)
    _pending_passes()
    dial_pass = services.campaign_dialing_start(campaign_id=campaign.pk, now=now)
    # Its pass failed every retry (or its message was lost): nothing is queued any more.
    assert tasks.dialing_watchdog(now=now + timedelta(seconds=60)) == 0  # not overdue yet (90 s)
    assert _pending_passes() == []
    assert tasks.dialing_watchdog(now=now + timedelta(seconds=91)) == 1
    assert _pending_passes() == [(campaign.pk, dial_pass + 1)]
    assert tasks.dialing_watchdog(now=now + timedelta(seconds=92)) == 0  # once, not every check
    _run_passes([(campaign.pk, dial_pass + 1)])
    assert [c.to for c in fake_twilio.calls.values()] == ["+12125550211"]
    stopped.refresh_from_db()
    assert (stopped.active, stopped.dial_pass) == (False, 0)


@pytest.mark.django_db
def test_manual_call_uses_the_same_claim_and_skips_do_not_call(fake_twilio):
    prospect = Prospect.objects.create(name="Kim", phone="+12125550151", timezone="Asia/Tokyo")
    lead = services.lead_for_manual_call(prospect_id=prospect.pk)
    [pk] = services.leads_claim(campaign_id=lead.campaign_id, now=WEDNESDAY_15_UTC, lead_ids=[lead.pk])
    assert services.phone_call_place(phone_call_id=pk).call_sid
    other = Prospect.objects.create(name="Lee", phone="+12125550152")
    services.do_not_call_add(phone="+1 212 555 0152", reason="asked")
    lead = services.lead_for_manual_call(prospect_id=other.pk)
    assert services.leads_claim(campaign_id=lead.campaign_id, now=WEDNESDAY_15_UTC, lead_ids=[lead.pk]) == []
    assert fake_twilio.placed_to("+12125550152") == []


@pytest.mark.django_db
def test_csv_import_queues_valid_rows_and_reports_bad_ones_by_line():
    campaign = _campaign()
    DoNotCall.objects.create(phone="+12125550163")
    data = (
        b"name,company,phone,timezone\n"
        b"Ann,Acme,+1 212 555 0161,America/New_York\n"
        b"Bob,Beta,not a number,UTC\n"
        b",Gamma,+12125550162,UTC\n"
        b"Cid,Delta,+12125550163,UTC\n"
        b"Dee,Eps,(212) 555-0164,Mars/Olympus\n"
        b"Eve,Zeta,(212) 555-0165,\n"
    )
    report = services.campaign_import_csv(campaign=campaign, data=data, default_region="US")
    assert (report.created, report.queued) == (3, 3)
    assert len(report.errors) == 3
    assert report.errors[0].startswith("line 3: 'not a number' is not a phone number")
    assert report.errors[1] == "line 4: the name is empty"
    assert report.errors[2] == "line 6: 'Mars/Olympus' is not a time zone (e.g. America/New_York)"
    states = dict(Lead.objects.values_list("prospect__phone", "state"))
    assert states == {"+12125550161": "queued", "+12125550163": "skipped", "+12125550165": "queued"}
    assert services.campaign_import_csv(campaign=campaign, data=b"phone\n1\n").errors == [
        "The header must have at least the columns name and phone."
    ]


@pytest.mark.django_db(transaction=True)
async def test_answering_machine_gets_the_voicemail_then_a_hang_up(fake_twilio):
    campaign = await database_sync_to_async(_campaign)(
        machine_detection=True, voicemail_message="Hi, this is Alex from Vantum, I'll try again."
    )
    await database_sync_to_async(_lead)(campaign, "+12125550171")
    [placed] = await database_sync_to_async(_dial)(campaign)
    assert fake_twilio.placed_to("+12125550171")[0].machine_detection == "DetectMessageEnd"
    twilio = TwilioSimulator(auth_token=TOKEN, public_base=BASE)
    response, stream = await twilio.answer(
        call_sid=placed.call_sid,
        direction="outbound-api",
        to="+12125550171",
        attempt=str(placed.public_id),
        answered_by="machine_end_beep",
    )
    assert stream is None
    assert response.content.decode().endswith(
        "<Response><Say>Hi, this is Alex from Vantum, I'll try again.</Say><Hangup /></Response>"
    )
    await twilio.status(call_sid=placed.call_sid, status="completed", attempt=str(placed.public_id))
    phone_call = await database_sync_to_async(PhoneCall.objects.get)(pk=placed.pk)
    assert (phone_call.answered_by, phone_call.outcome, phone_call.status) == (
        "machine_end_beep",
        "voicemail_left",
        "completed",
    )
    lead = await database_sync_to_async(Lead.objects.get)(prospect__phone="+12125550171")
    assert (lead.state, lead.outcome) == ("done", "voicemail_left")


@pytest.mark.django_db(transaction=True)
async def test_answering_machine_without_a_voicemail_message_gets_a_hang_up_only(fake_twilio):
    campaign = await database_sync_to_async(_campaign)(machine_detection=True, voicemail_message="")
    await database_sync_to_async(_lead)(campaign, "+12125550172")
    [placed] = await database_sync_to_async(_dial)(campaign)
    # Nothing to leave: Twilio answers as soon as it knows, not after the greeting's end.
    assert fake_twilio.placed_to("+12125550172")[0].machine_detection == "Enable"
    twilio = TwilioSimulator(auth_token=TOKEN, public_base=BASE)
    response, stream = await twilio.answer(
        call_sid=placed.call_sid,
        direction="outbound-api",
        to="+12125550172",
        attempt=str(placed.public_id),
        answered_by="machine_start",
    )
    assert stream is None  # no media stream: nobody to talk to
    assert response.content.decode().endswith("<Response><Hangup /></Response>")
    await twilio.status(call_sid=placed.call_sid, status="completed", attempt=str(placed.public_id))
    phone_call = await database_sync_to_async(PhoneCall.objects.get)(pk=placed.pk)
    assert (phone_call.answered_by, phone_call.outcome, phone_call.status) == (
        "machine_start",
        "answering_machine",
        "completed",
    )
    lead = await database_sync_to_async(Lead.objects.get)(prospect__phone="+12125550172")
    assert (lead.state, lead.outcome) == ("done", "answering_machine")


@pytest.mark.django_db(transaction=True)
async def test_staff_ending_a_phone_call_hangs_up_through_twilio_after_playback(
    fake_twilio, use_engines, admin_client
):
    use_engines(
        chat=ScriptedProvider([Script(tokens_of("Sure. ||BREAK|| Let me explain how it works."))]),
        speech=BeepEngine(),
        transcriber=CannedTranscriber("Tell me more."),
    )
    campaign = await database_sync_to_async(_campaign)()
    await database_sync_to_async(_lead)(campaign, "+12125550181", name="Ola")
    [placed] = await database_sync_to_async(_dial)(campaign)
    twilio = TwilioSimulator(auth_token=TOKEN, public_base=BASE)
    _, stream = await twilio.answer(
        call_sid=placed.call_sid, direction="outbound-api", to="+12125550181", attempt=str(placed.public_id)
    )
    _, leg = await twilio.open_stream(stream, call_sid=placed.call_sid, speed=20.0)
    await leg.start(stream.parameters)
    await leg.until_replies_played(1)  # the opener
    phone_call = await database_sync_to_async(PhoneCall.objects.get)(pk=placed.pk)
    # Live calls tells the phone call from a browser call, with the number called.
    from calls.models import Call

    await database_sync_to_async(Call.objects.create)(started_at=datetime.now(UTC))  # a browser call
    live_page = await database_sync_to_async(admin_client.get)("/admin/calls/call/live/")
    lines = re.findall(r"<td>(Phone [^<]*|Browser)</td>", live_page.content.decode())
    assert sorted(lines) == ["Browser", "Phone +12125550181"]
    await get_channel_layer().group_send(
        live.call_group(phone_call.session_id), {"type": live.END_CALL, "reason": "staff_ended"}
    )
    assert await leg.until_closed() == 1000
    await leg.hang_up()
    assert fake_twilio.hangups == [placed.call_sid]
    phone_call = await database_sync_to_async(PhoneCall.objects.get)(pk=placed.pk)
    assert phone_call.end_reason == "staff_ended"
    call = await database_sync_to_async(Call.objects.get)(session_id=phone_call.session_id)
    assert (call.transport, call.phone_number) == ("phone", "+12125550181")
    calls_list = await database_sync_to_async(admin_client.get)(
        "/admin/calls/call/?conversation=all&transport=phone"
    )
    assert calls_list.content.decode().count("Ola · phone +12125550181") == 1
    assert set(leg.marks_acked) == {m["mark"]["name"] for m in leg.events("mark")}


@pytest.mark.django_db(transaction=True)
async def test_agent_end_call_do_not_call_hangs_up_after_the_goodbye_played_and_lists_the_number(
    fake_twilio, use_engines
):
    from llm.fake_openai import FakeOpenAI, FakeReply, FakeToolCall
    from llm.openai_adapter import OpenAIChatProvider

    model = FakeOpenAI()
    model.script(
        FakeReply(
            text="Understood, I will not call again. ||BREAK|| Goodbye!",
            tool_calls=[
                FakeToolCall("end_call", {"outcome": "do_not_call", "summary": "Asked to be removed"})
            ],
        )
    )
    use_engines(
        chat=OpenAIChatProvider(api_key="sk-test", http_client=model.http_client()),
        speech=BeepEngine(),
        transcriber=CannedTranscriber("Please never call me again."),
    )
    campaign = await database_sync_to_async(_campaign)(**ALL_DAY)
    await database_sync_to_async(_lead)(campaign, "+12125550191", name="Rae")
    [placed] = await database_sync_to_async(_dial)(campaign, datetime.now(UTC))
    twilio = TwilioSimulator(auth_token=TOKEN, public_base=BASE)
    _, stream = await twilio.answer(
        call_sid=placed.call_sid, direction="outbound-api", to="+12125550191", attempt=str(placed.public_id)
    )
    _, leg = await twilio.open_stream(stream, call_sid=placed.call_sid, speed=20.0)
    await leg.start(stream.parameters)
    await leg.until_replies_played(1)  # the opener
    # Twilio's "completed" callback tends to outrun the stream's end: here it comes first,
    # and the lead must still end up with the conversation's outcome, not "completed".
    await twilio.status(call_sid=placed.call_sid, status="completed", attempt=str(placed.public_id))
    lead = await database_sync_to_async(Lead.objects.get)(prospect__phone="+12125550191")
    assert (lead.state, lead.outcome) == ("done", "completed")
    leg.speed = 4.0  # the goodbye plays slower than it is sent: the hang-up must wait for it
    await leg.say(caller_speech(0.6))
    await leg.silence(0.8)
    assert await leg.until_closed(timeout=20) == 1000
    await leg.hang_up()

    assert fake_twilio.hangups == [placed.call_sid]
    assert set(leg.marks_acked) == {m["mark"]["name"] for m in leg.events("mark")}
    assert fake_twilio.hangup_times[0] >= max(leg.mark_times)  # after the goodbye's last mark
    assert leg.clears == 0  # the goodbye was not cut
    phone_call = await database_sync_to_async(PhoneCall.objects.get)(pk=placed.pk)
    assert (phone_call.end_reason, phone_call.outcome) == ("agent_ended", "do_not_call")
    entry = await database_sync_to_async(DoNotCall.objects.get)(phone="+12125550191")
    assert entry.source == "agent"
    lead = await database_sync_to_async(Lead.objects.get)(prospect__phone="+12125550191")
    assert (lead.state, lead.outcome) == ("done", "do_not_call")


@pytest.mark.django_db
def test_the_agents_do_not_call_lists_the_number_even_before_the_calls_row_has_it(fake_twilio):
    """During a database outage the call's outcome write is spooled: when the stream ends,
    the call's row (if any) does not say ``do_not_call`` yet. The agent's outcome, carried
    in memory from its end_call, still lists the number and settles the lead."""
    import uuid

    campaign = _campaign(**ALL_DAY)
    lead = _lead(campaign, "+12125550192")
    [placed] = _dial(campaign, datetime.now(UTC))
    session_id = uuid.uuid4()
    services.phone_call_attach_session(phone_call_id=placed.pk, session_id=session_id)
    services.phone_call_record_status(call_sid=placed.call_sid, status="completed")

    outcome = services.phone_call_finish(
        phone_call_id=placed.pk, end_reason="agent_ended", agent_outcome="do_not_call"
    )

    assert outcome == "do_not_call"
    entry = DoNotCall.objects.get(phone="+12125550192")
    assert (entry.source, entry.reason) == ("agent", "asked not to be called again")
    lead.refresh_from_db()
    placed.refresh_from_db()
    assert (lead.state, lead.outcome) == ("done", "do_not_call")
    assert (placed.outcome, placed.end_reason) == ("do_not_call", "agent_ended")


@pytest.mark.django_db
def test_an_outcome_the_agent_stored_wins_over_the_one_it_reported(fake_twilio):
    """end_call reports what it was asked; a meeting booked earlier in the call is kept in
    the call's row (``call_outcome_from_agent``) and is the outcome the lead gets."""
    from calls.models import Call

    campaign = _campaign(**ALL_DAY)
    lead = _lead(campaign, "+12125550193")
    [placed] = _dial(campaign, datetime.now(UTC))
    call = Call.objects.create(started_at=datetime.now(UTC), outcome="meeting_booked", outcome_source="agent")
    services.phone_call_attach_session(phone_call_id=placed.pk, session_id=call.session_id)
    assert (
        services.phone_call_finish(
            phone_call_id=placed.pk, end_reason="agent_ended", agent_outcome="not_interested"
        )
        == "meeting_booked"
    )
    lead.refresh_from_db()
    assert lead.outcome == "meeting_booked"


@database_sync_to_async
def _profile_with_opener(name: str | None, opener: str):
    from agents.models import PromptVersion
    from agents.selectors import DEFAULT_PROFILE_NAME
    from agents.services import prompt_version_ensure_initial
    from calls.instances import llm_config_for_new_call

    version = prompt_version_ensure_initial(
        config=llm_config_for_new_call(None), profile_name=name or DEFAULT_PROFILE_NAME
    )
    PromptVersion.objects.filter(pk=version.pk).update(opener=opener)
    return version


@pytest.mark.django_db(transaction=True)
async def test_a_campaigns_calls_use_its_agent_profiles_prompt_version(fake_twilio, use_engines):
    use_engines(
        chat=ScriptedProvider([Script(tokens_of("Sure."))]),
        speech=BeepEngine(),
        transcriber=CannedTranscriber("Hello?"),
    )
    await _profile_with_opener(None, "Hi {name}, default desk here.")
    enterprise = await _profile_with_opener("Enterprise", "Hello {name}, enterprise desk here.")
    campaign = await database_sync_to_async(_campaign)(agent_profile=enterprise.profile, **ALL_DAY)
    await database_sync_to_async(_lead)(campaign, "+12125550221", name="Uma")
    [placed] = await database_sync_to_async(_dial)(campaign, datetime.now(UTC))
    twilio = TwilioSimulator(auth_token=TOKEN, public_base=BASE)
    _, stream = await twilio.answer(
        call_sid=placed.call_sid, direction="outbound-api", to="+12125550221", attempt=str(placed.public_id)
    )
    assert stream.parameters["profile"] == "Enterprise"
    _, leg = await twilio.open_stream(stream, call_sid=placed.call_sid, speed=20.0)
    await leg.start(stream.parameters)
    await leg.until_replies_played(1)  # the opener
    await leg.stop()
    await leg.until_closed()
    await leg.hang_up()

    from calls.models import Call, Message

    phone_call = await database_sync_to_async(PhoneCall.objects.get)(pk=placed.pk)
    call = await database_sync_to_async(Call.objects.get)(session_id=phone_call.session_id)
    assert call.prompt_version_id == enterprise.pk
    opener = await database_sync_to_async(Message.objects.get)(call=call, seq=1)
    assert opener.text == "Hello Uma, enterprise desk here."
