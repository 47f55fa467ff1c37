"""The transcription protocol."""

from __future__ import annotations

from typing import Protocol


class TranscriptionError(Exception):
    """The utterance could not be transcribed; the message is shown to the caller."""


class Transcriber(Protocol):
    """Turns one utterance (PCM s16le mono) into text."""

    name: str

    async def transcribe(
        self, pcm: bytes, *, sample_rate: int, language: str | None, call_id: str
    ) -> str: ...
