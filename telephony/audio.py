"""Phone audio: G.711 μ-law at 8 kHz <-> 16-bit PCM at the speech engines' rates.

Pure (numpy + soxr, no Django). ``audioop`` is deprecated and gone in Python 3.13, so μ-law
is done with lookup tables built once from the G.711 definition (the same values as
``audioop.lin2ulaw`` / ``ulaw2lin``), applied to whole frames with numpy indexing.

Resampling keeps a ``soxr.ResampleStream`` per direction of a call, so consecutive 20 ms
frames are filtered as one continuous signal (no clicks at frame joins).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np
import soxr

from tts.base import engine_for_rate

if TYPE_CHECKING:
    from calls.engines import Engines
    from tts.base import SpeechEngine

PHONE_RATE = 8000
FRAME_MS = 20
FRAME_BYTES = PHONE_RATE * FRAME_MS // 1000  # μ-law: one byte a sample -> 160 bytes per 20 ms

_BIAS = 0x84
_CLIP = 32635


def _build_decode_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    magnitude = (((u & 0x0F) << 3) + _BIAS) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _BIAS - magnitude, magnitude - _BIAS).astype(np.int16)


def _build_encode_table() -> np.ndarray:
    """μ-law byte for every int16 value (index = sample + 32768). Same rounding as the
    reference C code (``audioop``): 14-bit magnitude, bias 33, 8 segments."""
    sample = np.arange(-32768, 32768, dtype=np.int32) >> 2
    negative = sample < 0
    magnitude = np.minimum(np.where(negative, -sample, sample), _CLIP >> 2) + (_BIAS >> 2)
    segment = np.zeros_like(magnitude)
    for bound in (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF):
        segment += magnitude > bound
    code = (segment << 4) | ((magnitude >> (segment + 1)) & 0x0F)
    mask = np.where(negative, 0x7F, 0xFF)
    return (code ^ mask).astype(np.uint8)


_DECODE = _build_decode_table()
_ENCODE = _build_encode_table()


def ulaw_decode(ulaw: bytes) -> bytes:
    """μ-law bytes -> 16-bit little-endian PCM (two bytes per input byte)."""
    return _DECODE[np.frombuffer(ulaw, dtype=np.uint8)].astype("<i2").tobytes()


def ulaw_encode(pcm: bytes) -> bytes:
    """16-bit little-endian PCM -> μ-law bytes. Precondition: an even number of bytes."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.int32)
    return _ENCODE[samples + 32768].tobytes()


class Resampler:
    """One direction of one call: PCM s16le at ``in_rate`` -> PCM s16le at ``out_rate``.

    Keeps the filter state between calls of ``process`` (frames join without clicks) and an
    odd trailing byte, so any split of the input gives the same output. ``flush`` returns the
    filter's tail at the end of an utterance and resets the stream for the next one.
    """

    def __init__(self, in_rate: int, out_rate: int, *, quality: str = "MQ") -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._carry = b""
        # "MQ": 8 kHz telephone audio has nothing above 4 kHz to preserve; the medium
        # quality filter is several times cheaper and has a shorter delay than "HQ".
        self._stream = (
            None
            if in_rate == out_rate
            else soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)
        )

    def process(self, pcm: bytes) -> bytes:
        data = self._carry + pcm
        usable = len(data) - (len(data) % 2)
        self._carry = data[usable:]
        if self._stream is None:
            return data[:usable]
        if not usable:
            return b""
        samples = np.frombuffer(data[:usable], dtype="<i2")
        return self._stream.resample_chunk(samples).astype("<i2").tobytes()

    def flush(self) -> bytes:
        self._carry = b""
        if self._stream is None:
            return b""
        tail = self._stream.resample_chunk(np.zeros(0, dtype=np.int16), last=True)
        self._stream.clear()
        return tail.astype("<i2").tobytes()


class PhoneInbound:
    """Caller audio: μ-law 8 kHz payloads -> PCM at the rate the listener wants."""

    def __init__(self, out_rate: int) -> None:
        self.out_rate = out_rate
        # "QQ" (cubic interpolation): each 20 ms frame comes out at once. The filtered
        # qualities hold audio back in blocks of 60-100 ms, which would delay every end of
        # turn; upsampling has no aliasing to filter, and the recogniser ignores the images.
        self._resampler = Resampler(PHONE_RATE, out_rate, quality="QQ")

    def feed(self, ulaw: bytes) -> bytes:
        return self._resampler.process(ulaw_decode(ulaw))


class PhoneOutbound:
    """Agent audio: PCM at the engine's rate -> μ-law 8 kHz, cut in whole 20 ms frames.

    One per reply (the resampler and the partial frame belong to one continuous utterance).
    ``feed`` returns the complete 160-byte frames ready so far; ``flush`` the rest, the last
    frame padded with μ-law silence so Twilio always gets whole frames.

    Audio already at 8 kHz (an engine asked for phone-rate output, see
    ``phone_speech_engine``) builds no resampler: each sample is μ-law encoded as it is,
    so the frames carry exactly the engine's samples and no filter delay.
    """

    SILENCE = b"\xff"

    def __init__(self, in_rate: int) -> None:
        self.in_rate = in_rate
        self.resampler = None if in_rate == PHONE_RATE else Resampler(in_rate, PHONE_RATE)
        self._carry = b""  # an odd trailing byte of 8 kHz input (half a sample)
        self._pending = bytearray()

    def feed(self, pcm: bytes) -> list[bytes]:
        if self.resampler is not None:
            self._pending += ulaw_encode(self.resampler.process(pcm))
        else:
            data = self._carry + pcm if self._carry else pcm
            usable = len(data) - len(data) % 2
            self._carry = data[usable:]
            self._pending += ulaw_encode(data[:usable])
        return self._take_frames()

    def flush(self) -> list[bytes]:
        if self.resampler is not None:
            self._pending += ulaw_encode(self.resampler.flush())
        self._carry = b""
        if len(self._pending) % FRAME_BYTES:
            self._pending += self.SILENCE * (FRAME_BYTES - len(self._pending) % FRAME_BYTES)
        return self._take_frames()

    def pending_samples(self) -> int:
        """Audio converted but held until a whole frame is ready (8 kHz samples)."""
        return len(self._pending)

    def pending_seconds(self) -> float:
        """The same, in seconds."""
        return len(self._pending) / PHONE_RATE

    def _take_frames(self) -> list[bytes]:
        whole = len(self._pending) - len(self._pending) % FRAME_BYTES
        frames = [bytes(self._pending[i : i + FRAME_BYTES]) for i in range(0, whole, FRAME_BYTES)]
        del self._pending[:whole]
        return frames


def ulaw_seconds(ulaw_bytes: int) -> float:
    """Duration of μ-law 8 kHz audio of this many bytes."""
    return ulaw_bytes / PHONE_RATE


def phone_speech_engine(engine: SpeechEngine) -> SpeechEngine:
    """The engine a phone call should speak with: ``engine``'s 8 kHz variant when it has one
    (the optional ``for_rate`` capability of ``tts.base``: Cartesia), else ``engine`` itself,
    whose audio ``PhoneOutbound`` resamples as before."""
    return engine_for_rate(engine, PHONE_RATE)


def with_phone_speech(engines: Engines) -> Engines:
    """A call's providers with the speech engine swapped for its phone-rate variant; the
    same object when there is none."""
    phone = phone_speech_engine(engines.speech)
    return engines if phone is engines.speech else dataclasses.replace(engines, speech=phone)
