"""A call's audio as a stereo WAV: left channel the caller, right channel the agent.

The call session feeds a ``CallRecording`` with PCM as it flows (``add_caller`` for what
the caller sent, ``add_agent`` for what the agent sent, each at its own sample rate) and
``await recording.save()`` once the call is over. Feeding only appends bytes and a
timestamp (no work on the audio path); placing, resampling, mixing and writing happen in
a worker thread at the end, off the event loop. The file goes to Django's default storage
(a local folder unless configured otherwise); the call row then points at it.

Placement: each piece goes at the time it arrived, relative to the start of the recording,
but never before the end of the channel's previous piece. Caller audio streams in real
time, so this follows the conversation; agent audio is synthesized faster than real time
and played back to back, which is exactly what the "never before the previous piece" rule
reproduces. ``agent_interrupted()`` (barge-in) cuts off agent audio the caller never heard.

Memory: the audio is appended to one ``SpooledTemporaryFile`` per call, in memory up to
``MEMORY_BYTES`` (about 15 s of a conversation) and then on disk (an unlinked temporary
file: one file descriptor per long call, deleted when the call's recording is done). Kept in
memory, a ten-minute call held ~30 MB until hang-up, so a few hundred long calls could
exhaust the machine's memory.
"""

from __future__ import annotations

import asyncio
import io
import logging
import tempfile
import time
import uuid
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

CALLER, AGENT = 0, 1
MEMORY_BYTES = 512 * 1024  # per call, then the audio goes to a temporary file


@dataclass
class _Piece:
    at: float  # seconds from the start of the recording
    offset: int  # where its 16-bit little-endian mono samples start in the call's audio file
    size: int  # bytes
    rate: int


@dataclass
class _Channel:
    pieces: list[_Piece] = field(default_factory=list)
    end: float = 0.0  # where the last piece ends, in seconds


