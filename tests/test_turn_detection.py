"""Server-side turn detection on speech made on the fly: boundaries, barge-in, noise, rates."""

from __future__ import annotations

import numpy as np
import pytest

from stt.turn_detection import (
    PauseStarted,
    SpeechConfirmed,
    SpeechResumed,
    SpeechStarted,
    TurnConfig,
    TurnDetector,
    TurnEnded,
)
from stt.vad import EnergyVad, silero_factory
from tests.speech_samples import at_rate, chunks, cough, noise, piper_pcm, silence

FIRST = "I would like to know more about your pricing"
SECOND = "and whether you offer a discount for teams."
CONFIG = TurnConfig()  # the defaults the server uses


@pytest.fixture(scope="module")
def silero():
    return silero_factory()


def run(detector: TurnDetector, pcm: bytes, rate: int = 16000, chunk_ms: int = 20) -> list:
    size = 2 * rate * chunk_ms // 1000
    events = []
    for chunk in chunks(pcm, size):
        events += detector.feed(chunk, rate)
    return events


def kinds(events: list) -> list[str]:
    return [type(event).__name__ for event in events]


def tone(ms: int, rate: int = 16000, level: float = 0.3) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    return (np.sin(2 * np.pi * 220 * t) * level * 32767).astype("<i2").tobytes()


def speech(text: str, rate: int = 16000) -> bytes:
    return at_rate(piper_pcm(text), rate)


def test_a_short_pause_inside_a_sentence_does_not_end_the_turn(silero):
    # 250 ms between two halves of one sentence: below the 400 ms end of turn.
    pcm = silence(500) + speech(FIRST) + silence(250) + speech(SECOND) + silence(1000)
    events = run(TurnDetector(vad=silero(), config=CONFIG), pcm)
    assert kinds(events) == [
        "SpeechStarted",
        "SpeechConfirmed",
        "PauseStarted",
        "SpeechResumed",
        "PauseStarted",
        "TurnEnded",
    ]
    started, ended = events[0], events[-1]
    assert abs(started.at_ms - 500) <= 64
    spoken_end = 500 + (len(speech(FIRST)) + len(silence(250)) + len(speech(SECOND))) // 32
    assert abs(ended.speech_end_ms - spoken_end) <= 96
    assert ended.reason == "silence" and ended.forced is False
    # Decided once the silence reached end_silence_ms (rounded up to whole 32 ms frames).
    assert ended.at_ms - ended.speech_end_ms == 416
    # The pause-time audio is exactly the turn's audio: a speculative transcript is reusable.
    assert events[4].audio == ended.audio


def test_a_pause_longer_than_the_end_silence_makes_two_turns(silero):
    pcm = silence(300) + speech(FIRST) + silence(800) + speech(SECOND) + silence(800)
    events = run(TurnDetector(vad=silero(), config=CONFIG), pcm)
    ended = [e for e in events if isinstance(e, TurnEnded)]
    assert len(ended) == 2
    assert [e.reason for e in ended] == ["silence", "silence"]
    assert not any(isinstance(e, SpeechResumed) for e in events)


def test_only_speech_and_its_padding_reach_the_recogniser(silero):
    words = speech(FIRST)
    pcm = silence(3000) + words + silence(3000)
    ended = [e for e in run(TurnDetector(vad=silero(), config=CONFIG), pcm) if isinstance(e, TurnEnded)]
    assert len(ended) == 1
    kept_ms = len(ended[0].audio) // 32
    speech_ms = len(words) // 32
    # At most the padding before and the pause after, with a frame of VAD slack each side.
    assert speech_ms - 64 <= kept_ms <= speech_ms + CONFIG.padding_ms + CONFIG.pause_ms + 64


@pytest.mark.parametrize(
    "name, pcm",
    [
        ("silence", silence(5000)),
        ("fan noise", noise(5000)),
        ("loud noise", noise(3000, level=0.2)),
        ("coughs", silence(300) + cough() + silence(700) + cough(250, seed=5) + silence(1000)),
    ],
)
def test_silence_noise_and_coughs_are_not_speech(silero, name, pcm):
    detector = TurnDetector(vad=silero(), config=CONFIG)
    assert run(detector, pcm) == []
    assert detector.end_now() is None  # an audio.end after noise: nothing to transcribe


def test_barge_in_is_confirmed_only_after_enough_speech():
    # The energy VAD makes the timing exact: a tone is "speech" from its first frame.
    config = TurnConfig(barge_in_min_speech_ms=256, min_speech_ms=96)
    short = run(TurnDetector(vad=EnergyVad(), config=config), silence(200) + tone(160) + silence(1000))
    assert kinds(short) == ["SpeechStarted", "PauseStarted", "TurnEnded"]  # heard, never confirmed
    blip = run(TurnDetector(vad=EnergyVad(), config=config), silence(192) + tone(60) + silence(1000))
    assert blip == []  # below min_speech_ms: not speech at all
    long = run(TurnDetector(vad=EnergyVad(), config=config), silence(192) + tone(640) + silence(1000))
    confirmed = [e for e in long if isinstance(e, SpeechConfirmed)]
    assert len(confirmed) == 1
    assert confirmed[0].at_ms == 192 + 256  # onset + 256 ms of speech, in audio time


