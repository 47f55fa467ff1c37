"""Staff in a real browser: edit the prompt, activate it, and see a new call use it."""

from __future__ import annotations

import collections
import json
import re
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest

from tests.servers import ROOT, run_daphne, server_env
from tests.servers import migrate as migrate_database
from tests.test_browser_console import ARTIFACTS, browser  # noqa: F401  (shared fixture)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def staff_server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("staff")
    database = workdir / "db.sqlite3"
    env = server_env(
        {
            "DATABASE_URL": f"sqlite:///{database}",
            "DJANGO_SUPERUSER_PASSWORD": "pass-word-123",
            "MEDIA_ROOT": str(workdir / "media"),
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


def _login(page, base: str) -> None:
    page.goto(f"{base}/admin/login/")
    page.fill("#id_username", "boss")
    page.fill("#id_password", "pass-word-123")
    page.click("input[type=submit]")
    page.wait_for_url(f"{base}/admin/")


def _call_versions(database) -> list[int]:
    with sqlite3.connect(database) as db:
        return [
            row[0]
            for row in db.execute(
                "SELECT v.number FROM calls_call c JOIN agents_promptversion v ON v.id = c.prompt_version_id "
                "ORDER BY c.started_at"
            )
        ]


def test_an_edited_and_activated_prompt_is_used_by_the_next_call(browser, staff_server):  # noqa: F811
    base = staff_server["url"]
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())

    # A first call creates version 1 from the environment.
    page.goto(base + "/")
    page.get_by_test_id("connect").click()
    page.wait_for_function("window.vantumConsole.state === 'connected'")
    page.get_by_test_id("hangup").click()

    _login(page, base)
    page.goto(f"{base}/admin/agents/promptversion/")
    page.locator("#result_list tbody tr th a").first.click()
    prompt = page.locator("#id_system_prompt")
    prompt.fill(prompt.input_value() + "\nAlways offer the free 14-day trial.")
    page.fill("#id_note", "Offer the trial")
    page.click("input[name=_save]")
    page.wait_for_selector("text=Saved as Default sales agent v2")
    assert page.locator("text=Default sales agent v2 is active").count() == 1 or "v2" in page.content()

    page.click("text=What changed")
    page.wait_for_selector("ins:has-text('Always offer the free 14-day trial.')")
    page.screenshot(path=str(_artifact("admin-diff.png")), full_page=True)

    page.goto(base + "/")
    page.get_by_test_id("connect").click()
    page.wait_for_function("window.vantumConsole.state === 'connected'")
    page.get_by_test_id("text-input").fill("Hi there")
    page.get_by_test_id("send").click()
    page.wait_for_function("window.vantumConsole.repliesCompleted >= 1", timeout=20000)
    page.get_by_test_id("hangup").click()
    page.wait_for_timeout(500)
    assert _call_versions(staff_server["database"])[-1] == 2

    page.goto(f"{base}/admin/calls/call/")
    page.screenshot(path=str(_artifact("admin-calls.png")), full_page=True)
    page.locator("#result_list tbody tr th a").first.click()
    page.wait_for_selector("a:has-text('Default sales agent v2')")
    page.wait_for_selector(".vv-user:has-text('Hi there')")
    # The hang-up settled the outcome, and the call's audio is there to play.
    assert page.locator("#call-outcome").inner_text().startswith("No decision")
    audio_url = page.locator("audio#call-recording").get_attribute("src")
    recording = page.request.get(base + audio_url)
    assert recording.status == 200 and recording.headers["content-type"] == "audio/wav"
    assert recording.body()[:4] == b"RIFF"
    page.screenshot(path=str(_artifact("admin-call.png")), full_page=True)
    page.goto(f"{base}/admin/calls/call/dashboard/")
    assert (
        page.locator("svg.vv-chart").count() == 8
    )  # calls, outcomes/day, outcomes, connect time, end reasons, turns, latency, tiers
    page.screenshot(path=str(_artifact("admin-dashboard.png")), full_page=True)
    context.close()


def _artifact(name: str):
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name


# --- the staff pages at common widths, light and dark ----------------------------------------

WIDTHS = (1280, 1366, 1920)
THEMES = ("light", "dark")

# Returns a list of problems a person would see: anything sticking out of its box, labels
# on top of each other, text too faint to read (WCAG contrast ratio under 4.5, 3 for charts).
LAYOUT_PROBLEMS = (ROOT / "tests" / "staff_layout_check.js").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def seeded_server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("staff-seeded")
    database = workdir / "db.sqlite3"
    env = server_env(
        {
            "DATABASE_URL": f"sqlite:///{database}",
            "DJANGO_SUPERUSER_PASSWORD": "pass-word-123",
            "MEDIA_ROOT": str(workdir / "media"),
        }
    )
    migrate_database(env)
    for command in (
        ["createsuperuser", "--noinput", "--username", "boss", "--email", "b@x.io"],
        ["shell", "-c", "from tests.staff_seed import seed; seed()"],
    ):
        subprocess.run(
            [sys.executable, "manage.py", *command], cwd=ROOT, env=env, check=True, capture_output=True
        )
    with sqlite3.connect(database) as db:
        # The newest finished call (tool calls, a recording) and the call in progress.
        call_pk = db.execute(
            "SELECT c.id FROM calls_call c WHERE c.ended_at IS NOT NULL AND EXISTS "
            "(SELECT 1 FROM calls_message m WHERE m.call_id = c.id) ORDER BY c.started_at DESC LIMIT 1"
        ).fetchone()[0]
        live_pk = db.execute("SELECT id FROM calls_call WHERE ended_at IS NULL").fetchone()[0]
        newest_version = db.execute("SELECT max(id) FROM agents_promptversion").fetchone()[0]
    with run_daphne(env, log_path=workdir / "daphne.log") as port:
        yield {
            "url": f"http://127.0.0.1:{port}",
            "call": call_pk,
            "live_call": live_pk,
            "version": newest_version,
            "log": workdir / "daphne.log",
        }


def test_staff_pages_fit_their_boxes_at_common_widths_in_both_themes(browser, seeded_server):  # noqa: F811
    base = seeded_server["url"]
    pages = {
        "index": "/admin/",
        "calls": "/admin/calls/call/",
        "call": f"/admin/calls/call/{seeded_server['call']}/change/",
        "dashboard-7": "/admin/calls/call/dashboard/?days=7",
        "dashboard-30": "/admin/calls/call/dashboard/?days=30",
        "dashboard-90": "/admin/calls/call/dashboard/?days=90",
        "diff": f"/admin/agents/promptversion/{seeded_server['version']}/diff/",
        "editor": f"/admin/agents/promptversion/{seeded_server['version']}/change/",  # the opener field too
        "live": "/admin/calls/call/live/",
        "follow": f"/admin/calls/call/{seeded_server['live_call']}/follow/",
        "meetings": "/admin/bookings/meeting/",
        "callbacks": "/admin/bookings/callback/",
        "ab": "/admin/agents/agentprofile/1/change/",
    }
    # What the seed put on a page, so a check never passes on an empty one.
    shown = {
        "call": "[data-testid=tool-call] >> nth=1",
        "follow": "#live-transcript [data-testid=tool-call] >> nth=1",
        "meetings": "#result_list td.field-call_link a",
        "callbacks": "#result_list td.field-call_link a",
    }
    found: dict[str, list[str]] = {}
    missing_files: list[str] = []
    for theme in THEMES:
        for width in WIDTHS:
            context = browser.new_context(viewport={"width": width, "height": 900}, color_scheme=theme)
            page = context.new_page()
            page.on(
                "response",
                lambda response: missing_files.append(response.url) if response.status == 404 else None,
            )
            _login(page, base)
            for label, path in pages.items():
                page.goto(base + path)
                if label in shown:
                    page.wait_for_selector(shown[label], timeout=5000)
                if label == "call":
                    assert page.locator("audio#call-recording").count() == 1
                page.screenshot(path=str(_artifact(f"staff/{label}-{width}-{theme}.png")), full_page=True)
                problems = page.evaluate(LAYOUT_PROBLEMS)
                if problems:
                    found[f"{label} at {width} px, {theme}"] = problems
            context.close()
    assert found == {}, json.dumps(found, indent=1)
    assert missing_files == []  # no favicon 404, no missing stylesheet


def test_a_chart_bar_opens_the_matching_calls(browser, seeded_server):  # noqa: F811
    base = seeded_server["url"]
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    _login(page, base)
    page.goto(f"{base}/admin/calls/call/dashboard/?days=30")
    bar = page.locator('svg[aria-label="Outcomes"] a').first
    href = bar.get_attribute("href")
    assert href == "/admin/calls/call/?outcome__exact=meeting_booked"
    bar.click()
    page.wait_for_url(f"{base}{href}")
    outcomes = page.locator("#result_list td.field-outcome_display").all_inner_texts()
    assert outcomes and set(outcomes) == {"Meeting booked"}
    # The dashboard and the live calls are one click from any admin page.
    page.goto(f"{base}/admin/agents/promptversion/")
    page.click("#user-tools >> text=Live calls")
    page.wait_for_url(f"{base}/admin/calls/call/live/")
    assert page.locator("h1").inner_text() == "Calls in progress"
    context.close()


def test_the_server_log_has_no_line_twice(seeded_server):
    # A page that does not exist: Django logs one "Not Found" warning for it.
    path = f"/no-such-page-{uuid.uuid4().hex[:8]}"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(seeded_server["url"] + path, timeout=30)
    assert refused.value.code == 404
    log = seeded_server["log"]
    for _ in range(50):  # the server writes its log line after answering
        if path in log.read_text():
            break
        time.sleep(0.1)
    lines = log.read_text().splitlines()
    assert sum(path in line for line in lines) == 1
    # Access-log lines repeat legitimately (the same file fetched twice in one second).
    access = re.compile(r'"(GET|POST|HEAD|WSCONNECTING|WSCONNECT|WSDISCONNECT) ')
    logged = [line for line in lines if line.strip() and not access.search(line)]
    repeated = [line for line, count in collections.Counter(logged).items() if count > 1]
    assert repeated == []


def test_live_messages_look_like_loaded_ones(browser, staff_server):  # noqa: F811
    base = staff_server["url"]
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    caller, staff = context.new_page(), context.new_page()
    caller.goto(base + "/")
    caller.get_by_test_id("connect").click()
    caller.wait_for_function("window.vantumConsole.state === 'connected'")
    session_id = caller.evaluate("window.vantumConsole.sessionId")
    with sqlite3.connect(staff_server["database"]) as db:
        for _ in range(50):  # the call row is written off the call path
            row = db.execute(
                "SELECT id FROM calls_call WHERE session_id = ?", (session_id.replace("-", ""),)
            ).fetchone()
            if row:
                break
            caller.wait_for_timeout(100)
    _login(staff, base)
    staff.goto(f"{base}/admin/calls/call/{row[0]}/follow/")
    staff.wait_for_selector("text=Live: new messages appear as they happen.")
    caller.get_by_test_id("text-input").fill("What does it cost?")
    caller.get_by_test_id("send").click()
    caller.wait_for_function("window.vantumConsole.repliesCompleted >= 1", timeout=20000)
    agent = staff.locator("#live-transcript .vv-assistant").last
    agent.locator(".vv-timings").wait_for(timeout=10000)
    assert staff.locator("#live-transcript .vv-user .vv-time").first.inner_text().count(":") == 2
    assert agent.locator(".vv-time").inner_text().count(":") == 2
    timing = agent.locator(".vv-timings").inner_text()
    assert timing.startswith("first token ") and timing.endswith(" chunks")
    # The demo books a meeting: the tool call shows live, as on the stored call's page. Typed
    # while the first reply still plays, it cuts that reply: what was not heard is marked.
    caller.get_by_test_id("text-input").fill("Tuesday works for me")
    caller.get_by_test_id("send").click()
    first = staff.locator("#live-transcript .vv-assistant").first
    first.locator(".vv-interrupted").wait_for(timeout=10000)
    assert first.locator(".vv-chunk.vv-unspoken").count() >= 1
    assert first.locator(".vv-chunk").first.get_attribute("class") == "vv-chunk"  # heard
    tool = staff.locator("#live-transcript [data-testid=tool-call]").first
    tool.wait_for(timeout=20000)
    assert tool.locator(".vv-badge").inner_text() == "book_meeting · done"
    assert '"booked"' in tool.inner_text()
    staff.screenshot(path=str(_artifact("staff/follow-live.png")), full_page=True)
    caller.get_by_test_id("hangup").click()
    staff.wait_for_selector("text=The call ended (hangup).")
    context.close()


def test_a_typed_call_books_a_meeting_and_staff_find_it_with_outcome_and_recording(browser, staff_server):  # noqa: F811
    base = staff_server["url"]
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    page.goto(base + "/")
    page.get_by_test_id("connect").click()
    page.wait_for_function("window.vantumConsole.state === 'connected'")
    session_id = page.evaluate("window.vantumConsole.sessionId")
    page.get_by_test_id("text-input").fill("Tuesday works for me")
    page.get_by_test_id("send").click()
    page.wait_for_function("window.vantumConsole.repliesCompleted >= 1", timeout=30000)
    page.get_by_test_id("hangup").click()
    page.wait_for_timeout(500)

    _login(page, base)
    page.goto(f"{base}/admin/calls/call/?q={session_id}")
    row = page.locator("#result_list tbody tr").first
    assert row.locator("td.field-outcome_display").inner_text() == "Meeting booked"
    row.locator("th a").click()
    page.wait_for_selector("#call-outcome")
    assert page.locator("#call-outcome").inner_text().startswith("Meeting booked")
    recording = page.request.get(base + page.locator("audio#call-recording").get_attribute("src"))
    assert recording.status == 200 and recording.body()[:4] == b"RIFF"
    page.screenshot(path=str(_artifact("staff/booked-call.png")), full_page=True)

    # The server is shared (the live-follow test books a meeting too): this call's meeting,
    # found by its session id.
    page.goto(f"{base}/admin/bookings/meeting/?q={session_id}")
    meetings = page.locator("#result_list tbody tr")
    assert meetings.count() == 1
    assert meetings.first.locator("td.field-minutes").inner_text() == "30"
    assert meetings.first.locator("td.field-call_link a").get_attribute("title") == session_id
    context.close()
