"""``TwilioPort``: the call's output as Twilio Media Streams messages.

Replies go out as μ-law 8 kHz ``media`` messages of 20 ms, with a ``mark`` after each chunk
of a reply (and every ``MARK_EVERY_SECONDS`` within long chunks). Twilio echoes a mark once
the audio before it has played at the caller's end, so what the caller heard is known from
acknowledged marks, not estimated. Barge-in sends ``clear``; the marks Twilio then returns
for audio it dropped do not count as played.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from calls.session import Request
from telephony.audio import FRAME_BYTES, PHONE_RATE, PhoneOutbound
from telephony.twilio_protocol import build_clear, build_mark, build_media

logger = logging.getLogger(__name__)

MARK_EVERY_SECONDS = 0.5
MARK_EVERY_SAMPLES = round(MARK_EVERY_SECONDS * PHONE_RATE)
FRAME_SAMPLES = FRAME_BYTES  # μ-law: one byte a sample

# Positions in a reply are counted in 8 kHz samples (integers): a chunk that starts exactly
# where a mark was placed (audio already at 8 kHz has no resampler delay) is then exactly
# "not yet heard", with no rounding of summed frame durations deciding it.


@dataclass
class _Mark:
    utterance_id: str
    samples: int  # audio of the reply sent before this mark
    chunk: int | None  # the chunk this mark ends, if it ends one


@dataclass
class _Reply:
    outbound: PhoneOutbound | None = None
    sent_samples: int = 0
    played_samples: int = 0
    last_mark_samples: int = 0
    chunk: int = -1
    cleared: bool = False
    complete: bool = False


class TwilioPort:
    """``CallPort`` for one Twilio media stream. ``send_text`` sends one text frame;
    ``on_close`` ends the stream (the consumer waits for the goodbye and hangs up)."""

    def __init__(
        self,
        *,
        stream_sid: str,
        send_text: Callable[[str], Awaitable[None]],
        on_close: Callable[[int], Awaitable[None]],
        call_id: str = "",
    ) -> None:
        self.stream_sid = stream_sid
        self.send_text = send_text
        self.on_close = on_close
        self.call_id = call_id
        self.closed = False
        self.end_reason = ""
        self.end_message: str | None = None
        self.frames_sent = 0
        self.errors: list[str] = []
        self._replies: dict[str, _Reply] = {}
        self._marks: dict[str, _Mark] = {}
        self._names = itertools.count(1)
        self._all_played = asyncio.Event()
        self._all_played.set()

    # ---------------------------------------------------------------- sending
    async def _send(self, text: str) -> None:
        if self.closed:
            return
        try:
            await self.send_text(text)
        except Exception:  # the socket may already be gone (the caller hung up)
            logger.debug("call=%s could not send after close", self.call_id)

    async def _send_frames(self, reply: _Reply, frames: list[bytes]) -> None:
        for frame in frames:
            await self._send(build_media(self.stream_sid, frame))
            reply.sent_samples += FRAME_SAMPLES
            self.frames_sent += 1
        if reply.sent_samples - reply.last_mark_samples >= MARK_EVERY_SAMPLES:
            await self._mark(reply, chunk=None)

    async def _mark(self, reply: _Reply, *, chunk: int | None, utterance_id: str | None = None) -> None:
        uid = utterance_id or next(u for u, r in self._replies.items() if r is reply)
        # The name says what the mark closes (a chunk, a reply's end, or just progress):
        # Twilio only echoes it, and logs and tests can read it.
        kind = (
            "end" if reply.complete and chunk == reply.chunk else "chunk" if chunk is not None else "progress"
        )
        name = f"m{next(self._names)}:{kind}"
        self._marks[name] = _Mark(uid, reply.sent_samples, chunk)
        reply.last_mark_samples = reply.sent_samples
        self._all_played.clear()
        await self._send(build_mark(self.stream_sid, name))

    # ---------------------------------------------------------------- CallPort
    async def response_start(self, utterance_id: str) -> None:
        self._replies[utterance_id] = _Reply()

    async def response_text(self, utterance_id: str, index: int, text: str) -> None:
        reply = self._replies.setdefault(utterance_id, _Reply())
        if reply.chunk >= 0:
            await self._mark(reply, chunk=reply.chunk, utterance_id=utterance_id)
        reply.chunk = index

    async def response_audio(self, utterance_id: str, pcm: bytes, sample_rate: int) -> None:
        reply = self._replies.setdefault(utterance_id, _Reply())
        if reply.cleared:
            return
        if reply.outbound is None or reply.outbound.in_rate != sample_rate:
            reply.outbound = PhoneOutbound(sample_rate)
        await self._send_frames(reply, reply.outbound.feed(pcm))

    async def response_complete(self, utterance_id: str, metrics: dict[str, Any]) -> None:
        reply = self._replies.get(utterance_id)
        if reply is None or reply.cleared:
            return
        reply.complete = True
        if reply.outbound is not None:
            for frame in reply.outbound.flush():
                await self._send(build_media(self.stream_sid, frame))
                reply.sent_samples += FRAME_SAMPLES
                self.frames_sent += 1
        await self._mark(reply, chunk=reply.chunk if reply.chunk >= 0 else None, utterance_id=utterance_id)

    async def response_stop(self, utterance_id: str) -> None:
        """Barge-in: Twilio drops what it still buffers; what was played stays played."""
        reply = self._replies.get(utterance_id)
        if reply is not None and not reply.cleared:
            reply.cleared = True
        for name in [n for n, m in self._marks.items() if m.utterance_id == utterance_id]:
            del self._marks[name]
        if not self._marks:
            self._all_played.set()
        await self._send(build_clear(self.stream_sid))

    async def transcript_user(self, text: str, message_id: str) -> None:
        logger.debug("call=%s caller said %r", self.call_id, text)

    async def request_error(self, request: Request | None, message: str) -> None:
        # A phone has no screen: the caller just hears nothing for that turn.
        self.errors.append(message)
        logger.info("call=%s turn not answered: %s", self.call_id, message)

    async def speech_error(self, error_type: str, message: str, retryable: bool) -> None:
        self.errors.append(message)
        logger.warning("call=%s %s error: %s", self.call_id, error_type, message)

    async def call_ended(self, reason: str, message: str | None) -> None:
        self.end_reason, self.end_message = reason, message

    async def close(self, code: int) -> None:
        if not self.closed:
            await self.on_close(code)

    def played_seconds(self, utterance_id: str) -> float:
        """Seconds of this reply Twilio reported played (acknowledged marks)."""
        reply = self._replies.get(utterance_id)
        return reply.played_samples / PHONE_RATE if reply is not None else 0.0

    def may_be_playing(self, utterance_id: str) -> bool:
        reply = self._replies.get(utterance_id)
        if reply is None or reply.cleared or reply.sent_samples == 0:
            return False
        return not reply.complete or reply.played_samples < reply.sent_samples

    # ---------------------------------------------------------------- from Twilio
    def mark_played(self, name: str) -> None:
        """Twilio echoed a mark: the audio before it has played."""
        mark = self._marks.pop(name, None)
        if mark is None:  # cleared, or not ours
            return
        reply = self._replies.get(mark.utterance_id)
        if reply is not None and not reply.cleared:
            reply.played_samples = max(reply.played_samples, mark.samples)
        if not self._marks:
            self._all_played.set()

    def stop_waiting(self) -> None:
        """The stream is gone: nothing more will be played or acknowledged."""
        self._marks.clear()
        self._all_played.set()

    async def wait_played(self, timeout: float) -> bool:
        """Wait until every mark sent has come back (the goodbye was heard). False on timeout."""
        try:
            await asyncio.wait_for(self._all_played.wait(), timeout)
        except TimeoutError:
            return False
        return True
