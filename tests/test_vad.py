"""Voice activity detection: Silero on onnxruntime (one model, per-call state) and the energy fallback."""

from __future__ import annotations

import numpy as np
import pytest

from stt.vad import FRAME_SAMPLES, EnergyVad, silero_factory
from tests.speech_samples import at_rate, cough, noise, piper_pcm, silence

FRAME_BYTES = 2 * FRAME_SAMPLES


def frames(pcm: bytes) -> list[bytes]:
    return [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm) - FRAME_BYTES + 1, FRAME_BYTES)]


def probabilities(vad, pcm: bytes) -> list[float]:
    return [vad.speech_probability(frame) for frame in frames(pcm)]


@pytest.fixture(scope="module")
def factory():
    return silero_factory()


def test_silero_hears_speech_and_not_silence_noise_or_a_cough(factory):
    vad = factory()
    assert vad.frame_samples == 512
    spoken = probabilities(vad, at_rate(piper_pcm("I would like to know more about your pricing."), 16000))
    assert np.mean(np.array(spoken) >= 0.5) > 0.6  # most frames of a sentence are speech
    vad.reset()
    assert max(probabilities(vad, silence(2000))) < 0.1
    vad.reset()
    assert np.mean(np.array(probabilities(vad, noise(3000))) >= 0.5) == 0.0
    vad.reset()
    assert np.mean(np.array(probabilities(vad, silence(200) + cough() + silence(500))) >= 0.5) <= 0.1


def test_each_call_has_its_own_state_over_one_shared_model(factory):
    speech = at_rate(piper_pcm("Yes, that works for me."), 16000)
    alone = probabilities(factory(), speech)
    # Two calls interleaved frame by frame give each the same answers as alone.
    first, second = factory(), factory()
    other = noise(len(speech) // 32)
    interleaved = []
    for mine, theirs in zip(frames(speech), frames(other), strict=False):
        interleaved.append(first.speech_probability(mine))
        second.speech_probability(theirs)
    assert interleaved == pytest.approx(alone, abs=1e-6)
    assert first._model is second._model  # one ONNX session per process


def test_reset_forgets_the_stream(factory):
    vad = factory()
    speech = at_rate(piper_pcm("Hello there."), 16000)
    before = probabilities(vad, speech)
    vad.reset()
    assert probabilities(vad, speech) == pytest.approx(before, abs=1e-6)


def test_a_frame_of_the_wrong_size_is_refused(factory):
    with pytest.raises(ValueError, match="1024 bytes"):
        factory().speech_probability(b"\x00" * 1000)
    with pytest.raises(ValueError, match="1024 bytes"):
        EnergyVad().speech_probability(b"\x00" * 10)


def test_the_energy_vad_maps_level_to_probability():
    vad = EnergyVad(floor_dbfs=-50, full_dbfs=-30)
    assert vad.speech_probability(bytes(FRAME_BYTES)) == 0.0
    loud = (np.ones(FRAME_SAMPLES) * 0.1 * 32767).astype("<i2").tobytes()  # -20 dBFS
    assert vad.speech_probability(loud) == 1.0
    middle = (np.ones(FRAME_SAMPLES) * 0.01 * 32767).astype("<i2").tobytes()  # -40 dBFS
    assert vad.speech_probability(middle) == pytest.approx(0.5, abs=0.01)
