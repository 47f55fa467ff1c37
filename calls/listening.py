"""Hands-free listening for one call: server turn detection, voice barge-in, speculative and
streaming speech-to-text. Owned by ``CallSession`` while the call's ``turnDetection`` is
``"server"``; transport-free like the session.

The caller's audio goes in chunk by chunk (``feed``, synchronous: the hot path never
awaits). A per-call ``stt.turn_detection.TurnDetector`` turns it into events in *audio time*;
one worker task handles them in order, so ``speech.started`` always precedes its
``speech.stopped`` and a barge-in never races the turn it belongs to:

    SpeechStarted    -> port.speech_started; a streaming engine opens its stream
    SpeechConfirmed  -> host.caller_confirmed_speech(): the voice barge-in (a cough, a short
                        "mm-hm" never gets this far: it is shorter than BARGE_IN_MIN_SPEECH_MS)
    PauseStarted     -> speculative transcription of the turn so far (batch engines)
    (while speaking) -> every ``STT_LIVE_PARTIAL_MS`` of audio, when the local engine's pool
                        is idle, the growing turn is transcribed for live partial words
    SpeechResumed    -> that speculation is cancelled
    TurnEnded        -> port.speech_stopped; host.caller_turn_ended(HeardTurn) with the
                        speculative transcript when the audio is the same, else none

Buffers are bounded: the detector keeps at most ``max_turn_ms`` of a turn, the pre-roll for
a streaming engine ~0.5 s, the event queue ``QUEUE_LIMIT`` items (audio for a stalled
streaming engine is dropped beyond it, never queued without end), and so is the audio
waiting for a detector that runs in a worker thread (``TURN_SMART``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from django.conf import settings

from stt.base import TranscriptionError

if TYPE_CHECKING:
    from stt.turn_detection import TurnDetector, TurnEnded

logger = logging.getLogger(__name__)

DETECTOR_RATE = 16000  # the detector's audio (TurnEnded.audio, PauseStarted.audio) is 16 kHz
QUEUE_LIMIT = 512
PREROLL_MS = 500  # raw audio kept for a streaming engine, sent when speech starts

_vad_lock = threading.Lock()
_vad_factory: tuple[str, Callable[[], Any]] | None = None


def vad_factory() -> Callable[[], Any]:
    """Per-call VAD streams over the process's one model (built on first use, then kept
    while ``VAD_ENGINE`` names the same engine)."""
    global _vad_factory
    engine = settings.VAD_ENGINE.lower()
    with _vad_lock:
        if _vad_factory is None or _vad_factory[0] != engine:
            from calls.engines import build_vad_factory

            _vad_factory = (engine, build_vad_factory())
        return _vad_factory[1]


@dataclass
class HeardTurn:
    """One caller turn found by the detector, ready for the session to answer."""

    audio: bytes  # 16 kHz PCM s16le: the turn's speech with its padding
    transcript: asyncio.Task[str] | None  # speculative or streaming result; None: transcribe audio
    forced: bool  # cut at the maximum turn length
    reason: str  # "silence", "max_length", "client_end"
    speech_end_ms: int  # audio time of the caller's last speech sample
    ended_at_ms: int  # audio time of the decision
    speech_ms: int = 0  # voiced milliseconds in the turn
    reused_speculation: bool = False


class ListeningHost(Protocol):
    """What the listener needs from its call (``CallSession`` implements it)."""

    port: Any  # calls.session.CallPort
    session_id: str
    language: str | None

    async def caller_confirmed_speech(self, onset_ms: int) -> None:
        """The caller really talks (>= the barge-in minimum; ``onset_ms``: when this speech
        began, audio time): cut the agent if it speaks."""
        ...

    async def caller_turn_ended(self, turn: HeardTurn) -> None:
        """Answer this turn (start its task; must not wait for the answer)."""
        ...

    def caller_may_be_done(self, text: str) -> None:
        """The caller paused and ``text`` is what they said so far: their turn if they stay
        silent (the call may start its answer's model request now)."""
        ...

    def caller_went_on(self) -> None:
        """The words given to ``caller_may_be_done`` are not the turn after all."""
        ...


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


class Listener:
    """Server turn detection for one call (see the module docstring).

    Preconditions: built and used on the event loop; ``close`` once at the end (mode switch
    to client, hang-up).
    """

    def __init__(
        self,
        *,
        host: ListeningHost,
        transcriber: Any,
        detector: TurnDetector | None = None,
        speculative: bool | None = None,
        live_partial_ms: int | None = None,
    ) -> None:
        if detector is None:
            from calls.engines import build_end_of_turn_model, build_turn_config
            from stt.turn_detection import TurnDetector

            # TURN_SMART (off by default): Smart Turn runs inside the detector's feed, ~10-100 ms
            # once per long pause, so that feed then runs in a worker thread (_detect).
            detector = TurnDetector(
                vad=vad_factory()(), config=build_turn_config(), end_of_turn=build_end_of_turn_model()
            )
        self.host = host
        self.detector = detector
        self.transcriber = transcriber
        self.streaming = callable(getattr(transcriber, "open", None))
        if speculative is None:
            speculative = settings.STT_SPECULATIVE
        self.speculative = bool(speculative) and not self.streaming
        if live_partial_ms is None:
            live_partial_ms = settings.STT_LIVE_PARTIAL_MS
        # Live partial words cost a decode each: only for an engine whose pool says when it
        # is idle (the local one), never queued ahead of anyone's end-of-turn transcription.
        self.live_partial_ms = live_partial_ms if hasattr(transcriber, "idle") and not self.streaming else 0
        self.rate = DETECTOR_RATE
        # With an end-of-turn model the detector runs off the event loop, one chunk after the
        # other (None: the client's audio.end), so a long pause never stalls other calls.
        self._offload = getattr(detector, "end_of_turn", None) is not None
        self._raw: collections.deque[tuple[bytes, int] | None] = collections.deque()
        self._raw_wakeup = asyncio.Event()
        self._detector_task: asyncio.Task[None] | None = None
        self._items: collections.deque[tuple[str, Any]] = collections.deque()
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        # speculative transcription: (audio it ran on, task)
        self._speculation: tuple[bytes, asyncio.Task[str]] | None = None
        self._turn_open = False  # between SpeechStarted and TurnEnded
        self._onset_ms = 0  # audio time of the current speech's onset
        # streaming engine
        self._stream: Any = None
        self._preroll: collections.deque[bytes] = collections.deque()
        self._preroll_bytes = 0
        self._dropped = 0
        # live partial words (see _grow_turn)
        self._so_far = bytearray()  # 16 kHz audio of the turn in progress
        self._live_due_ms = 0
        self._pausing = False
        self._live: asyncio.Task[str] | None = None
        self.live_partials_started = 0
        # counters for tests and benchmarks
        self.turns = 0
        self.speculations_started = 0
        self.speculations_reused = 0

    # ------------------------------------------------------------------ input (sync)
    def feed(self, pcm: bytes, sample_rate: int) -> None:
        """Caller audio (PCM s16le mono at ``sample_rate``, any length, odd bytes allowed)."""
        if self._closed or not pcm:
            return
        self.rate = sample_rate
        if self._offload:
            if len(self._raw) >= QUEUE_LIMIT:  # the detector threads are minutes behind
                self._dropped += 1
                if self._dropped == 1:
                    logger.warning("call=%s turn detection is behind: dropping audio", self.host.session_id)
                return
            self._raw.append((pcm, sample_rate))
            self._wake_detector()
            return
        try:
            events = self.detector.feed(pcm, sample_rate)
        except ValueError as error:  # a rate the detector cannot take: nothing to hear
            logger.warning("call=%s listening: %s", self.host.session_id, error)
            return
        self._heard(events, pcm)

    def _heard(self, events: list[Any], pcm: bytes) -> None:
        for event in events:
            self._put(("event", event))
        if self.streaming:
            self._stream_audio(pcm)
        elif self.live_partial_ms:
            self._grow_turn(events)

    def end_now(self) -> bool:
        """The client said ``audio.end``: end the turn at once. False when no speech was heard
        (with an end-of-turn model: True, it is decided after the audio before it)."""
        if self._closed:
            return False
        if self._offload:
            self._raw.append(None)
            self._wake_detector()
            return True
        event = self.detector.end_now()
        if event is None:
            return False
        self._put(("event", event))
        return True

    def _put(self, item: tuple[str, Any]) -> None:
        # Events are few (a handful per turn) and never dropped; streamed audio is dropped
        # beyond QUEUE_LIMIT items (~40 s of browser chunks) when the engine stalls.
        if item[0] == "audio" and len(self._items) >= QUEUE_LIMIT:
            self._dropped += 1
            if self._dropped == 1:
                logger.warning("call=%s listening is behind: dropping streamed audio", self.host.session_id)
            return
        self._items.append(item)
        self._wakeup.set()
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._work())

    def _stream_audio(self, pcm: bytes) -> None:
        if self._turn_open or self.detector.in_turn:
            self._put(("audio", pcm))
            return
        self._preroll.append(pcm)
        self._preroll_bytes += len(pcm)
        limit = 2 * self.rate * PREROLL_MS // 1000
        while self._preroll and self._preroll_bytes - len(self._preroll[0]) >= limit:
            self._preroll_bytes -= len(self._preroll.popleft())

    def _grow_turn(self, events: list[Any]) -> None:
        """Live partial words with a batch engine: while the caller speaks, about every
        ``live_partial_ms`` of audio, transcribe the turn so far, but only when the engine's
        pool is idle (a busy server skips them: end-of-turn transcriptions come first). Work
        for a turn that ended or paused is cancelled (the pause's speculation takes over)."""
        from stt import turn_detection as td

        for event in events:
            if isinstance(event, td.SpeechStarted | td.TurnEnded):
                self._cancel_live()
                self._so_far.clear()
                self._pausing = False
                self._live_due_ms = event.at_ms + self.live_partial_ms
            elif isinstance(event, td.PauseStarted):
                self._cancel_live()
                self._pausing = True
            elif isinstance(event, td.SpeechResumed):
                self._pausing = False
        if not self.detector.in_turn:
            return
        self._so_far += self.detector.take_new_turn_audio()
        if (
            self.detector.audio_ms >= self._live_due_ms
            and not self._pausing
            and self._live is None
            and getattr(self.transcriber, "idle", False)
        ):
            self._live_due_ms = self.detector.audio_ms + self.live_partial_ms
            self.live_partials_started += 1
            self._live = asyncio.get_running_loop().create_task(self._transcribe(bytes(self._so_far)))
            self._live.add_done_callback(self._live_done)

    def _live_done(self, task: asyncio.Task[str]) -> None:
        if task is not self._live:
            return
        self._live = None
        if task.cancelled() or task.exception() is not None:
            return
        text = task.result().strip()
        if text and self._turn_open and self.detector.in_turn:
            self._side(self._tell("transcript_partial", text))

    def _cancel_live(self) -> None:
        live, self._live = self._live, None
        if live is not None:
            live.cancel()
            # Retrieve a failure so it is never logged as "exception never retrieved".
            live.add_done_callback(lambda task: task.cancelled() or task.exception())

    # ------------------------------------------------------------------ off-loop detection
    def _wake_detector(self) -> None:
        self._raw_wakeup.set()
        if self._detector_task is None:
            self._detector_task = asyncio.get_running_loop().create_task(self._detect())

    async def _detect(self) -> None:
        """Feed the detector in a worker thread, in order; events go on as from ``feed``.
        Consecutive chunks at one rate go in together (decisions do not depend on chunking)."""
        loop = asyncio.get_running_loop()
        while True:
            if not self._raw:
                self._raw_wakeup.clear()
                await self._raw_wakeup.wait()
                continue
            item = self._raw.popleft()
            if item is None:
                event = self.detector.end_now()  # no model call: cheap, on the loop
                if event is not None:
                    self._put(("event", event))
                continue
            pcm, rate = item
            parts = [pcm]
            while self._raw and self._raw[0] is not None and self._raw[0][1] == rate:
                parts.append(self._raw.popleft()[0])
            pcm = b"".join(parts)
            try:
                events = await loop.run_in_executor(_detector_pool(), self.detector.feed, pcm, rate)
            except ValueError as error:
                logger.warning("call=%s listening: %s", self.host.session_id, error)
                continue
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("call=%s turn detection failed", self.host.session_id)
                continue
            if not self._closed:
                self._heard(events, pcm)

    # ------------------------------------------------------------------ the worker
    async def _work(self) -> None:
        from stt import turn_detection as td

        while True:
            if not self._items:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            kind, item = self._items.popleft()
            try:
                if kind == "audio":
                    if self._stream is not None:
                        await _maybe_await(self._stream.feed(item))
                elif isinstance(item, td.SpeechStarted):
                    await self._speech_started(item.at_ms)
                elif isinstance(item, td.SpeechConfirmed):
                    await self.host.caller_confirmed_speech(self._onset_ms)
                elif isinstance(item, td.PauseStarted):
                    self._pause_started(item.audio)
                elif isinstance(item, td.SpeechResumed):
                    self._cancel_speculation()
                    self.host.caller_went_on()
                elif isinstance(item, td.TurnEnded):
                    await self._turn_ended(item)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug or an engine failure must not end listening for the rest of the call.
                logger.exception("call=%s listening failed on %s", self.host.session_id, kind)

    async def _speech_started(self, at_ms: int) -> None:
        self._turn_open = True
        self._onset_ms = at_ms
        await self._tell("speech_started", at_ms)
        if self.streaming:
            await self._open_stream()

    def _pause_started(self, audio: bytes) -> None:
        if not self.speculative or not audio:
            return
        self._cancel_speculation()
        task = asyncio.get_running_loop().create_task(self._transcribe(audio))
        self.speculations_started += 1
        self._speculation = (audio, task)
        task.add_done_callback(self._speculation_done)

    async def _transcribe(self, audio: bytes) -> str:
        return await self.transcriber.transcribe(
            audio, sample_rate=DETECTOR_RATE, language=self.host.language, call_id=self.host.session_id
        )

    def _speculation_done(self, task: asyncio.Task[str]) -> None:
        """A speculative transcript of a turn still going on is the caller's words so far."""
        if task.cancelled() or task.exception() is not None:
            return
        speculation = self._speculation
        text = task.result().strip()
        if text and self._turn_open and speculation is not None and speculation[1] is task:
            self._side(self._tell("transcript_partial", text))
            self.host.caller_may_be_done(text)

    def _cancel_speculation(self) -> None:
        if self._speculation is not None:
            self._speculation[1].cancel()
            self._speculation = None

    async def _turn_ended(self, event: TurnEnded) -> None:
        self._turn_open = False
        self.turns += 1
        await self._tell("speech_stopped", event.at_ms)
        transcript: asyncio.Task[str] | None = None
        reused = False
        if self._stream is not None:
            stream, self._stream = self._stream, None
            transcript = asyncio.get_running_loop().create_task(_maybe_await(stream.finish()))
        elif self._speculation is not None:
            audio, task = self._speculation
            self._speculation = None
            if audio == event.audio and not task.cancelled():
                transcript, reused = task, True
                self.speculations_reused += 1
            else:
                task.cancel()
                self.host.caller_went_on()
        if event.forced:
            seconds = self.detector.config.max_turn_ms / 1000
            await self.host.port.speech_error(
                "turn_too_long",
                f"You spoke for {seconds:g} seconds without a pause, so the agent answers what it "
                "heard so far. Pausing now and then lets it keep up.",
                False,
            )
        await self.host.caller_turn_ended(
            HeardTurn(
                audio=event.audio,
                transcript=transcript,
                forced=event.forced,
                reason=event.reason,
                speech_end_ms=getattr(event, "speech_end_ms", event.at_ms),
                ended_at_ms=event.at_ms,
                speech_ms=getattr(event, "speech_ms", 0),
                reused_speculation=reused,
            )
        )

    # ------------------------------------------------------------------ streaming engines
    async def _open_stream(self) -> None:
        if self._stream is not None:
            await self._abort_stream()

        def on_partial(text: str) -> None:
            if text.strip() and self._turn_open:
                self._side(self._tell("transcript_partial", text.strip()))

        try:
            self._stream = await _maybe_await(
                self.transcriber.open(
                    sample_rate=self.rate,
                    language=self.host.language,
                    call_id=self.host.session_id,
                    on_partial=on_partial,
                )
            )
        except TranscriptionError as error:
            logger.warning("call=%s streaming STT could not open: %s", self.host.session_id, error)
            self._stream = None
            return
        preroll, self._preroll = list(self._preroll), collections.deque()
        self._preroll_bytes = 0
        for pcm in preroll:
            await _maybe_await(self._stream.feed(pcm))

    async def _abort_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                await _maybe_await(stream.abort())
            except Exception:
                logger.debug("call=%s stream abort failed", self.host.session_id, exc_info=True)

    # ------------------------------------------------------------------ helpers
    async def _tell(self, method: str, *args: Any) -> None:
        """A hands-free port method; a transport without it (a phone has no screen) skips it."""
        call = getattr(self.host.port, method, None)
        if call is not None:
            await call(*args)

    def _side(self, awaitable: Awaitable[Any]) -> None:
        """Fire-and-forget a port call from a callback (kept referenced until done)."""
        task = asyncio.get_running_loop().create_task(awaitable)
        _side_tasks.add(task)
        task.add_done_callback(_side_tasks.discard)

    async def close(self) -> None:
        """Stop listening: the worker, a speculation, an open stream. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._turn_open = False
        self._cancel_speculation()
        self._cancel_live()
        if self._detector_task is not None:
            self._detector_task.cancel()
            await asyncio.wait({self._detector_task}, timeout=2)
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.wait({self._worker}, timeout=2)
        await self._abort_stream()


_side_tasks: set[asyncio.Task[Any]] = set()
_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def _detector_pool() -> ThreadPoolExecutor:
    """Threads for turn detection with an end-of-turn model (one per core, shared by calls;
    not the transcription pool: a turn's end must not wait behind transcriptions)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="turn-detect")
        return _pool


class ClientTurnStream:
    """Client turn detection (``audio.start`` ... ``audio.end``) with a streaming engine.

    Why: the caller is talking while the audio arrives, so a streaming engine (Deepgram)
    should hear it then, not in one batch after ``audio.end``; its final words are then one
    round trip away when the turn ends. The stream opens at once (construction), ``feed``
    queues each chunk (synchronous: the hot path never awaits), ``finish`` returns the task
    whose result is the turn's words; ``abort`` drops it (a new ``audio.start``, hang-up).

    Interim words go to ``on_partial`` until ``finish``; after it the final words are the
    turn's ``transcript.user``. Buffered audio is bounded by ``QUEUE_LIMIT`` chunks (a
    stalled engine loses audio beyond it, logged), on top of the session's own bound.
    Preconditions: built on the event loop; ``transcriber`` has ``open`` (streaming).
    """

    def __init__(
        self,
        *,
        transcriber: Any,
        sample_rate: int,
        language: str | None,
        call_id: str,
        on_partial: Callable[[str], Awaitable[Any]] | None,
    ) -> None:
        self.call_id = call_id
        self._on_partial = on_partial
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._finishing = False
        self._dropped = 0
        self.fed_bytes = 0  # audio handed to the engine (tests, logs)
        self._task = asyncio.get_running_loop().create_task(
            self._run(transcriber, sample_rate, language), name=f"stt-stream-{call_id}"
        )
        # A stream that fails while nobody awaits it (aborted turn) must not log "never retrieved".
        self._task.add_done_callback(lambda task: task.cancelled() or task.exception())

    def feed(self, pcm: bytes) -> None:
        if self._finishing or not pcm:
            return
        if self._queue.qsize() >= QUEUE_LIMIT:
            self._dropped += 1
            if self._dropped == 1:
                logger.warning("call=%s streaming STT is behind: dropping audio", self.call_id)
            return
        self._queue.put_nowait(pcm)

    def finish(self) -> asyncio.Task[str]:
        """The turn is over: the task of its final words (raises ``TranscriptionError``)."""
        if not self._finishing:
            self._finishing = True
            self._queue.put_nowait(None)
        return self._task

    def abort(self) -> None:
        self._finishing = True
        self._task.cancel()

    def _partial(self, text: str) -> None:
        if text.strip() and not self._finishing and self._on_partial is not None:
            task = asyncio.get_running_loop().create_task(self._on_partial(text.strip()))
            _side_tasks.add(task)
            task.add_done_callback(_side_tasks.discard)

    async def _run(self, transcriber: Any, sample_rate: int, language: str | None) -> str:
        stream = await _maybe_await(
            transcriber.open(
                sample_rate=sample_rate, language=language, call_id=self.call_id, on_partial=self._partial
            )
        )
        try:
            while True:
                pcm = await self._queue.get()
                if pcm is None:
                    break
                await _maybe_await(stream.feed(pcm))
                self.fed_bytes += len(pcm)
        except BaseException:
            with contextlib.suppress(Exception):
                await _maybe_await(stream.abort())
            raise
        return await _maybe_await(stream.finish())
