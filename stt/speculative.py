"""Speculative transcription: start transcribing when the caller pauses, not when the turn ends.

``PauseStarted`` arrives ``pause_ms`` into the silence carrying exactly the audio that the
following ``TurnEnded`` will carry if the caller stays silent (``stt.turn_detection``), so a
transcript started at the pause *is* the turn's transcript: the end-of-turn silence hides
the transcription time (docs/BENCHMARKS.md, "Speculative transcription"). When the caller
speaks again the work is cancelled; a job still waiting in the local engine's pool then
never runs.

Pure asyncio, no Django: one per call, driven with the detector's events.
"""

from __future__ import annotations

import asyncio
import logging

from stt.base import Transcriber
from stt.turn_detection import PauseStarted, SpeechResumed, SpeechStarted, TurnEnded, TurnEvent

logger = logging.getLogger(__name__)

RATE = 16000  # turn audio is always 16 kHz


class SpeculativeTranscription:
    """Feed every turn event to ``observe``; ``await transcript(turn_ended)`` for the text.

    ``reused`` counts turns whose speculative transcript was used, ``discarded`` the
    speculative jobs dropped because the caller went on.
    """

    def __init__(self, transcriber: Transcriber, *, language: str | None, call_id: str) -> None:
        self.transcriber = transcriber
        self.language = language
        self.call_id = call_id
        self._audio: bytes | None = None
        self._task: asyncio.Task[str] | None = None
        self.reused = 0
        self.discarded = 0

    def observe(self, event: TurnEvent) -> None:
        """Start work on a pause, drop it when speech resumes. Needs a running loop."""
        if isinstance(event, PauseStarted):
            self._drop()
            self._audio = event.audio
            self._task = asyncio.ensure_future(self._transcribe(event.audio))
        elif isinstance(event, SpeechResumed | SpeechStarted):
            self._drop()

    async def transcript(self, ended: TurnEnded) -> str:
        """The turn's text: the speculative result when its audio is the turn's, else a fresh
        transcription. Raises what the transcriber raises (``TranscriptionError``)."""
        task, audio = self._task, self._audio
        self._task, self._audio = None, None
        if task is not None and audio == ended.audio:
            self.reused += 1
            return await task
        if task is not None:
            self._cancel(task)
        return await self._transcribe(ended.audio)

    def cancel(self) -> None:
        """Drop any work in progress (hang-up, mode switch)."""
        self._drop()

    async def _transcribe(self, audio: bytes) -> str:
        return await self.transcriber.transcribe(
            audio, sample_rate=RATE, language=self.language, call_id=self.call_id
        )

    def _drop(self) -> None:
        if self._task is not None:
            self._cancel(self._task)
        self._task, self._audio = None, None

    def _cancel(self, task: asyncio.Task[str]) -> None:
        self.discarded += 1
        task.cancel()
        # Retrieve the outcome so a failed speculative job never logs "exception never retrieved".
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
