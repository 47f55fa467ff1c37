"""The offline demo's whole flow in a real browser: a typed call books a meeting and the agent
ends the call; then staff find that call's meeting, its outcome, its tool calls and its
recording in admin."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from tests.servers import ROOT, run_daphne, server_env
from tests.servers import migrate as migrate_database
from tests.test_browser_console import ARTIFACTS, browser  # noqa: F401  (shared fixture)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("agent-actions")
    database = workdir / "db.sqlite3"
    env = server_env(
        {
            "DATABASE_URL": f"sqlite:///{database}",
            "DJANGO_SUPERUSER_PASSWORD": "pass-word-123",
            "MEDIA_ROOT": str(workdir / "media"),  # recordings: never the repository's media/
        }
    )
    migrate_database(env)
    subprocess.run(
        [
            sys.executable,
            "manage.py",
            "createsuperuser",
            "--noinput",
            "--username",
            "boss",
            "--email",
            "b@x.io",
        ],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    with run_daphne(env, log_path=workdir / "daphne.log") as port:
        yield {"url": f"http://127.0.0.1:{port}", "database": database}


def _type(page, text: str, replies: int) -> None:
    page.get_by_test_id("text-input").fill(text)
    page.get_by_test_id("send").click()
    page.wait_for_function(f"window.vantumConsole.repliesCompleted >= {replies}", timeout=30000)


def test_a_demo_call_books_a_meeting_the_agent_ends_it_and_admin_shows_the_result(browser, demo_server):  # noqa: F811
    base = demo_server["url"]
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.goto(base + "/")
    page.get_by_test_id("connect").click()
    page.wait_for_function("window.vantumConsole.state === 'connected'", timeout=15000)
    _type(page, "Sure, I'd like a demo", 1)
    _type(page, "Tuesday works for me", 2)
    chunks = page.locator(".row.agent").nth(1).locator(".chunk").all_inner_texts()
    assert chunks[:2] == ["Perfect, Tuesday at ten it is.", "Let me put that in the calendar."]
    assert chunks[2].startswith("You're all set: Tuesday") and chunks[2].endswith(
        "at 10:00 (UTC), 30 minutes."
    )
    page.get_by_test_id("text-input").fill("Great, thanks, bye")
    page.get_by_test_id("send").click()
    page.wait_for_function("window.vantumConsole.state === 'ended'", timeout=30000)
    assert page.get_by_test_id("status").inner_text().startswith("The agent ended the call.")
    assert page.locator(".row.agent").nth(2).locator(".chunk").all_inner_texts() == [
        "Thank you for your time today.",
        "Goodbye!",
    ]
    page.wait_for_timeout(1500)  # a client must not redial on its own
    assert page.evaluate("window.vantumConsole.state") == "ended"
    page.screenshot(path=str(ARTIFACTS / "console-agent-ended.png"), full_page=True)
    session_id = page.evaluate("window.vantumConsole.sessionId")
    with sqlite3.connect(demo_server["database"]) as db:
        outcome, reason, model = db.execute(
            "SELECT outcome, end_reason, llm_model FROM calls_call WHERE session_id = ?",
            (session_id.replace("-", ""),),
        ).fetchone()
    assert (outcome, reason, model) == ("meeting_booked", "agent_ended", "demo")

    page.goto(f"{base}/admin/login/")
    page.fill("#id_username", "boss")
    page.fill("#id_password", "pass-word-123")
    page.click("input[type=submit]")
    page.wait_for_url(f"{base}/admin/")
    # This call's meeting, found by the call's session id: exactly one.
    page.goto(f"{base}/admin/bookings/meeting/?q={session_id}")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 1
    meeting = rows.first
    assert meeting.locator("td.field-minutes").inner_text() == "30"
    assert meeting.locator("td.field-status").inner_text() == "Booked"
    assert meeting.locator("td.field-call_link a").get_attribute("title") == session_id
    page.screenshot(path=str(ARTIFACTS / "admin-meetings.png"), full_page=True)
    meeting.locator("td.field-call_link a").click()
    page.wait_for_selector("[data-testid=tool-call]")
    assert session_id in page.content()
    calls = page.locator("[data-testid=tool-call]").all_inner_texts()
    assert [c.split(" · ")[0] for c in calls] == ["book_meeting", "end_call"]
    assert all("· done" in c for c in calls)
    assert page.locator("#call-outcome").inner_text().startswith("Meeting booked")
    # The recording is written at hang-up, just after the call ended: reload until it is there.
    for _ in range(40):
        if page.locator("audio#call-recording").count():
            break
        page.wait_for_timeout(250)
        page.reload()
    audio_url = page.locator("audio#call-recording").get_attribute("src")
    recording = page.request.get(base + audio_url)
    assert recording.status == 200 and recording.headers["content-type"] == "audio/wav"
    assert recording.body()[:4] == b"RIFF" and recording.body()[8:12] == b"WAVE"
    # Seeking: the server answers a byte range with just those bytes.
    part = page.request.get(base + audio_url, headers={"Range": "bytes=8-11"})
    size = len(recording.body())
    assert (part.status, part.headers["content-range"], part.body()) == (206, f"bytes 8-11/{size}", b"WAVE")
    # The browser itself can play it: it loads the audio and knows its length.
    duration = page.evaluate(
        """() => new Promise((resolve) => {
            const audio = document.querySelector('audio#call-recording');
            if (audio.readyState >= 1) return resolve(audio.duration);
            audio.addEventListener('loadedmetadata', () => resolve(audio.duration));
            audio.addEventListener('error', () => resolve(-1));
            audio.load();
        })"""
    )
    assert duration > 1
    page.screenshot(path=str(ARTIFACTS / "admin-call-with-tools.png"), full_page=True)
    context.close()