def test_real_speech_confirms_barge_in_and_a_cough_does_not(silero):
    events = run(TurnDetector(vad=silero(), config=CONFIG), silence(300) + cough() + silence(600))
    assert not any(isinstance(e, SpeechConfirmed) for e in events)
    events = run(
        TurnDetector(vad=silero(), config=CONFIG), silence(300) + speech("Wait, stop.") + silence(600)
    )
    confirmed = [e for e in events if isinstance(e, SpeechConfirmed)]
    assert len(confirmed) == 1
    assert confirmed[0].at_ms - events[0].at_ms >= CONFIG.barge_in_min_speech_ms


@pytest.mark.parametrize("rate", [8000, 44100, 48000])
def test_other_input_rates_give_the_same_turns(silero, rate):
    base = silence(400) + speech(FIRST) + silence(250) + speech(SECOND) + silence(900)
    reference = run(TurnDetector(vad=silero(), config=CONFIG), base)
    pcm = (
        silence(400, rate)
        + speech(FIRST, rate)
        + silence(250, rate)
        + speech(SECOND, rate)
        + silence(900, rate)
    )
    events = run(TurnDetector(vad=silero(), config=CONFIG), pcm, rate)
    assert kinds(events) == kinds(reference)
    for ours, theirs in zip(events, reference, strict=True):
        assert abs(ours.at_ms - theirs.at_ms) <= 64
    ended = events[-1]
    assert abs(len(ended.audio) - len(reference[-1].audio)) <= 2 * 32 * 64  # 16 kHz out, whatever came in


@pytest.mark.parametrize("rate", [16000, 48000, 44100])
def test_decisions_do_not_depend_on_chunk_size(silero, rate):
    pcm = (
        silence(300, rate)
        + speech(FIRST, rate)
        + silence(250, rate)
        + speech(SECOND, rate)
        + silence(700, rate)
    )
    small = run(TurnDetector(vad=silero(), config=CONFIG), pcm, rate, chunk_ms=20)
    large = run(TurnDetector(vad=silero(), config=CONFIG), pcm, rate, chunk_ms=500)
    assert small == large  # same events, same timestamps, same audio bytes
    assert kinds(small)[-1] == "TurnEnded"


def test_odd_byte_counts_are_carried_over(silero):
    pcm = silence(300) + speech(FIRST) + silence(700)
    reference = run(TurnDetector(vad=silero(), config=CONFIG), pcm)
    detector = TurnDetector(vad=silero(), config=CONFIG)
    odd = []
    for chunk in chunks(pcm, 333):  # every other chunk splits a sample in two
        odd += detector.feed(chunk, 16000)
    assert odd == reference


def test_ten_minutes_of_continuous_speech_are_cut_at_the_maximum_length(silero):
    sentence = speech("Our team has been comparing several vendors and we keep talking without a break")
    repeats = 600_000 // (len(sentence) // 32) + 1
    detector = TurnDetector(vad=silero(), config=CONFIG)
    events = []
    for _ in range(repeats):
        events += detector.feed(sentence, 16000)
    ended = [e for e in events if isinstance(e, TurnEnded)]
    assert len(ended) >= 600_000 // CONFIG.max_turn_ms - 1
    assert all(e.forced and e.reason == "max_length" for e in ended)
    for turn in ended:
        assert len(turn.audio) // 32 <= CONFIG.max_turn_ms + CONFIG.padding_ms + 32


def test_a_tone_forces_turns_at_exactly_the_maximum_length():
    config = TurnConfig(max_turn_ms=3200, min_speech_ms=96)
    events = run(TurnDetector(vad=EnergyVad(), config=config), tone(10_000), chunk_ms=100)
    ended = [e for e in events if isinstance(e, TurnEnded)]
    starts = [e for e in events if isinstance(e, SpeechStarted)]
    # Onsets at 0, 3200, 6400: each turn ends 3200 ms after its onset.
    assert [e.at_ms for e in starts] == [0, 3200, 6400, 9600]
    assert [e.at_ms for e in ended] == [3200, 6400, 9600]
    assert all(len(e.audio) == 2 * 16 * 3200 for e in ended)


def test_audio_end_ends_the_turn_at_once_with_what_there_is(silero):
    detector = TurnDetector(vad=silero(), config=CONFIG)
    events = run(detector, silence(300) + speech(FIRST))
    assert kinds(events)[:2] == ["SpeechStarted", "SpeechConfirmed"]
    ended = detector.end_now()
    assert isinstance(ended, TurnEnded)
    assert (ended.reason, ended.forced) == ("client_end", False)
    assert len(ended.audio) // 32 >= len(speech(FIRST)) // 32 - 64
    assert detector.end_now() is None  # nothing left
    assert not detector.in_turn


