"""Phone audio: μ-law against G.711 values, resampling continuity, framing."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from telephony.audio import (
    FRAME_BYTES,
    PhoneInbound,
    PhoneOutbound,
    Resampler,
    ulaw_decode,
    ulaw_encode,
)


def _pcm(samples) -> bytes:
    return np.asarray(samples, dtype="<i2").tobytes()


def _samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


def _tone(freq: float, seconds: float, rate: int, amplitude: float = 8000.0) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return _pcm(np.round(amplitude * np.sin(2 * math.pi * freq * t)))


def _snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    noise = reference - test
    return 10 * math.log10(np.sum(reference**2) / max(np.sum(noise**2), 1e-9))


def test_ulaw_known_values_from_g711():
    # Silence, full scale both ways, and a mid-range value, worked out from G.711's segments.
    assert ulaw_encode(_pcm([0, 32767, -32768, 1000, -1000])) == bytes([0xFF, 0x80, 0x00, 0xCE, 0x4E])
    assert list(_samples(ulaw_decode(bytes([0xFF, 0x7F, 0x80, 0x00, 0xFE, 0xF0, 0xEF, 0xCE, 0x4E])))) == [
        0,
        0,
        32124,
        -32124,
        8,
        120,
        132,
        988,
        -988,
    ]


def test_ulaw_matches_the_reference_implementation_on_every_sample():
    audioop = pytest.importorskip("audioop", reason="audioop is gone from this Python (3.13+)")
    everything = np.arange(-32768, 32768, dtype="<i2").tobytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert ulaw_encode(everything) == audioop.lin2ulaw(everything, 2)
        assert ulaw_decode(bytes(range(256))) == audioop.ulaw2lin(bytes(range(256)), 2)


def test_ulaw_round_trip_keeps_speech_level_audio_above_35_db_snr():
    pcm = _tone(440, 1.0, 8000, amplitude=8000)
    back = _samples(ulaw_decode(ulaw_encode(pcm)))
    assert _snr_db(_samples(pcm), back) > 35.0


def test_decoding_then_encoding_every_code_gives_it_back():
    codes = bytes(range(256))
    again = ulaw_encode(ulaw_decode(codes))
    # 0x7F and 0xFF are both zero: "negative zero" encodes as positive zero.
    assert [a for a, b in zip(again, codes, strict=True) if a != b] == [0xFF]


def test_resampling_in_20ms_pieces_equals_resampling_in_one_go():
    tone = _tone(300, 1.0, 16000)
    whole = Resampler(16000, 8000)
    one_go = whole.process(tone) + whole.flush()
    pieces = Resampler(16000, 8000)
    # 641 bytes: odd sizes, so samples are split across calls too.
    joined = b"".join(pieces.process(tone[i : i + 641]) for i in range(0, len(tone), 641)) + pieces.flush()
    assert len(one_go) == len(joined) == 16000
    # The filter works in floating point: pieces may round differently by a step or two.
    assert np.max(np.abs(_samples(one_go) - _samples(joined))) <= 2.0


def test_resampled_frames_join_without_clicks():
    """A click is a jump between neighbouring samples far above the signal's own slope."""
    tone = _tone(300, 1.0, 16000)
    resampler = Resampler(16000, 8000)
    frame = 640  # 20 ms at 16 kHz
    out = _samples(b"".join(resampler.process(tone[i : i + frame]) for i in range(0, len(tone), frame)))
    steady = out[400:-400]
    max_step = 8000 * 2 * math.pi * 300 / 8000  # the sine's largest sample-to-sample change
    assert np.max(np.abs(np.diff(steady))) < max_step * 1.1


def test_phone_round_trip_8k_to_16k_and_back_keeps_the_tone():
    tone8 = _tone(440, 1.0, 8000)
    inbound = PhoneInbound(16000)
    up = b"".join(inbound.feed(ulaw_encode(tone8[i : i + 320])) for i in range(0, len(tone8), 320))
    assert 31000 <= len(up) <= 32000  # the stream holds back the filter delay (<= ~30 ms)
    outbound = PhoneOutbound(16000)
    frames = outbound.feed(up) + outbound.flush()
    back = _samples(ulaw_decode(b"".join(frames)))
    original = _samples(tone8)
    # Align on the filter's delay, then compare the steady part.
    best = max(range(0, 40), key=lambda d: float(np.dot(original[1000:7000], back[1000 + d : 7000 + d])))
    assert _snr_db(original[1000:7000], back[1000 + best : 7000 + best]) > 25.0


def test_outbound_gives_whole_20ms_frames_and_pads_the_last_with_silence():
    outbound = PhoneOutbound(22050)
    frames = outbound.feed(_tone(200, 0.51, 22050)) + outbound.flush()
    assert {len(frame) for frame in frames} == {FRAME_BYTES}
    assert len(frames) == 26  # 0.51 s: 25 whole frames of 20 ms and half of one
    assert frames[-1].endswith(b"\xff" * 70)


def test_outbound_at_8k_skips_resampling():
    outbound = PhoneOutbound(8000)
    pcm = _tone(200, 0.02, 8000)
    assert outbound.feed(pcm) == [ulaw_encode(pcm)]


def test_inbound_hands_over_every_20ms_frame_at_once():
    """No block buffering on the caller's side: end of turn is not delayed by the resampler."""
    inbound = PhoneInbound(16000)
    sizes = [len(inbound.feed(ulaw_encode(_tone(300, 0.02, 8000)))) for _ in range(10)]
    assert all(600 <= size <= 640 for size in sizes)
