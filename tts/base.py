"""The speech-engine protocol every text-to-speech engine implements."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol


class SpeechError(Exception):
    """Synthesis of one chunk failed; the reply goes on with the next chunk."""


@dataclass(frozen=True, slots=True)
class Voice:
    id: str
    label: str
    language: str = "en"


class SpeechEngine(Protocol):
    """Streams PCM s16le mono for a piece of text.

    ``synthesize`` yields byte blocks as they are produced (any size; the caller frames
    them). Cancelling the consuming task, or ``aclose()`` on the iterator, stops the
    synthesis mid-chunk and releases what it holds. ``sample_rate(voice)`` is the rate of
    the blocks for that voice. Unknown voices fall back to the engine's default voice.
    """

    name: str

    def voices(self) -> list[Voice]: ...

    def resolve_voice(self, voice_id: str | None) -> str: ...

    def sample_rate(self, voice_id: str) -> int: ...

    def synthesize(self, text: str, *, voice_id: str) -> AsyncIterator[bytes]: ...


# Optional capability: native output at another rate.
#
# An engine that can synthesize at a given rate itself (Cartesia renders 8 kHz for the phone)
# may define ``for_rate(sample_rate: int) -> SpeechEngine | None``: a variant of the engine
# whose blocks are at ``sample_rate`` (same voices, same connections), or None when it
# cannot produce that rate. It is optional: callers look it up with ``getattr`` through
# ``engine_for_rate``, and engines without it keep their own rate (the transport converts).


def engine_for_rate(engine: SpeechEngine, sample_rate: int) -> SpeechEngine:
    """``engine``'s variant that speaks at ``sample_rate`` natively, else ``engine`` itself
    (whose audio the transport then resamples, as before)."""
    for_rate = getattr(engine, "for_rate", None)
    if not callable(for_rate):
        return engine
    variant = for_rate(sample_rate)
    return engine if variant is None else variant
