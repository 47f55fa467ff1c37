"""PCM s16le helpers for utterances. Pure stdlib: no numpy, and no ``audioop`` (removed in
Python 3.13).

All functions take mono signed 16-bit little-endian PCM. An odd trailing byte is half a
sample (a truncated frame): every function ignores it, so ``duration_seconds`` of 32001
bytes at 16 kHz is exactly 1.0 and ``pcm16_to_wav`` writes 16000 frames.
"""

from __future__ import annotations

import array
import io
import math
import sys
import wave


def _samples(pcm: bytes) -> array.array:
    samples = array.array("h")
    samples.frombytes(pcm[: len(pcm) - len(pcm) % 2])  # a trailing odd byte is half a sample
    if sys.byteorder == "big":
        samples.byteswap()
    return samples


def _to_bytes(samples: array.array) -> bytes:
    if sys.byteorder == "big":
        samples = array.array("h", samples)
        samples.byteswap()
    return samples.tobytes()


def _check_rate(name: str, rate: int) -> None:
    if rate <= 0:
        raise ValueError(f"{name} must be a positive sample rate, got {rate}")


def duration_seconds(pcm: bytes, sample_rate: int) -> float:
    """Seconds of audio in ``pcm`` at ``sample_rate`` Hz (> 0)."""
    _check_rate("sample_rate", sample_rate)
    return (len(pcm) // 2) / sample_rate


# Enough samples for a level estimate; a minute at 48 kHz would otherwise cost ~0.3 s of CPU.
RMS_MAX_SAMPLES = 100_000


def pcm16_rms(pcm: bytes) -> float:
    """Root mean square level in sample units (0 to 32768); 0.0 for no samples.

    Long inputs are sampled evenly (at most ``RMS_MAX_SAMPLES``): this is a level
    estimate for silence detection, not a measurement.
    """
    samples = _samples(pcm)
    if not samples:
        return 0.0
    stride = max(1, len(samples) // RMS_MAX_SAMPLES)
    picked = samples[::stride]
    return math.sqrt(sum(s * s for s in picked) / len(picked))


def is_silent(pcm: bytes, threshold: float) -> bool:
    """True when the RMS level is below ``threshold`` (sample units; ~200 is a quiet room)."""
    return pcm16_rms(pcm) < threshold


def resample_pcm16(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    """Resample by linear interpolation; the output has ``round(n * to_rate / from_rate)`` samples.

    No low-pass filter: fine for speech sent to a recogniser, not for music. Equal rates
    return the input (minus an odd trailing byte).
    """
    _check_rate("from_rate", from_rate)
    _check_rate("to_rate", to_rate)
    samples = _samples(pcm)
    if from_rate == to_rate or not samples:
        return _to_bytes(samples)
    count = round(len(samples) * to_rate / from_rate)
    step = from_rate / to_rate
    last = len(samples) - 1
    out = array.array("h", bytes(2 * count))
    for n in range(count):
        position = n * step
        i = int(position)
        if i >= last:
            out[n] = samples[last]
            continue
        frac = position - i
        out[n] = int(samples[i] + (samples[i + 1] - samples[i]) * frac)
    return _to_bytes(out)


def pcm16_to_wav(pcm: bytes, sample_rate: int) -> bytes:
    """A complete mono 16-bit WAV file (RIFF header + ``pcm``) at ``sample_rate`` Hz."""
    _check_rate("sample_rate", sample_rate)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm[: len(pcm) - len(pcm) % 2])
    return buffer.getvalue()
