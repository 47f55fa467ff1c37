"""A hands-free conversation in a real browser with the offline defaults: headless Chromium's
fake microphone plays a WAV of two spoken turns (Piper) into the console, which streams it;
the server hears the turns (Silero VAD), transcribes them (Whisper tiny.en), answers with
the demo responder and speaks with Piper. Nobody presses anything but Connect."""

from __future__ import annotations

import re
import wave
from pathlib import Path

import pytest

from tests.servers import ROOT, migrate, require_program, run_daphne, server_env
from tests.speech_samples import at_rate, piper_pcm, silence

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]
ARTIFACTS = ROOT / "test-artifacts"
FIRST = "How much does it cost?"
SECOND = "Yes, that sounds good."


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def _conversation_wav(path: Path, rate: int = 48000) -> Path:
    """Two turns: the second one comes after the agent's first reply has finished playing."""
    pcm = (
        silence(1500, rate)
        + at_rate(piper_pcm(FIRST), rate)
        + silence(20000, rate)
        + at_rate(piper_pcm(SECOND), rate)
        + silence(40000, rate)
    )
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("hands-free")
    env = server_env(
        {
            "DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}",
            "STT_ENGINE": "local",
            "TTS_ENGINE": "piper",
            "STT_MAX_CONCURRENT": "1",
        }
    )
    migrate(env)
    with run_daphne(env, log_path=workdir / "daphne.log") as port:
        yield f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = require_program("chromium", "/usr/bin/chromium")
    playwright_sync = pytest.importorskip("playwright.sync_api")
    wav = _conversation_wav(tmp_path_factory.mktemp("mic") / "conversation.wav")
    with playwright_sync.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--autoplay-policy=no-user-gesture-required",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={wav}%noloop",
            ],
        )
        yield browser
        browser.close()


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"console-{name}.png"), full_page=True)


def test_a_hands_free_conversation_of_two_turns(browser, server):
    context = browser.new_context(permissions=["microphone"], viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.goto(server)
    try:
        assert page.get_by_test_id("mode-hands-free").is_checked()  # the default
        assert page.get_by_test_id("talk").is_hidden()
        page.get_by_test_id("connect").click()
        page.wait_for_function("window.vantumConsole.state === 'connected'", timeout=15000)
        page.wait_for_function("window.vantumConsole.speechStarted >= 1", timeout=20000)
        page.wait_for_selector(".indicator[data-state='user']", timeout=5000)
        _shot(page, "hands-free-speaking")
        page.wait_for_function("window.vantumConsole.repliesCompleted >= 1", timeout=40000)
        page.wait_for_selector(".indicator[data-state='agent']", timeout=10000)
        _shot(page, "hands-free-agent")
        page.wait_for_function("window.vantumConsole.repliesCompleted >= 2", timeout=60000)
        page.wait_for_function("document.querySelectorAll('.row.agent .chunk').length >= 4", timeout=10000)
        users = page.locator(".row.user .body").all_inner_texts()
        assert [_words(u) for u in users] == [_words(FIRST), _words(SECOND)]
        agents = page.locator(".row.agent")
        assert agents.nth(0).locator(".chunk").first.inner_text() == "Great question."
        assert agents.nth(1).locator(".chunk").first.inner_text() == "Wonderful."
        hook = page.evaluate("() => ({...window.vantumConsole})")
        assert hook["speechStarted"] == 2 and hook["speechStopped"] == 2
        assert hook["errors"] == []
        assert {"listening", "user", "agent"} <= set(hook["indicatorSeen"])
        assert hook["framesScheduled"] == hook["framesDecoded"] > 0
        page.wait_for_selector(".indicator[data-state='listening']", timeout=20000)
        _shot(page, "hands-free-conversation")
    finally:
        # What the console saw, for a failure's report (next to the screenshots).
        ARTIFACTS.mkdir(exist_ok=True)
        state = page.evaluate(
            "() => JSON.stringify({...window.vantumConsole, rows: "
            "[...document.querySelectorAll('.row')].map((r) => r.innerText)})"
        )
        (ARTIFACTS / "console-hands-free-state.json").write_text(state)
        context.close()


@pytest.fixture(scope="module")
def server_without_stt(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("no-stt")
    env = server_env({"DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}", "STT_ENGINE": "none"})
    migrate(env)
    with run_daphne(env, log_path=workdir / "daphne.log") as port:
        yield f"http://127.0.0.1:{port}/"


def test_without_speech_to_text_the_page_says_so_and_typing_still_works(browser, server_without_stt):
    context = browser.new_context(permissions=["microphone"], viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.goto(server_without_stt)
    try:
        notice = page.get_by_test_id("no-stt")
        assert notice.is_visible()  # before anyone presses anything
        assert "Speech to text is not configured" in notice.inner_text()
        assert page.get_by_test_id("mode-hands-free").is_disabled()
        assert page.get_by_test_id("indicator").inner_text() == "No speech to text: type"
        page.get_by_test_id("connect").click()
        page.wait_for_function("window.vantumConsole.state === 'connected'", timeout=15000)
        page.get_by_test_id("text-input").fill("Who is this?")
        page.get_by_test_id("send").click()
        page.wait_for_function("window.vantumConsole.repliesCompleted >= 1", timeout=20000)
        hook = page.evaluate("() => ({...window.vantumConsole})")
        assert hook["chunksSent"] == 0  # the microphone never opened
        assert hook["errors"] == []
        _shot(page, "no-stt")
    finally:
        context.close()
