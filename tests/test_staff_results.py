"""Results staff act on: outcomes, prospects, reviews, prompt A/B tests and the dashboard."""

from __future__ import annotations

import csv
import io
import logging
import subprocess
import sys
import uuid
from collections import Counter
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from agents.models import PromptSplit
from agents.selectors import EDITABLE_FIELDS, prompt_version_for_new_call
from agents.services import prompt_version_create
from calls import services
from calls.dashboard import wilson_interval
from calls.models import Call
from tests.servers import ROOT
from tests.test_admin_staff import make_call, user_in, version  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db


def call_with(version, *, name="", company="", outcome="", started_ago=timedelta(minutes=5), said=True):  # noqa: F811
    if said:
        call = make_call(version, started_ago=started_ago)
    else:  # a reload: connected and gone without a word
        session_id = uuid.uuid4()
        started = timezone.now() - started_ago
        services.call_start(session_id=session_id, started_at=started, prompt_version_id=version.pk)
        services.call_end(session_id=session_id, reason="hangup", ended_at=started + timedelta(seconds=2))
        call = Call.objects.get(session_id=session_id)
    if name or company:
        services.call_update_settings(session_id=call.session_id, prospect={"name": name, "company": company})
    if outcome:
        services.call_set_outcome(session_id=call.session_id, outcome=outcome, source="agent")
    return Call.objects.get(pk=call.pk)


def second_version(version):  # noqa: F811
    values = {field: getattr(version, field) for field in EDITABLE_FIELDS}
    return prompt_version_create(
        profile=version.profile,
        values={**values, "system_prompt": version.system_prompt + "\nOffer the trial."},
        created_by=None,
    )


# --- the calls list ------------------------------------------------------------------------


def test_calls_list_shows_prospect_and_outcome_and_searches_them(admin_client, version):  # noqa: F811
    call_with(version, name="Dana Ruiz", company="Acme Logistics", outcome="meeting_booked")
    call_with(version, name="Lee Park", company="Northwind", outcome="not_interested")
    response = admin_client.get("/admin/calls/call/")
    html = response.content.decode()
    assert "Dana Ruiz · Acme Logistics" in html and "Meeting booked" in html
    assert admin_client.get("/admin/calls/call/?q=acme").context["cl"].result_count == 1
    assert admin_client.get("/admin/calls/call/?q=Lee+Park").context["cl"].result_count == 1
    found = admin_client.get("/admin/calls/call/?outcome__exact=not_interested").context["cl"]
    assert [c.prospect["name"] for c in found.result_list] == ["Lee Park"]


def test_empty_connections_are_hidden_unless_asked_for(admin_client, version):  # noqa: F811
    call_with(version, name="Dana")
    call_with(version, said=False)
    call_with(version, said=False)
    assert admin_client.get("/admin/calls/call/").context["cl"].result_count == 1
    assert admin_client.get("/admin/calls/call/?conversation=empty").context["cl"].result_count == 2
    assert admin_client.get("/admin/calls/call/?conversation=all").context["cl"].result_count == 3


def test_a_reviewer_rates_notes_and_corrects_the_outcome(client, version):  # noqa: F811
    call = call_with(version, outcome="no_decision")
    reviewer = user_in("Transcript reviewers")
    client.force_login(reviewer)
    page = client.get(f"/admin/calls/call/{call.pk}/change/").content.decode()
    assert 'id="review-form"' in page
    response = client.post(
        f"/admin/calls/call/{call.pk}/review/",
        {"rating": "4", "review_note": "Good objection handling.", "outcome": "callback"},
    )
    assert response.status_code == 302
    call.refresh_from_db()
    assert (call.rating, call.review_note, call.outcome, call.outcome_source) == (
        4,
        "Good objection handling.",
        "callback",
        "staff",
    )
    assert call.reviewed_by == reviewer
    assert client.get("/admin/calls/call/?rating=4").context["cl"].result_count == 1
    assert client.get("/admin/calls/call/?rating=none").context["cl"].result_count == 0
    # A bad rating is refused with a message and changes nothing.
    client.post(f"/admin/calls/call/{call.pk}/review/", {"rating": "9", "review_note": "x"})
    call.refresh_from_db()
    assert (call.rating, call.review_note) == (4, "Good objection handling.")
    # Only a POST by a reviewer.
    assert client.get(f"/admin/calls/call/{call.pk}/review/").status_code == 403