class CallRecording:
    """One call's recorder. Not thread-safe: feed it from the call's event loop only.

    ``clock`` returns seconds (monotonic); tests pass a fake one to place pieces exactly.
    ``max_seconds`` bounds memory: audio beyond it on either channel is dropped (logged once).
    """

    def __init__(
        self,
        *,
        session_id: uuid.UUID | str,
        rate: int = 16000,
        max_seconds: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.session_id = uuid.UUID(str(session_id))
        self.rate = rate
        self.max_seconds = max_seconds
        self._clock = clock
        self._start = clock()
        self._channels = (_Channel(), _Channel())
        self._audio: tempfile.SpooledTemporaryFile[bytes] | None = None  # both channels' samples
        self._written = 0
        self._full = False
        self.saved_name: str | None = None

    # ------------------------------------------------------------------ feeding (hot path)
    def add_caller(self, pcm: bytes, rate: int) -> None:
        """Audio the caller sent (16-bit mono PCM at ``rate`` Hz), as it arrives."""
        self._add(CALLER, pcm, rate, arrived_at_end=True)

    def add_agent(self, pcm: bytes, rate: int) -> None:
        """Audio the agent sent to the caller (16-bit mono PCM at ``rate`` Hz)."""
        self._add(AGENT, pcm, rate, arrived_at_end=False)

    def agent_interrupted(self) -> None:
        """The caller barged in: agent audio queued after this moment was never heard."""
        channel = self._channels[AGENT]
        cut = self._now()
        # Pieces are in time order: drop the unheard tail, trim the piece that was playing.
        while channel.pieces and channel.pieces[-1].at >= cut:
            channel.pieces.pop()
        if channel.pieces:
            last = channel.pieces[-1]
            heard = int((cut - last.at) * last.rate)
            if heard * 2 < last.size:
                last.size = max(0, heard * 2)
        channel.end = min(channel.end, cut)

    def _add(self, index: int, pcm: bytes, rate: int, *, arrived_at_end: bool) -> None:
        if not pcm or rate <= 0:
            return
        if len(pcm) % 2:
            pcm = pcm[:-1]
        channel = self._channels[index]
        duration = len(pcm) / 2 / rate
        now = self._now()
        # Caller frames arrive once recorded (they end now); agent frames start playing now.
        at = max(channel.end, now - duration if arrived_at_end else now)
        if at + duration > self.max_seconds:
            if not self._full:
                logger.warning(
                    "call=%s recording reached %.0f s; the rest is not recorded",
                    self.session_id,
                    self.max_seconds,
                )
                self._full = True
            return
        if self._audio is None:
            # Closed by discard() (after save), or with the object if the call never saves.
            self._audio = tempfile.SpooledTemporaryFile(max_size=MEMORY_BYTES, prefix="vantum-recording-")  # noqa: SIM115
        self._audio.write(pcm)
        channel.pieces.append(_Piece(at, self._written, len(pcm), rate))
        self._written += len(pcm)
        channel.end = at + duration

    def _now(self) -> float:
        return self._clock() - self._start

    @property
    def empty(self) -> bool:
        return not any(channel.pieces for channel in self._channels)

    # ------------------------------------------------------------------ the end
    def render(self) -> tuple[bytes, float]:
        """The stereo WAV file's bytes and its length in seconds. CPU work: call it off the
        event loop (``save`` does)."""
        tracks = [self._track(channel) for channel in self._channels]
        length = max(len(track) for track in tracks)
        stereo = np.zeros((length, 2), dtype=np.int16)
        for index, track in enumerate(tracks):
            stereo[: len(track), index] = track
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as wav:
            wav.setnchannels(2)
            wav.setsampwidth(2)
            wav.setframerate(self.rate)
            wav.writeframes(stereo.astype("<i2").tobytes())
        return buffer.getvalue(), length / self.rate

    def _track(self, channel: _Channel) -> np.ndarray:
        total = round(channel.end * self.rate)
        track = np.zeros(total, dtype=np.int32)
        for at, rate, pcm in _joined(channel.pieces, self._read):
            samples = resample(np.frombuffer(pcm, dtype="<i2"), rate, self.rate)
            start = round(at * self.rate)
            stop = min(start + len(samples), total)
            if stop > start:
                # Pieces of one channel do not overlap; adding keeps any rounding overlap audible.
                track[start:stop] += samples[: stop - start]
        return np.clip(track, -32768, 32767).astype(np.int16)

    def _read(self, piece: _Piece) -> bytes:
        assert self._audio is not None
        self._audio.seek(piece.offset)
        return self._audio.read(piece.size)

    def discard(self) -> None:
        """Free the audio (its temporary file): after ``save``, or for a call not saved."""
        audio, self._audio = self._audio, None
        for channel in self._channels:
            channel.pieces.clear()
        if audio is not None:
            audio.close()

    async def save(self, *, timeout: float = 60.0, record: Callable[..., None] | None = None) -> str | None:
        """Write the WAV to storage (in a worker thread) and point the call at it.
        Returns the storage name, or None when there was no audio. Never raises: a full
        disk or a storage slower than ``timeout`` seconds loses the recording, not the
        call's other data, and does not hold up the hang-up for longer than that.

        ``record`` is the call's write queue: the pointer is then written in order after the
        call's rows, retried and spooled through a database outage, like them."""
        if self.empty:
            self.discard()
            return None
        try:
            async with asyncio.timeout(timeout):
                try:
                    data, seconds = await asyncio.to_thread(self.render)
                finally:
                    self.discard()
                name = await asyncio.to_thread(self._store, data)
                from channels.db import database_sync_to_async

                from calls.services import call_attach_recording

                attach = {"session_id": self.session_id, "name": name, "seconds": round(seconds, 2)}
                if record is not None:
                    record(call_attach_recording, **attach)
                else:
                    await database_sync_to_async(call_attach_recording)(**attach)
        except Exception:
            logger.exception("call=%s recording could not be saved", self.session_id)
            return None
        self.saved_name = name
        logger.info("call=%s recording saved: %s (%.1f s)", self.session_id, name, seconds)
        return name

    def _store(self, data: bytes) -> str:
        from django.core.files.base import ContentFile
        from django.core.files.storage import default_storage
        from django.utils import timezone

        return default_storage.save(
            f"recordings/{timezone.now():%Y/%m/%d}/{self.session_id}.wav", ContentFile(data)
        )


def _joined(pieces: list[_Piece], read: Callable[[_Piece], bytes]) -> list[tuple[float, int, bytes]]:
    """Back-to-back pieces at one rate as one run ``(start, rate, pcm)``: a ten-minute call
    is thousands of 100 ms frames but a few dozen runs, and each run is resampled in one go."""
    runs: list[tuple[float, int, list[bytes]]] = []  # (start, rate, parts)
    end = 0.0
    for piece in pieces:
        if not piece.size:
            continue
        if runs and piece.rate == runs[-1][1] and abs(piece.at - end) < 0.5 / piece.rate:
            runs[-1][2].append(read(piece))
        else:
            runs.append((piece.at, piece.rate, [read(piece)]))
            end = piece.at
        end += piece.size / 2 / piece.rate
    return [(at, rate, b"".join(parts)) for at, rate, parts in runs]


def resample(samples: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Linear-interpolation resampling of 16-bit samples, as int32. Good enough for a
    review recording of speech; not for music."""
    if source_rate == target_rate or len(samples) == 0:
        return samples.astype(np.int32)
    count = max(1, round(len(samples) * target_rate / source_rate))
    positions = np.arange(count) * (source_rate / target_rate)
    return np.interp(positions, np.arange(len(samples)), samples.astype(np.float64)).round().astype(np.int32)


class RangeNotSatisfiable(ValueError):
    """A byte range that starts beyond the end of the file (HTTP 416)."""


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The first and last byte (inclusive) of ``size`` bytes that an HTTP ``Range`` header
    asks for, so the call view's player can seek in a long recording (RFC 9110 14.1.2).

    One range only. None means "send the whole file": no header, another unit, several
    ranges, or a malformed one, which a server may ignore. Raises ``RangeNotSatisfiable``
    for a range that starts at or past the end (or an empty suffix)."""
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_text, dash, last_text = (part.strip() for part in spec.partition("-"))
    if not dash or not (first_text or last_text) or not (first_text + last_text).isdigit():
        return None
    if not first_text:  # "-500": the last 500 bytes
        suffix = int(last_text)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(f"bytes=-{suffix} of {size} bytes")
        return max(0, size - suffix), size - 1
    first = int(first_text)
    if last_text and int(last_text) < first:
        return None  # "9-3" is not a range
    if first >= size:
        raise RangeNotSatisfiable(f"bytes={first}- of {size} bytes")
    return first, min(int(last_text) if last_text else size - 1, size - 1)


def recording_for_call(*, session_id: uuid.UUID | str) -> CallRecording | None:
    """A recorder for a new call, or None when ``CALL_RECORDINGS`` is false."""
    from django.conf import settings

    if not getattr(settings, "CALL_RECORDINGS", False):
        return None
    return CallRecording(
        session_id=session_id,
        rate=settings.CALL_RECORDING_RATE,
        max_seconds=settings.CALL_RECORDING_MAX_SECONDS,
    )


class AgentAudioTap:
    """A ``CallPort`` that forwards everything to the transport's port and also feeds the
    agent's audio to the call's recording (and cuts it where the caller barged in)."""

    def __init__(self, port: Any, recording: CallRecording) -> None:
        self._port = port
        self._recording = recording

    async def response_audio(self, utterance_id: str, pcm: bytes, sample_rate: int) -> None:
        self._recording.add_agent(pcm, sample_rate)
        await self._port.response_audio(utterance_id, pcm, sample_rate)

    async def response_stop(self, utterance_id: str) -> None:
        self._recording.agent_interrupted()
        await self._port.response_stop(utterance_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._port, name)


def record_agent_audio(port: Any, recording: CallRecording | None) -> Any:
    """``port`` itself when the call is not recorded, else a tap on its agent audio."""
    return port if recording is None else AgentAudioTap(port, recording)
