"""Deepgram live transcription over its WebSocket API: the only module that speaks Deepgram.

Audio goes to Deepgram while the caller speaks (``open`` a stream per turn, ``feed`` it),
interim words come back for the live caption (``on_partial``), and when the turn ends
``finish`` sends ``Finalize``: Deepgram flushes what it holds as final results marked
``from_finalize``, so the last words arrive one round trip after the decision rather than
after Deepgram's own end-of-speech timer. Then ``CloseStream`` closes the socket.

Who ends the turn: **our VAD, not Deepgram's endpointing** (we connect with
``endpointing=false``). One turn rule for every engine, local or cloud, with the same
barge-in, padding and noise handling; decisions in audio time, so a client that sends
faster or slower than real time, or a slow network, changes nothing; and the server keeps
working the same way when Deepgram is down (the local engine takes over without a second
set of timings to tune). Deepgram's ``speech_final`` is recorded but not acted on.

Failures become ``TranscriptionError`` with a caller-facing message; the turn can be spoken
again. ``DeepgramTranscriber`` also implements the batch ``Transcriber`` protocol (one
stream for a whole utterance), so it works wherever a batch engine does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from urllib.parse import urlencode

import websockets
from websockets.asyncio.client import ClientConnection, connect

from stt.base import TranscriptionError

logger = logging.getLogger(__name__)

DEFAULT_URL = "wss://api.deepgram.com/v1/listen"
KEEPALIVE_SECONDS = 4.0  # Deepgram closes a stream that has had no data for ~10 s
FEED_BYTES = 3200  # 100 ms at 16 kHz: the batch path sends in real-time-sized pieces

MESSAGES = {
    "auth": "Speech-to-text is not available (the server rejected our credentials).",
    "rate_limit": "Speech-to-text is busy right now. Please try again, or type.",
    "timeout": "Speech-to-text took too long. Please try again, or type.",
    "network": "Speech-to-text could not be reached. Please try again, or type.",
    "rejected": "Speech-to-text could not use that recording. Please try again, or type.",
    "failed": "Speech-to-text failed for that recording. Please try again, or type.",
    "empty": "Nothing was recorded. Please try again, or type.",
}


def _handshake_message(error: Exception) -> str:
    status = getattr(getattr(error, "response", None), "status_code", None)
    if status in (401, 403):
        return MESSAGES["auth"]
    if status == 429:
        return MESSAGES["rate_limit"]
    if status == 400:
        return MESSAGES["rejected"]
    if isinstance(error, TimeoutError):
        return MESSAGES["timeout"]
    if isinstance(error, OSError | websockets.exceptions.InvalidHandshake):
        return MESSAGES["network"]
    return MESSAGES["failed"]


class DeepgramStream:
    """One live transcription (see ``TranscriptionStream``). Made by ``DeepgramTranscriber.open``."""

    def __init__(
        self,
        connection: ClientConnection,
        *,
        call_id: str,
        timeout: float,
        on_partial: Callable[[str], None] | None,
        keepalive_seconds: float = KEEPALIVE_SECONDS,
    ) -> None:
        self._ws = connection
        self._keepalive_seconds = keepalive_seconds
        self._call_id = call_id
        self._timeout = timeout
        self._on_partial = on_partial
        self._finals: list[str] = []
        self._interim = ""
        self._last_partial = ""
        self._odd = b""
        self._finalized = asyncio.Event()
        self._error: str | None = None
        self._done = False
        self.request_id: str | None = None
        self.speech_final_seen = False
        self._last_send = time.monotonic()
        self._reader = asyncio.create_task(self._read(), name=f"deepgram-read-{call_id}")
        self._keepalive = asyncio.create_task(self._keep_alive(), name=f"deepgram-keepalive-{call_id}")

    @property
    def text(self) -> str:
        """The final words so far."""
        return " ".join(self._finals).strip()

    async def _read(self) -> None:
        try:
            async for message in self._ws:
                if isinstance(message, bytes):
                    continue
                try:
                    data = json.loads(message)
                except ValueError:
                    logger.warning("call=%s deepgram sent non-JSON text", self._call_id)
                    continue
                self._handle(data)
        except websockets.exceptions.ConnectionClosedError as closed:
            self._closed_with(
                closed.rcvd.code if closed.rcvd else 1006, closed.rcvd.reason if closed.rcvd else ""
            )
        except Exception:  # a reader must never die silently
            logger.exception("call=%s deepgram reader failed", self._call_id)
            self._error = self._error or MESSAGES["failed"]
        finally:
            self._finalized.set()  # nothing more will come: never leave finish() waiting

    def _closed_with(self, code: int, reason: str) -> None:
        if self._done:
            return
        logger.warning("call=%s deepgram closed the stream: %s %s", self._call_id, code, reason)
        if code == 1008:  # DATA-0000: audio it could not decode
            self._error = self._error or MESSAGES["rejected"]
        elif code == 1011 and "NET-0001" in reason:  # no audio for too long
            self._error = self._error or MESSAGES["timeout"]
        else:
            self._error = self._error or MESSAGES["failed"]

    def _handle(self, data: dict) -> None:
        kind = data.get("type")
        if kind == "Results":
            alternatives = (data.get("channel") or {}).get("alternatives") or [{}]
            transcript = (alternatives[0].get("transcript") or "").strip()
            if data.get("is_final"):
                if transcript:
                    self._finals.append(transcript)
                self._interim = ""
                self.speech_final_seen |= bool(data.get("speech_final"))
            else:
                self._interim = transcript
            if data.get("from_finalize"):
                self._finalized.set()
            self._publish_partial()
        elif kind == "Metadata":
            self.request_id = data.get("request_id")
        elif kind == "Error":
            logger.warning(
                "call=%s deepgram error: %s %s", self._call_id, data.get("err_code"), data.get("description")
            )
            self._error = MESSAGES["failed"]
        # SpeechStarted / UtteranceEnd: our VAD owns turn-taking (module docstring).

    def _publish_partial(self) -> None:
        text = " ".join([*self._finals, self._interim]).strip()
        if self._on_partial is not None and text and text != self._last_partial:
            self._last_partial = text
            try:
                self._on_partial(text)
            except Exception:
                logger.exception("call=%s partial-words callback failed", self._call_id)

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self._keepalive_seconds / 4)
            if time.monotonic() - self._last_send >= self._keepalive_seconds:
                with contextlib.suppress(websockets.exceptions.ConnectionClosed):
                    await self._send(json.dumps({"type": "KeepAlive"}))

    async def _send(self, message: bytes | str) -> None:
        self._last_send = time.monotonic()
        await self._ws.send(message)

    async def feed(self, pcm: bytes) -> None:
        """Send audio (PCM s16le at the stream's rate; an odd trailing byte waits for the next)."""
        if self._done:
            raise TranscriptionError(MESSAGES["failed"])
        if self._error:
            raise TranscriptionError(self._error)
        data = self._odd + pcm
        whole = len(data) - len(data) % 2
        self._odd = data[whole:]
        if not whole:
            return
        try:
            await self._send(data[:whole])
        except websockets.exceptions.ConnectionClosed as closed:
            self._closed_with(
                closed.rcvd.code if closed.rcvd else 1006, closed.rcvd.reason if closed.rcvd else ""
            )
            raise TranscriptionError(self._error or MESSAGES["network"]) from closed

    async def finish(self) -> str:
        """The turn's final words (Finalize, wait for the flushed results, CloseStream).

        Raises ``TranscriptionError`` when the stream failed or Deepgram does not answer
        within the timeout.
        """
        if self._done:
            raise TranscriptionError(MESSAGES["failed"])
        try:
            if self._error is None:
                with contextlib.suppress(websockets.exceptions.ConnectionClosed):
                    await self._send(json.dumps({"type": "Finalize"}))
                try:
                    await asyncio.wait_for(self._finalized.wait(), self._timeout)
                except TimeoutError as error:
                    logger.warning(
                        "call=%s deepgram did not finalize in %.1f s", self._call_id, self._timeout
                    )
                    raise TranscriptionError(MESSAGES["timeout"]) from error
            if self._error is not None:
                raise TranscriptionError(self._error)
            return self.text
        finally:
            await self._close(graceful=True)

    async def abort(self) -> None:
        """Drop the stream (barge-in, hang-up): nothing more is read or returned."""
        await self._close(graceful=False)

    async def _close(self, *, graceful: bool) -> None:
        if self._done:
            return
        self._done = True
        self._keepalive.cancel()
        if graceful:
            with contextlib.suppress(websockets.exceptions.ConnectionClosed):
                await self._ws.send(json.dumps({"type": "CloseStream"}))
            # Deepgram answers CloseStream with its Metadata and closes: give it a moment.
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._reader), 1.0)
        self._reader.cancel()
        with contextlib.suppress(Exception):
            await self._ws.close()


