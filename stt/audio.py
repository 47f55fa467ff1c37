"""PCM s16le helpers for utterances. Pure stdlib (``audioop`` is gone in Python 3.13)."""

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


def duration_seconds(pcm: bytes, sample_rate: int) -> float:
    return (len(pcm) // 2) / sample_rate


# Enough samples for a level estimate; a minute at 48 kHz would otherwise cost ~0.3 s of CPU.
RMS_MAX_SAMPLES = 100_000


def pcm16_rms(pcm: bytes) -> float:
    samples = _samples(pcm)
    if not samples:
        return 0.0
    stride = max(1, len(samples) // RMS_MAX_SAMPLES)
    picked = samples[::stride]
    return math.sqrt(sum(s * s for s in picked) / len(picked))


def is_silent(pcm: bytes, threshold: float) -> bool:
    return pcm16_rms(pcm) < threshold


def resample_pcm16(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    """Linear interpolation; the output has ``round(n * to_rate / from_rate)`` samples."""
    samples = _samples(pcm)
    if from_rate == to_rate or not samples:
        return samples.tobytes() if sys.byteorder == "little" else pcm[: len(samples) * 2]
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
    if sys.byteorder == "big":
        out.byteswap()
    return out.tobytes()


def pcm16_to_wav(pcm: bytes, sample_rate: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm[: len(pcm) - len(pcm) % 2])
    return buffer.getvalue()
