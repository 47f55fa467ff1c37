"""The interim phone end-of-turn gate (used until CallSession has server turn detection)."""

from __future__ import annotations

import numpy as np

from telephony.endpointing import SPEECH_STARTED, SPEECH_STOPPED, EnergyEndpointer

LOUD = (np.where(np.arange(320) % 40 < 20, 6000, -6000)).astype("<i2").tobytes()  # 20 ms at 16 kHz
QUIET = (np.random.default_rng(1).normal(0, 60, 320)).astype("<i2").tobytes()  # line noise


def _run(frames: list[bytes]) -> list[tuple[int, str]]:
    endpointer = EnergyEndpointer()
    return [(n, change) for n, frame in enumerate(frames) if (change := endpointer.feed(frame))]


def test_speech_starts_after_60_ms_and_ends_after_600_ms_of_quiet():
    frames = [QUIET] * 10 + [LOUD] * 25 + [QUIET] * 40
    assert _run(frames) == [(12, SPEECH_STARTED), (64, SPEECH_STOPPED)]


def test_a_short_click_is_not_speech_and_short_pauses_do_not_end_the_turn():
    click = [QUIET] * 5 + [LOUD] * 2 + [QUIET] * 5
    assert _run(click) == []
    with_pause = [LOUD] * 10 + [QUIET] * 20 + [LOUD] * 10 + [QUIET] * 30
    assert _run(with_pause) == [(2, SPEECH_STARTED), (69, SPEECH_STOPPED)]


def test_empty_and_odd_frames_are_quiet():
    endpointer = EnergyEndpointer()
    assert endpointer.feed(b"") is None
    assert endpointer.feed(b"\x01") is None
    assert endpointer.speaking is False