def test_exports_include_prospect_outcome_and_end_reason(admin_client, version):  # noqa: F811
    call = call_with(version, name="Dana Ruiz", company="Acme Logistics", outcome="callback")
    response = admin_client.post(
        "/admin/calls/call/", {"action": "export_csv", "_selected_action": [call.pk]}
    )
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert {(r["prospect_name"], r["prospect_company"], r["outcome"], r["end_reason"]) for r in rows} == {
        ("Dana Ruiz", "Acme Logistics", "callback", "hangup")
    }


# --- prompt A/B ----------------------------------------------------------------------------


def test_new_calls_are_split_between_versions_by_weight(version):  # noqa: F811
    other = second_version(version)  # not active
    assert prompt_version_for_new_call().pk == version.pk  # no split: the active version
    PromptSplit.objects.create(profile=version.profile, version=version, weight=3)
    PromptSplit.objects.create(profile=version.profile, version=other, weight=1)
    picks = Counter(prompt_version_for_new_call(rand=lambda n=n: n / 400).number for n in range(400))
    assert picks == {version.number: 300, other.number: 100}
    PromptSplit.objects.filter(version=version).update(weight=0)  # paused
    assert {prompt_version_for_new_call().pk for _ in range(20)} == {other.pk}
    PromptSplit.objects.all().update(weight=0)
    assert prompt_version_for_new_call().pk == version.pk


def test_editors_set_up_an_ab_split_in_admin(client, version):  # noqa: F811
    other = second_version(version)
    client.force_login(user_in("Prompt editors"))
    url = f"/admin/agents/agentprofile/{version.profile.pk}/change/"
    page = client.get(url)
    assert page.status_code == 200
    data = {
        "name": version.profile.name,
        "splits-TOTAL_FORMS": "2",
        "splits-INITIAL_FORMS": "0",
        "splits-MIN_NUM_FORMS": "0",
        "splits-MAX_NUM_FORMS": "1000",
        "splits-0-version": str(version.pk),
        "splits-0-weight": "1",
        "splits-1-version": str(other.pk),
        "splits-1-weight": "1",
    }
    assert client.post(url, data).status_code == 302
    listing = client.get("/admin/agents/agentprofile/").content.decode()
    assert f"v{version.number} 50%, v{other.number} 50%" in listing


# --- the dashboard -------------------------------------------------------------------------


def test_wilson_interval_matches_published_values():
    low, high = wilson_interval(3, 4)
    assert (round(low, 4), round(high, 4)) == (0.3006, 0.9544)
    low, high = wilson_interval(0, 10)
    assert (low, round(high, 4)) == (0.0, 0.2775)
    assert wilson_interval(0, 0) is None


