"""Staff in a real browser: edit the prompt, activate it, and see a new call use it."""

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
def staff_server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("staff")
    database = workdir / "db.sqlite3"
    env = server_env({"DATABASE_URL": f"sqlite:///{database}", "DJANGO_SUPERUSER_PASSWORD": "pass-word-123"})
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
    page.screenshot(path=str(_artifact("admin-call.png")), full_page=True)
    page.goto(f"{base}/admin/calls/call/dashboard/")
    assert (
        page.locator("svg.vv-chart").count() == 8
    )  # calls, outcomes per day, outcomes, connect time, end reasons, turns, latency, tiers
    page.screenshot(path=str(_artifact("admin-dashboard.png")), full_page=True)
    context.close()


def _artifact(name: str):
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name
