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
