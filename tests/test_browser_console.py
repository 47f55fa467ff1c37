"""The call console in a real browser: headless Debian Chromium driven by Playwright,
against a daphne process, with Chromium's fake microphone for the voice turn."""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path

import pytest

from tests.servers import ROOT, migrate, require_program, run_daphne, server_env

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]
ARTIFACTS = ROOT / "test-artifacts"


def _speech_like_wav(path: Path, seconds: float = 2.0, rate: int = 48000) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        frames = (int(9000 * math.sin(2 * math.pi * 300 * n / rate)) for n in range(int(seconds * rate)))
        wav.writeframes(b"".join(struct.pack("<h", f) for f in frames))
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("browser")
    env = server_env(
        {"DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}", "STT_FAKE_TEXT": "What does it cost?"}
    )
    migrate(env)
    with run_daphne(env, log_path=workdir / "daphne.log") as port:
        yield f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = require_program("chromium", "/usr/bin/chromium")
    playwright_sync = pytest.importorskip("playwright.sync_api")
    wav = _speech_like_wav(tmp_path_factory.mktemp("mic") / "voice.wav")
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
                f"--use-file-for-fake-audio-capture={wav}",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(permissions=["microphone"], viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.goto(server)
    yield page
    context.close()


def _connect(page) -> None:
    # Hold-to-talk: this module's fake microphone is a tone, and these tests drive turns by
    # hand (hands-free has its own module with speech in the microphone).
    page.get_by_test_id("mode-hold").check()
    page.get_by_test_id("connect").click()
    page.wait_for_function("window.vantumConsole.state === 'connected'", timeout=15000)


def _hook(page) -> dict:
    return page.evaluate("() => ({...window.vantumConsole})")


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"console-{name}.png"), full_page=True)


def test_the_page_says_plainly_that_the_demo_is_not_a_model(page):
    assert "not a language model" in page.get_by_test_id("demo-banner").inner_text()
    assert page.get_by_test_id("status").inner_text() == "Not connected"
    _shot(page, "idle")


def test_a_typed_turn_shows_the_transcript_plays_audio_and_times_the_turn(page):
    _connect(page)
    assert len(page.get_by_test_id("session-id").inner_text()) == 36
    page.get_by_test_id("text-input").fill("Hi, who is this?")
    page.get_by_test_id("send").click()
    page.wait_for_function("window.vantumConsole.repliesCompleted >= 1", timeout=20000)
    rows = page.locator(".row")
    assert rows.nth(0).inner_text().endswith("Hi, who is this?")
    chunks = page.locator(".row.agent .chunk").all_inner_texts()
    assert chunks == [
        "Vantum is an AI sales assistant.",
        "It calls prospects, holds natural conversations, and books qualified meetings straight into "
        "your calendar.",
        "How do you book meetings today?",
    ]
    hook = _hook(page)
    assert hook["framesDecoded"] > 0
    assert hook["framesScheduled"] == hook["framesDecoded"]
    assert hook["chunksShown"] == 3
    timings = hook["lastTimings"]
    assert 0 < timings["firstChunkMs"] <= timings["firstAudioMs"]
    assert "first chunk" in page.get_by_test_id("timings").inner_text()
    _shot(page, "typed-turn")


def test_a_voice_turn_with_the_fake_microphone_completes_end_to_end(page):
    _connect(page)
    talk = page.get_by_test_id("talk")
    talk.hover()
    page.mouse.down()
    page.wait_for_timeout(1500)
    page.mouse.up()
    page.wait_for_function("window.vantumConsole.repliesCompleted >= 1", timeout=20000)
    assert page.locator(".row.user .body").first.inner_text() == "What does it cost?"
    assert page.locator(".row.agent .chunk").first.inner_text() == "Great question."
    assert _hook(page)["framesScheduled"] > 0
    _shot(page, "voice-turn")


def test_typing_while_the_agent_speaks_stops_playback_and_marks_the_reply(page):
    _connect(page)
    page.get_by_test_id("text-input").fill("Tell me about Vantum")
    page.get_by_test_id("send").click()
    page.wait_for_function("window.vantumConsole.framesDecoded > 0", timeout=20000)
    page.get_by_test_id("text-input").fill("Sorry, how much is it?")
    page.get_by_test_id("send").click()
    page.wait_for_function("window.vantumConsole.repliesStopped >= 1", timeout=10000)
    page.wait_for_selector(".row.agent .badge.interrupted", timeout=5000)
    page.wait_for_function("window.vantumConsole.repliesCompleted >= 1", timeout=20000)
    assert page.locator(".row.agent").nth(0).locator(".badge.interrupted").count() == 1
    assert page.locator(".row.agent").nth(1).locator(".chunk").first.inner_text() == "Great question."
    _shot(page, "barge-in")


def test_server_errors_are_shown_in_words(page):
    _connect(page)
    page.get_by_test_id("talk").hover()
    # A tap: released before the microphone is even ready. The utterance is (nearly) empty.
    page.mouse.down()
    page.mouse.up()
    page.wait_for_function("window.vantumConsole.errors.length >= 1", timeout=10000)
    assert (
        page.get_by_test_id("errors").inner_text()
        == "No speech was heard in that recording. Please try again."
    )
    assert page.get_by_test_id("talk").inner_text() == "Hold to talk"  # the microphone is off again