def test_pause_events_carry_the_audio_so_far_and_resumption_is_announced():
    config = TurnConfig(end_silence_ms=480, pause_ms=128, padding_ms=0)
    events = run(
        TurnDetector(vad=EnergyVad(), config=config), tone(320) + silence(256) + tone(320) + silence(600)
    )
    assert kinds(events) == [
        "SpeechStarted",
        "SpeechConfirmed",
        "PauseStarted",
        "SpeechResumed",
        "PauseStarted",
        "TurnEnded",
    ]
    first_pause, resumed = events[2], events[3]
    assert (first_pause.at_ms, resumed.at_ms) == (320, 576)
    assert len(first_pause.audio) == 2 * 16 * (320 + 128)
    assert isinstance(events[4], PauseStarted) and events[4].audio == events[5].audio


def test_reset_restarts_audio_time():
    detector = TurnDetector(vad=EnergyVad(), config=CONFIG)
    run(detector, silence(1000) + tone(500))
    detector.reset()
    events = run(detector, silence(320) + tone(500))
    assert events[0] == SpeechStarted(at_ms=320)


def test_bad_settings_and_rates_are_refused_clearly():
    with pytest.raises(ValueError, match="speech_threshold"):
        TurnConfig(speech_threshold=1.5)
    with pytest.raises(ValueError, match="end_silence_ms"):
        TurnConfig(end_silence_ms=0)
    with pytest.raises(ValueError, match="sample rate"):
        TurnDetector(vad=EnergyVad(), config=CONFIG).feed(b"\x00\x00", 4000)


class ScriptedEndOfTurn:
    """An end-of-turn model at the detector's edge that answers from a list."""

    def __init__(self, answers: list[float]) -> None:
        self.answers = answers
        self.heard: list[int] = []

    def turn_complete_probability(self, pcm16k: bytes) -> float:
        self.heard.append(len(pcm16k))
        return self.answers.pop(0)


def test_an_unfinished_sounding_turn_waits_for_the_longer_silence():
    config = TurnConfig(end_silence_ms=400, smart_wait_ms=1000, padding_ms=0)
    model = ScriptedEndOfTurn([0.1, 0.9])  # "unfinished", then "finished"
    detector = TurnDetector(vad=EnergyVad(), config=config, end_of_turn=model)
    events = run(detector, tone(640) + silence(900) + tone(640) + silence(600))
    assert kinds(events).count("TurnEnded") == 1  # the 900 ms pause did not end the turn
    # Asked once per pause that reached 400 ms, with the turn's audio so far.
    # The second tone ends at 2180 ms, inside the frame that ends at 2208 ms.
    assert model.heard == [2 * 16 * (640 + 128), 2 * 16 * (2208 + 128)]
    model = ScriptedEndOfTurn([0.1])
    events = run(TurnDetector(vad=EnergyVad(), config=config, end_of_turn=model), tone(640) + silence(2000))
    ended = [e for e in events if isinstance(e, TurnEnded)]
    assert ended[0].at_ms - ended[0].speech_end_ms == 1408  # 400 + 1000, in whole frames


def test_a_finished_sounding_turn_ends_at_the_normal_silence():
    config = TurnConfig(end_silence_ms=400, smart_wait_ms=1000)
    detector = TurnDetector(vad=EnergyVad(), config=config, end_of_turn=ScriptedEndOfTurn([0.9, 0.9]))
    events = run(detector, tone(640) + silence(900) + tone(640) + silence(600))
    assert kinds(events).count("TurnEnded") == 2


def test_smart_turn_holds_a_sentence_cut_mid_thought(silero):
    from stt.smart_turn import shared_smart_turn

    pcm = silence(300) + speech("So what I was thinking is that") + silence(900) + speech("we start in May.")
    pcm += silence(2500)
    plain = run(TurnDetector(vad=silero(), config=CONFIG), pcm)
    assert kinds(plain).count("TurnEnded") == 2
    detector = TurnDetector(vad=silero(), config=CONFIG, end_of_turn=shared_smart_turn())
    smart = run(detector, pcm)
    assert kinds(smart).count("TurnEnded") == 1
    assert detector.smart_holds >= 1


def test_a_streaming_recogniser_gets_the_turns_audio_while_the_caller_speaks(silero):
    detector = TurnDetector(vad=silero(), config=CONFIG)
    pcm = silence(500) + speech(FIRST) + silence(800)
    streamed = b""
    pieces_during_speech = 0
    ended = None
    for chunk in chunks(pcm, 640):
        for event in detector.feed(chunk, 16000):
            if isinstance(event, TurnEnded):
                ended = event
        piece = detector.take_new_turn_audio()
        pieces_during_speech += bool(piece)
        streamed += piece
    assert ended is not None
    assert streamed.startswith(ended.audio)  # the same samples, sent as they came
    assert len(streamed) - len(ended.audio) <= 2 * 16 * CONFIG.end_silence_ms
    assert pieces_during_speech > 50  # in small pieces, not at the end
    assert detector.take_new_turn_audio() == b""  # outside a turn
