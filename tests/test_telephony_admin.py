"""Telephony in admin: "Call this prospect" queues a dial (or says why not), the campaign
CSV import page, the do-not-call list, phone calls read-only."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from telephony import tasks
from telephony.models import Campaign, DoNotCall, Lead, PhoneCall, Prospect

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client):
    user = User.objects.create_superuser("boss", "boss@example.com", "a-long-password-1")
    client.force_login(user)
    return client


def _messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def test_call_this_prospect_says_what_is_missing_when_telephony_is_not_set_up(staff, settings):
    settings.TWILIO_ACCOUNT_SID = settings.TWILIO_AUTH_TOKEN = ""
    prospect = Prospect.objects.create(name="Ann", phone="+12125550161")
    response = staff.post(
        reverse("admin:telephony_prospect_changelist"),
        {"action": "call_now", "_selected_action": [prospect.pk]},
        follow=True,
    )
    assert _messages(response) == [
        "Telephony is not configured: set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN."
    ]
    assert Lead.objects.count() == 0


def test_call_this_prospect_queues_a_dial_and_skips_do_not_call(staff, settings, monkeypatch):
    settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN = "ACtest", "token"
    sent: list[int] = []
    # The broker is the edge here (no Redis in this test): record what would be queued.
    monkeypatch.setattr(tasks, "queue_ready", lambda: True)
    monkeypatch.setattr(tasks.dial_lead, "send", lambda lead_id: sent.append(lead_id))
    ann = Prospect.objects.create(name="Ann", phone="+12125550161")
    bob = Prospect.objects.create(name="Bob", phone="+12125550162")
    DoNotCall.objects.create(phone=bob.phone)
    response = staff.post(
        reverse("admin:telephony_prospect_changelist"),
        {"action": "call_now", "_selected_action": [ann.pk, bob.pk]},
        follow=True,
    )
    assert sorted(_messages(response)) == [
        "1 call(s) queued; they show in Live calls once answered.",
        "Bob is on the do-not-call list: not called.",
    ]
    lead = Lead.objects.get(prospect=ann)
    assert sent == [lead.pk]
    assert (lead.campaign.name, lead.state) == ("Manual calls", "queued")


def test_campaign_csv_import_page(staff):
    campaign = Campaign.objects.create(name="Autumn")
    url = reverse("admin:telephony_campaign_import", args=[campaign.pk])
    page = staff.get(url)
    assert page.status_code == 200
    assert b"Import prospects into" in page.content
    upload = SimpleUploadedFile("leads.csv", b"name,phone,company\nAnn,+12125550161,Acme\nBob,12,Beta\n")
    response = staff.post(url, {"file": upload, "default_region": "us"}, follow=True)
    assert _messages(response) == [
        "1 new prospect(s), 0 updated, 1 queued.",
        "line 3: '12' is not a valid phone number (use E.164, e.g. +14155550123)",
    ]
    assert list(Lead.objects.values_list("prospect__name", "state")) == [("Ann", "queued")]
    changelist = staff.get(reverse("admin:telephony_campaign_changelist"))
    assert url.encode() in changelist.content


def test_do_not_call_entries_are_normalised_and_skip_queued_leads(staff):
    campaign = Campaign.objects.create(name="Autumn")
    prospect = Prospect.objects.create(name="Ann", phone="+12125550161")
    Lead.objects.create(campaign=campaign, prospect=prospect)
    response = staff.post(
        reverse("admin:telephony_donotcall_add"),
        {"phone": "+12125550161", "reason": "asked", "source": "staff"},
    )
    assert response.status_code == 302
    assert DoNotCall.objects.get().phone == "+12125550161"
    assert Lead.objects.get().state == "skipped"


def test_phone_calls_are_read_only_in_admin(staff):
    call = PhoneCall.objects.create(direction="inbound", call_sid="CA1", from_number="+12125550161")
    assert staff.get(reverse("admin:telephony_phonecall_add")).status_code == 403
    page = staff.get(reverse("admin:telephony_phonecall_change", args=[call.pk]))
    assert page.status_code == 200
    assert b'name="call_sid"' not in page.content


def test_staff_marking_a_phone_call_do_not_call_lists_its_number(staff):
    from django.utils import timezone

    from calls.models import Call

    campaign = Campaign.objects.create(name="Autumn")
    prospect = Prospect.objects.create(name="Ann", phone="+12125550161")
    other = Prospect.objects.create(name="Ann again", phone="+12125550162")
    lead = Lead.objects.create(campaign=campaign, prospect=prospect, state="done", outcome="not_interested")
    call = Call.objects.create(started_at=timezone.now(), ended_at=timezone.now(), outcome="not_interested")
    PhoneCall.objects.create(
        direction="outbound",
        call_sid="CA1",
        to_number=prospect.phone,
        lead=lead,
        session_id=call.session_id,
        outcome="not_interested",
    )
    Lead.objects.create(campaign=Campaign.objects.create(name="Winter"), prospect=prospect)
    Lead.objects.create(campaign=campaign, prospect=other)
    browser_call = Call.objects.create(started_at=timezone.now(), outcome="no_decision")

    for marked in (call, browser_call):
        response = staff.post(
            reverse("admin:calls_call_review", args=[marked.pk]),
            {"rating": "", "review_note": "", "outcome": "do_not_call"},
            follow=True,
        )
        assert _messages(response) == ["Review saved."]

    entry = DoNotCall.objects.get()
    assert (entry.phone, entry.source, entry.reason) == (
        "+12125550161",
        "staff",
        "marked do not call by staff",
    )
    assert PhoneCall.objects.get().outcome == "do_not_call"
    assert dict(Lead.objects.values_list("campaign__name", "state").filter(prospect=prospect)) == {
        "Autumn": "done",
        "Winter": "skipped",
    }
    assert Lead.objects.get(pk=lead.pk).outcome == "do_not_call"
    assert Lead.objects.get(prospect=other).state == "queued"
