"""The staff side: prompt versions, transcript review, exports, live calls, dashboard, metrics."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth.models import Group, User
from django.core.management import CommandError, call_command
from django.utils import timezone

from agents.models import PromptVersion
from agents.selectors import EDITABLE_FIELDS
from agents.services import prompt_version_ensure_initial
from calls import live, services
from calls.models import Call, Message

pytestmark = pytest.mark.django_db


@pytest.fixture
def version(settings):
    return prompt_version_ensure_initial(config=settings.VANTUM_LLM)


def make_call(
    version, *, started_ago=timedelta(minutes=5), ended=True, fallback=False, interrupted=False
) -> Call:
    session_id = uuid.uuid4()
    started = timezone.now() - started_ago
    services.call_start(
        session_id=session_id, started_at=started, prompt_version_id=version.pk, tts_engine="piper"
    )
    services.message_record_user(
        session_id=session_id,
        seq=1,
        text="How much does it cost?",
        source="voice",
        created_at=started + timedelta(seconds=2),
    )
    services.message_record_assistant(
        session_id=session_id,
        seq=2,
        text="Great question. Plans start at four hundred dollars.",
        raw_text="Great question. ||BREAK|| Plans start at four hundred dollars. ||BREAK|| And",
        chunks=[
            {"index": 0, "text": "Great question.", "spoken": True, "fallback": False},
            {"index": 1, "text": "Plans start at four hundred dollars.", "spoken": True, "fallback": False},
            {"index": 2, "text": "And more", "spoken": False, "fallback": False},
        ],
        interrupted=interrupted,
        fallback_tier=1 if fallback else None,
        error_kind="server" if fallback else "",
        utterance_id="u1",
        created_at=started + timedelta(seconds=3),
        metrics={
            "first_token_ms": 310.0,
            "first_chunk_ms": 420.0,
            "first_audio_ms": 530.0,
            "total_ms": 1900.0,
        },
    )
    if ended:
        services.call_end(session_id=session_id, reason="hangup", ended_at=started + timedelta(seconds=75))
    return Call.objects.get(session_id=session_id)


def user_in(group_name: str) -> User:
    user = User.objects.create_user(
        f"user-{group_name[:6]}-{uuid.uuid4().hex[:6]}", password="pw", is_staff=True
    )
    user.groups.add(Group.objects.get(name=group_name))
    return user


# --- transcript review -----------------------------------------------------------------


def test_calls_list_shows_turns_fallbacks_interruptions_duration_and_filters(admin_client, version):
    make_call(version, fallback=True)
    make_call(version, interrupted=True)
    response = admin_client.get("/admin/calls/call/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "1:15" in html  # duration m:ss
    assert response.context["cl"].result_count == 2
    assert admin_client.get("/admin/calls/call/?fallbacks=yes").context["cl"].result_count == 1
    assert admin_client.get("/admin/calls/call/?interrupted=yes").context["cl"].result_count == 1
    assert admin_client.get("/admin/calls/call/?q=four+hundred").context["cl"].result_count == 2
    assert admin_client.get("/admin/calls/call/?q=nonexistent+words").context["cl"].result_count == 0


def test_a_call_reads_like_a_conversation_with_chunks_badges_and_timings(admin_client, version):
    call = make_call(version, fallback=True, interrupted=True)
    html = admin_client.get(f"/admin/calls/call/{call.pk}/change/").content.decode()
    assert "How much does it cost?" in html
    assert 'title="chunk 1">Plans start at four hundred dollars.</span>' in html
    assert "vv-unspoken" in html  # the chunk that was never heard
    assert "fallback tier 1" in html and "interrupted" in html
    assert "first token 310 ms" in html and "first audio 530 ms" in html
    assert 'name="_save"' not in html  # read-only


def test_nobody_edits_or_deletes_a_transcript(admin_client, version):
    call = make_call(version)
    assert admin_client.post(f"/admin/calls/call/{call.pk}/delete/", {"post": "yes"}).status_code == 403
    assert admin_client.get("/admin/calls/call/add/").status_code == 403
    assert Call.objects.filter(pk=call.pk).exists()


def test_export_streams_one_csv_row_per_message(admin_client, version):
    calls = [make_call(version), make_call(version, fallback=True)]
    response = admin_client.post(
        "/admin/calls/call/", {"action": "export_csv", "_selected_action": [c.pk for c in calls]}
    )
    assert response.streaming
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(rows) == 4
    assert [r["role"] for r in rows] == ["user", "assistant", "user", "assistant"]
    assert rows[1]["first_audio_ms"] == "530.0"
    assert rows[3]["fallback_tier"] == "1"
    assert [r["tool_calls"] for r in rows] == ["", "", "", ""]


def test_exports_carry_the_agents_tool_calls(admin_client, version):
    call = make_call(version)
    booked = {
        "id": "call_1",
        "name": "book_meeting",
        "arguments": '{"start": "2030-01-08T10:00"}',
        "ok": True,
    }
    booked["result"] = '{"ok": true, "booked": "Tuesday 8 January 2030 at 10:00"}'
    call.messages.filter(role="assistant").update(tool_calls=[booked])
    selected = {"_selected_action": [call.pk]}
    csv_response = admin_client.post("/admin/calls/call/", {"action": "export_csv", **selected})
    rows = list(csv.DictReader(io.StringIO(b"".join(csv_response.streaming_content).decode())))
    assert [json.loads(r["tool_calls"]) if r["tool_calls"] else [] for r in rows] == [[], [booked]]
    json_response = admin_client.post("/admin/calls/call/", {"action": "export_json", **selected})
    assert [r["tool_calls"] for r in json.loads(b"".join(json_response.streaming_content))] == [[], [booked]]


def test_export_as_json(admin_client, version):
    call = make_call(version)
    response = admin_client.post(
        "/admin/calls/call/", {"action": "export_json", "_selected_action": [call.pk]}
    )
    rows = json.loads(b"".join(response.streaming_content))
    assert [r["seq"] for r in rows] == [1, 2]
    assert rows[0]["session_id"] == str(call.session_id)


# --- permissions --------------------------------------------------------------------------


def test_a_reviewer_reads_transcripts_but_cannot_edit_prompts(client, version):
    make_call(version)
    client.force_login(user_in("Transcript reviewers"))
    assert client.get("/admin/calls/call/").status_code == 200
    assert client.get(f"/admin/agents/promptversion/{version.pk}/change/").status_code == 200  # view only
    response = client.post("/admin/agents/promptversion/add/", {})
    assert response.status_code == 403


def test_an_editor_edits_prompts_but_cannot_read_transcripts(client, version):
    client.force_login(user_in("Prompt editors"))
    assert client.get("/admin/agents/promptversion/add/").status_code == 200
    assert client.get("/admin/calls/call/").status_code == 403


# --- prompt versions -----------------------------------------------------------------------


def _form(version: PromptVersion, **changes) -> dict:
    values = {field: getattr(version, field) for field in EDITABLE_FIELDS}
    values.update({"note": "", "activate": "on", **changes})
    return values


def test_saving_creates_a_new_active_version_and_keeps_the_old_one(admin_client, version):
    original_prompt = version.system_prompt
    response = admin_client.post(
        f"/admin/agents/promptversion/{version.pk}/change/",
        _form(version, system_prompt=original_prompt + "\nAlways mention the free trial.", note="trial"),
    )
    assert response.status_code == 302
    versions = list(PromptVersion.objects.order_by("number"))
    assert [(v.number, v.is_active) for v in versions] == [(1, False), (2, True)]
    assert versions[0].system_prompt == original_prompt
    assert versions[1].note == "trial"
    assert versions[1].created_by.username == "admin"


def test_activating_another_version_is_one_action(admin_client, version):
    admin_client.post(f"/admin/agents/promptversion/{version.pk}/change/", _form(version, temperature=0.3))
    response = admin_client.post(
        "/admin/agents/promptversion/", {"action": "activate_selected", "_selected_action": [version.pk]}
    )
    assert response.status_code == 302
    assert PromptVersion.objects.get(is_active=True).number == 1
    v2 = PromptVersion.objects.get(number=2)
    admin_client.post(f"/admin/agents/promptversion/{v2.pk}/activate/")
    assert PromptVersion.objects.get(is_active=True).number == 2


def test_parameters_out_of_range_are_refused_and_a_missing_marker_only_warns(admin_client, version):
    response = admin_client.post(
        f"/admin/agents/promptversion/{version.pk}/change/", _form(version, temperature=3)
    )
    assert response.status_code == 200
    assert "must be between 0 and 2" in response.content.decode()
    response = admin_client.post(
        f"/admin/agents/promptversion/{version.pk}/change/", _form(version, fallback_tier2="!!!"), follow=True
    )
    assert "must contain words the voice can speak" in response.content.decode()
    response = admin_client.post(
        f"/admin/agents/promptversion/{version.pk}/change/",
        _form(version, system_prompt="You are a sales rep. Be brief."),
        follow=True,
    )
    assert "does not mention the ||BREAK|| marker" in response.content.decode()
    assert PromptVersion.objects.filter(system_prompt="You are a sales rep. Be brief.").exists()


def test_the_outbound_opener_is_edited_with_the_prompt_and_bad_placeholders_are_refused(
    admin_client, version
):
    response = admin_client.post(
        f"/admin/agents/promptversion/{version.pk}/change/",
        _form(version, opener="Hi {first_name}, Alex here."),
    )
    assert response.status_code == 200
    assert "unknown placeholder {first_name}: use {name} or {company}" in response.content.decode()
    response = admin_client.post(
        f"/admin/agents/promptversion/{version.pk}/change/", _form(version, opener="Hi {name")
    )
    assert "write a literal brace as {{ or }}" in response.content.decode()
    response = admin_client.post(
        f"/admin/agents/promptversion/{version.pk}/change/",
        _form(version, opener="Hi {name}, Alex from {company}'s {{partner}}."),
    )
    assert response.status_code == 302
    assert PromptVersion.objects.get(is_active=True).opener == "Hi {name}, Alex from {company}'s {{partner}}."


def test_a_version_used_by_calls_cannot_be_deleted(admin_client, version):
    admin_client.post(f"/admin/agents/promptversion/{version.pk}/change/", _form(version, temperature=0.2))
    make_call(version)
    response = admin_client.post(
        f"/admin/agents/promptversion/{version.pk}/delete/", {"post": "yes"}, follow=True
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "Cannot delete prompt version" in html  # Django names the calls that keep it
    assert "Prompt version" in html or "prompt version" in html
    assert PromptVersion.objects.filter(pk=version.pk).exists()


def test_the_history_shows_what_changed(admin_client, version):
    admin_client.post(
        f"/admin/agents/promptversion/{version.pk}/change/",
        _form(
            version,
            system_prompt=version.system_prompt.replace("Be conversational", "Be warm"),
            temperature=0.5,
        ),
    )
    v2 = PromptVersion.objects.get(number=2)
    html = admin_client.get(f"/admin/agents/promptversion/{v2.pk}/diff/").content.decode()
    assert "- Be conversational and professional" in html
    assert "+- Be warm and professional" in html
    assert "temperature" in html


def test_the_preview_shows_the_final_prompt_for_a_sample_prospect(admin_client, version):
    html = admin_client.get(f"/admin/agents/promptversion/{version.pk}/change/").content.decode()
    assert "{&quot;name&quot;: &quot;Dana Ruiz&quot;, &quot;company&quot;: &quot;Acme Logistics&quot;" in html


# --- live calls, dashboard, metrics, retention ----------------------------------------------


def test_live_calls_are_listed_and_can_be_ended(admin_client, version):
    live_call = make_call(version, ended=False)
    make_call(version)
    html = admin_client.get("/admin/calls/call/live/").content.decode()
    assert str(live_call.session_id) in html
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(live.call_group(live_call.session_id), channel)
    response = admin_client.post(f"/admin/calls/call/{live_call.pk}/end/")
    assert response.status_code == 302
    assert async_to_sync(layer.receive)(channel) == {"type": "call.end", "reason": "staff_ended"}
    assert admin_client.get(f"/admin/calls/call/{live_call.pk}/end/").status_code == 403  # POST only
    assert admin_client.get(f"/admin/calls/call/{live_call.pk}/follow/").status_code == 200


def test_the_dashboard_shows_charts_and_figures(admin_client, version):
    make_call(version)
    make_call(version, fallback=True)
    make_call(version, ended=False, started_ago=timedelta(seconds=30))
    response = admin_client.get("/admin/calls/call/dashboard/?days=7")
    html = response.content.decode()
    data = response.context["data"]
    assert (data["calls"], data["turns"], data["success_rate"]) == (3, 3, pytest.approx(100 * 2 / 3))
    assert data["tiers"] == {1: 1, 2: 0, 3: 0}
    assert data["latency"]["first audio"]["p50"] == 530.0
    assert data["peak_concurrent"] == 2  # the first two overlapped; the third came later
    assert html.count('<svg class="vv-chart') == 8
    assert data["versions"][0]["calls"] == 3


def test_metrics_are_served_to_loopback_or_with_the_token(client, settings):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert b"vantum_turns_total" in response.content
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 403
    settings.METRICS_TOKEN = "s3cret"
    assert client.get("/metrics").status_code == 403
    assert (
        client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret", REMOTE_ADDR="10.1.2.3").status_code == 200
    )


def test_purge_calls_is_a_dry_run_unless_told(version):
    old = make_call(version, started_ago=timedelta(days=40))
    recent = make_call(version)
    out = io.StringIO()
    call_command("purge_calls", "--older-than", "30", stdout=out)
    assert out.getvalue().startswith("Dry run: would delete 1 calls (2 messages)")
    assert Call.objects.count() == 2
    call_command("purge_calls", "--older-than", "30", "--execute", stdout=io.StringIO())
    assert list(Call.objects.values_list("pk", flat=True)) == [recent.pk]
    assert not Message.objects.filter(call_id=old.pk).exists()
    with pytest.raises(CommandError, match="at least 1 day"):
        call_command("purge_calls", "--older-than", "0")


@pytest.mark.django_db(transaction=True)
async def test_try_it_streams_the_chunks_of_one_reply_with_timings(async_client, settings):
    from channels.db import database_sync_to_async

    version = await database_sync_to_async(prompt_version_ensure_initial)(config=settings.VANTUM_LLM)
    admin = await database_sync_to_async(User.objects.create_superuser)("root", "r@x.io", "pw")
    await async_client.aforce_login(admin)
    url = f"/admin/agents/promptversion/{version.pk}/try/"
    response = await async_client.post(url, {"message": "What does it cost?"})
    assert response.status_code == 200
    body = b"".join([part async for part in response.streaming_content]).decode()
    lines = [json.loads(line) for line in body.splitlines()]
    assert lines[0]["text"] == "Great question."
    assert all(line["ms"] > 0 for line in lines[:-1])
    assert lines[-1]["done"] is True and lines[-1]["error"] is None
    assert lines[-1]["firstTokenMs"] <= lines[-1]["firstChunkMs"]
    assert (await async_client.post(url, {"message": ""})).status_code == 400
