"""The speech sink of one assistant reply: text -> speech -> framed PCM to the call's port.

One ``ReplySpeaker`` per reply (one ``utteranceId``). It announces the reply before the
first chunk (``response_start``), each chunk's text as it goes to speech, the chunk's audio
in frames, and a speech error when synthesis of a chunk fails (the reply goes on with the
next chunk). The port turns these into the transport's wire format.

Frames adapt (``tts.framing``): the reply's first frame is at most ``frame_ms`` and leaves
as soon as the engine has it; later ones grow up to ``max_frame_ms``. Speech is paced
(``tts.pool.Pacing``): an engine on the synthesis pool works on this reply only up to
``lookahead`` seconds ahead of what the caller has heard, and a reply's first sentence
goes before other replies' tails.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from django.conf import settings

from calls.telemetry import SPEECH_FAILURES
from llm.turn import ReplyChunk
from tts.base import SpeechEngine, SpeechError
from tts.framing import PcmFramer
from tts.pool import Pacing, reset_pacing, use_pacing
from tts.text_cleaning import clean_for_speech

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from calls.session import CallPort

OnChunk = Callable[[ReplyChunk], None]


class ReplySpeaker:
    def __init__(
        self,
        *,
        call_id: str,
        utterance_id: str,
        engine: SpeechEngine,
        voice_id: str,
        port: CallPort,
        frame_ms: int,
        max_frame_bytes: int,
        on_chunk: OnChunk | None = None,
        max_frame_ms: int | None = None,
        lookahead: float | None = None,
    ) -> None:
        """``max_frame_ms`` and ``lookahead`` default to the settings
        ``VANTUM_MAX_AUDIO_FRAME_MS`` and ``TTS_LOOKAHEAD_SECONDS``."""
        self.call_id = call_id
        self.utterance_id = utterance_id
        self.engine = engine
        self.voice_id = voice_id
        self.port = port
        self.frame_ms = frame_ms
        self.max_frame_bytes = max_frame_bytes
        self.max_frame_ms = max(frame_ms, max_frame_ms or settings.VANTUM_MAX_AUDIO_FRAME_MS)
        self.on_chunk = on_chunk
        self.pacing = Pacing(lookahead=lookahead or settings.TTS_LOOKAHEAD_SECONDS)
        self._framer: PcmFramer | None = None
        self._framer_rate = 0
        self.started = False
        self.first_audio_at: float | None = None
        self.audio_seconds = 0.0
        # Counted in samples, so a chunk's start is exact: the phone port compares it with
        # what Twilio's marks say played, and at 8 kHz (no resampler delay) they can be equal.
        self._samples_at_rate = 0
        self._seconds_before_rate = 0.0
        # Where each chunk's audio starts in the reply (seconds), to tell what was heard.
        self.chunk_audio_starts: dict[int, float] = {}
        self.chunks_sent: list[ReplyChunk] = []

    async def speak(self, chunk: ReplyChunk) -> None:
        await self._ensure_started()
        await self.port.response_text(self.utterance_id, chunk.index, chunk.text)
        if self.on_chunk is not None:
            self.on_chunk(chunk)
        spoken_text = clean_for_speech(chunk.text)
        if not spoken_text:
            return
        sample_rate = self.engine.sample_rate(self.voice_id)
        if self._framer is None or self._framer_rate != sample_rate:
            # One framer per reply, so frames keep growing across its chunks.
            self._framer_rate = sample_rate
            self._seconds_before_rate, self._samples_at_rate = self.audio_seconds, 0
            self._framer = PcmFramer(
                sample_rate, self.frame_ms, self.max_frame_bytes, max_frame_ms=self.max_frame_ms
            )
        framer = self._framer
        pacing = use_pacing(self.pacing)
        try:
            async for block in self.engine.synthesize(spoken_text, voice_id=self.voice_id):
                for frame in framer.feed(block):
                    await self._send_audio(chunk, frame, sample_rate)
            for frame in framer.flush():
                await self._send_audio(chunk, frame, sample_rate)
        except SpeechError as error:
            chunk.failed = True
            SPEECH_FAILURES.inc()
            logger.warning("call=%s speech failed for chunk %d: %s", self.call_id, chunk.index, error)
            await self.port.speech_error("tts", f"Could not speak part of the reply: {error}", True)
        finally:
            reset_pacing(pacing)

    async def _ensure_started(self) -> None:
        if not self.started:
            self.started = True
            await self.port.response_start(self.utterance_id)

    async def _send_audio(self, chunk: ReplyChunk, frame: bytes, sample_rate: int) -> None:
        if chunk.index not in self.chunk_audio_starts:
            self.chunk_audio_starts[chunk.index] = self.audio_seconds
            self.chunks_sent.append(chunk)
        await self.port.response_audio(self.utterance_id, frame, sample_rate)
        seconds = len(frame) / (2 * sample_rate)
        self._samples_at_rate += len(frame) // 2
        self.audio_seconds = self._seconds_before_rate + self._samples_at_rate / sample_rate
        self.pacing.audio_sent(seconds)
        if not chunk.audio_sent:
            chunk.audio_sent = True
            if self.first_audio_at is None:
                self.first_audio_at = time.monotonic()
