"""A deliberate end of the call reaches the caller's console, which does not redial:
headless Chromium against a daphne process, with a real redis-server for the staff end."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest
from channels_redis.core import RedisChannelLayer

from calls.live import call_group
from tests.servers import ROOT, migrate, require_program, run_daphne, run_redis, server_env

pytestmark = [pytest.mark.browser, pytest.mark.servers, pytest.mark.timeout(240)]
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("console-ended")
    with run_redis() as redis_url:
        env = server_env(
            {
                "DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}",
                "REDIS_URL": redis_url,
                # Calls left silent are ended after 4 s (checked every 0.5 s).
                "LLM_SESSION_IDLE_TIMEOUT": "4000",
                "LLM_CLEANUP_INTERVAL": "500",
            }
        )
        migrate(env)
        with run_daphne(env, log_path=workdir / "daphne.log") as port:
            yield {"url": f"http://127.0.0.1:{port}/", "redis_url": redis_url}


@pytest.fixture(scope="module")
def browser():
    chromium = require_program("chromium", "/usr/bin/chromium")
    playwright_sync = pytest.importorskip("playwright.sync_api")
    with playwright_sync.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.goto(server["url"])
    yield page
    context.close()


def _connect(page) -> str:
    page.get_by_test_id("connect").click()
    page.wait_for_function("window.vantumConsole.state === 'connected'", timeout=15000)
    return page.evaluate("window.vantumConsole.sessionId")


def test_staff_ending_the_call_tells_the_console_which_does_not_redial(page, server):
    session_id = _connect(page)
    layer = RedisChannelLayer(hosts=[{"address": server["redis_url"], "socket_timeout": None}])
    ask = layer.group_send(call_group(session_id), {"type": "call.end", "reason": "staff_ended"})
    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API holds this thread's event loop
        pool.submit(asyncio.run, ask).result(timeout=10)
    page.wait_for_function("window.vantumConsole.state === 'ended'", timeout=10000)
    page.wait_for_timeout(2000)  # the old console redialled 0.5 s after the close
    hook = page.evaluate("() => ({...window.vantumConsole})")
    assert (hook["state"], hook["endedReason"], hook["connects"]) == ("ended", "staff_ended", 1)
    status = page.get_by_test_id("status").inner_text()
    assert status == "The call was ended by staff. Press Connect to call again."
    assert page.get_by_test_id("connect").is_enabled()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "console-ended-by-staff.png"), full_page=True)


def test_an_idle_call_is_ended_with_its_reason_and_not_redialled(page):
    _connect(page)
    page.wait_for_function("window.vantumConsole.state === 'ended'", timeout=15000)
    page.wait_for_timeout(2000)
    hook = page.evaluate("() => ({...window.vantumConsole})")
    assert (hook["state"], hook["endedReason"], hook["connects"]) == ("ended", "idle_timeout", 1)
    assert page.get_by_test_id("status").inner_text() == (
        "The call was ended after a long silence. Press Connect to call again."
    )
    # Connect still works after a deliberate end.
    _connect(page)
    assert page.evaluate("window.vantumConsole.connects") == 2