def test_the_dashboard_compares_versions_on_bookings_with_an_interval(admin_client, version):  # noqa: F811
    other = second_version(version)
    for outcome in ("meeting_booked", "meeting_booked", "meeting_booked", "no_decision"):
        call_with(version, outcome=outcome)
    for outcome in ("meeting_booked", "not_interested", "not_interested", "not_interested"):
        call = call_with(other, outcome=outcome)
    call_with(version, said=False)  # a reload: not a call anyone talked in
    Call.objects.filter(pk=call.pk).update(end_reason="error")
    response = admin_client.get("/admin/calls/call/dashboard/?days=30")
    data = response.context["data"]
    assert (data["calls"], data["empty_calls"], data["booked"]) == (8, 1, 4)
    rows = {row["prompt_version__number"]: row for row in data["versions"]}
    assert (rows[version.number]["booked"], rows[version.number]["decided"]) == (3, 4)
    assert rows[version.number]["booking_rate"] == 75.0
    assert round(rows[version.number]["booking_low"], 1) == 30.1
    assert round(rows[version.number]["booking_high"], 1) == 95.4
    assert rows[other.number]["booking_rate"] == 25.0
    html = response.content.decode()
    # Charts link to the calls they count.
    assert "/admin/calls/call/?outcome__exact=meeting_booked" in html
    assert "/admin/calls/call/?end_reason__exact=error" in html
    assert f"/admin/calls/call/?prompt_version__id__exact={other.pk}" in html
    today = timezone.now()
    day_link = (
        f"started_at__year={today.year}&amp;started_at__month={today.month}&amp;started_at__day={today.day}"
    )
    assert day_link in html
    # The link opens exactly the calls the chart counted.
    linked = admin_client.get(f"/admin/calls/call/?{day_link.replace('&amp;', '&')}")
    assert linked.context["cl"].result_count == 8


def test_prompt_editors_see_the_comparison(client, version):  # noqa: F811
    call_with(version, outcome="meeting_booked")
    client.force_login(user_in("Prompt editors"))
    response = client.get("/admin/calls/call/dashboard/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Prompt versions compared" in html
    # They may not open calls: no bar, figure or version links to the calls list (a 403).
    assert 'aria-label="Outcomes"' in html and "/admin/calls/call/?" not in html
    assert "Click a bar" not in html
    client.force_login(User.objects.create_user("nobody", password="pw", is_staff=True))
    refused = client.get("/admin/calls/call/dashboard/")
    assert refused.status_code == 403 and b"prompt editors" in refused.content


def test_many_days_of_bars_keep_their_labels_apart(admin_client, version):  # noqa: F811
    html = admin_client.get("/admin/calls/call/dashboard/?days=90").content.decode()
    chart = html.split('aria-label="Calls per day"', 1)[1].split("</svg>", 1)[0]
    # 90 days: a date under about every eleventh bar (never 90 on top of each other), today's included.
    assert 6 <= chart.count('class="vv-label"') <= 10
    assert f"{timezone.now():%b %d}</text>" in chart


# --- branding, navigation, labels, logging -------------------------------------------------


def test_the_admin_is_branded_and_links_to_the_staff_pages(admin_client):
    html = admin_client.get("/admin/").content.decode()
    assert "Vantum Voice" in html and "Django administration" not in html
    assert 'href="/admin/calls/call/dashboard/"' in html and 'href="/admin/calls/call/live/"' in html
    assert 'rel="icon" href="/static/vantum_admin/favicon.svg"' in html
    assert (ROOT / "static/vantum_admin/favicon.svg").exists()


def test_favicon_ico_is_served_at_the_root(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 200
    assert b"".join(response.streaming_content)[:4] == b"\x00\x00\x01\x00"  # an ICO header


def test_field_labels_read_like_words(admin_client, version):  # noqa: F811
    make_call(version)
    html = admin_client.get("/admin/calls/call/").content.decode()
    assert "By TTS engine" in html and "LLM model" in html
    assert "Llm model" not in html and "By tts engine" not in html
    page = admin_client.get(f"/admin/agents/promptversion/{version.pk}/change/").content.decode()
    assert "Fallback tier 1" in page and "Fallback tier1" not in page


def test_every_log_line_is_printed_once():
    code = (
        "import django, logging; django.setup(); "
        "logging.getLogger('django.request').warning('once-django'); "
        "logging.getLogger('calls.x').warning('once-calls')"
    )
    env = {"DJANGO_SETTINGS_MODULE": "vantum.settings", "DJANGO_DEBUG": "true", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    output = result.stdout + result.stderr
    assert output.count("once-django") == 1 and output.count("once-calls") == 1
    assert logging.getLogger("django").handlers == []
