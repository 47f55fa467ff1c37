"""The transcription protocol."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable


class TranscriptionError(Exception):
    """The utterance could not be transcribed; the message is shown to the caller."""


class Transcriber(Protocol):
    """Turns one utterance (PCM s16le mono) into text."""

    name: str

    async def transcribe(
        self, pcm: bytes, *, sample_rate: int, language: str | None, call_id: str
    ) -> str: ...


class TranscriptionStream(Protocol):
    """One turn of live transcription: audio goes in while the caller speaks."""

    async def feed(self, pcm: bytes) -> None: ...

    async def finish(self) -> str:
        """The final words of the turn; the stream is closed afterwards."""
        ...

    async def abort(self) -> None: ...


@runtime_checkable
class StreamingTranscriber(Protocol):
    """An engine that transcribes while the caller speaks (``open`` one stream per turn)."""

    name: str

    async def open(
        self,
        *,
        sample_rate: int,
        language: str | None,
        call_id: str,
        on_partial: Callable[[str], None] | None = None,
    ) -> TranscriptionStream: ...
