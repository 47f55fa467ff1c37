"""The console with call tokens on (VANTUM_CALL_TOKENS): opened as /?token=..., its call
carries the token; without one the caller is told why. Headless Chromium against daphne."""

from __future__ import annotations

import pytest

from tests.servers import migrate, require_program, run_daphne, server_env

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("browser-token")
    database = workdir / "db.sqlite3"
    env = server_env({"DATABASE_URL": f"sqlite:///{database}", "VANTUM_CALL_TOKENS": "t0k+en/1"})
    migrate(env)
    with run_daphne(env, log_path=workdir / "daphne.log") as port:
        yield f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def browser():
    chromium = require_program("chromium", "/usr/bin/chromium")
    playwright_sync = pytest.importorskip("playwright.sync_api")
    with playwright_sync.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=["--no-sandbox", "--disable-gpu", "--no-first-run"]
        )
        yield browser
        browser.close()


def test_the_console_passes_the_page_token_to_its_call(browser, server):
    context = browser.new_context()
    page = context.new_page()
    page.goto(server + "?token=t0k%2Ben%2F1")
    page.get_by_test_id("connect").click()
    page.wait_for_function("window.vantumConsole.state === 'connected'", timeout=15000)
    assert len(page.get_by_test_id("session-id").inner_text()) == 36
    context.close()


def test_without_the_token_the_console_shows_why_the_call_was_refused(browser, server):
    context = browser.new_context()
    page = context.new_page()
    page.goto(server)
    page.get_by_test_id("connect").click()
    page.wait_for_function("window.vantumConsole.errors.length > 0", timeout=15000)
    errors = page.evaluate("() => window.vantumConsole.errors")
    assert "This call needs a valid access token (?token=)." in errors[0]
    assert page.evaluate("() => window.vantumConsole.state") != "connected"
    context.close()