class DeepgramTranscriber:
    """Deepgram live transcription (``StreamingTranscriber`` and batch ``Transcriber``).

    ``timeout`` (seconds, > 0) bounds the connection handshake and the wait for the final
    words after ``finish``.
    """

    def __init__(
        self,
        *,
        api_key: str,
        model: str = "nova-3",
        url: str = DEFAULT_URL,
        timeout: float = 10.0,
        interim_results: bool = True,
        keepalive_seconds: float = KEEPALIVE_SECONDS,
    ) -> None:
        self.keepalive_seconds = keepalive_seconds
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.api_key = api_key
        self.model = model
        self.url = url
        self.timeout = timeout
        self.interim_results = interim_results
        self.name = f"deepgram {model}"

    def _url(self, sample_rate: int, language: str | None) -> str:
        params = {
            "model": self.model,
            "encoding": "linear16",
            "sample_rate": str(sample_rate),
            "channels": "1",
            "language": language or "en",
            "punctuate": "true",
            "smart_format": "true",
            "interim_results": "true" if self.interim_results else "false",
            "endpointing": "false",  # our VAD ends turns (module docstring)
        }
        return f"{self.url}?{urlencode(params)}"

    async def open(
        self,
        *,
        sample_rate: int,
        language: str | None,
        call_id: str,
        on_partial: Callable[[str], None] | None = None,
    ) -> DeepgramStream:
        """A connected stream; raises ``TranscriptionError`` when Deepgram refuses or is unreachable."""
        if sample_rate <= 0:
            raise TranscriptionError(MESSAGES["rejected"])
        try:
            connection = await connect(
                self._url(sample_rate, language),
                additional_headers={"Authorization": f"Token {self.api_key}"},
                open_timeout=self.timeout,
                close_timeout=2,
                compression=None,  # PCM does not compress; deflate would only cost CPU
                max_size=2**20,
                proxy=None,
            )
        except Exception as error:
            message = _handshake_message(error)
            level = logging.ERROR if message == MESSAGES["auth"] else logging.WARNING
            logger.log(level, "call=%s deepgram connection failed: %r", call_id, error)
            raise TranscriptionError(message) from error
        return DeepgramStream(
            connection,
            call_id=call_id,
            timeout=self.timeout,
            on_partial=on_partial,
            keepalive_seconds=self.keepalive_seconds,
        )

    async def transcribe(self, pcm: bytes, *, sample_rate: int, language: str | None, call_id: str) -> str:
        """A whole utterance through one stream (the batch ``Transcriber`` protocol)."""
        if len(pcm) < 2:
            raise TranscriptionError(MESSAGES["empty"])
        stream = await self.open(sample_rate=sample_rate, language=language, call_id=call_id)
        try:
            for start in range(0, len(pcm), FEED_BYTES):
                await stream.feed(pcm[start : start + FEED_BYTES])
        except BaseException:
            await stream.abort()
            raise
        return await stream.finish()
