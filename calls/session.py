"""One call's behaviour, free of any transport: ``CallSession``.

A transport (the browser's ``/ws`` consumer, a phone stream) checks its connection, decodes
its frames and calls plain methods here (``text_input``, ``audio_chunk``, ``end`` ...). The
session answers through its ``CallPort``: semantic calls (``response_audio``, ``call_ended``
...) that each transport turns into its own wire format. So the turns, barge-in, transcript
writes, metrics and live events exist once, whatever carries the call.

Each turn runs in its own task, so barge-in and hang-up are never blocked; database writes
are queued to ``TranscriptRecorder`` and never awaited between a token and its audio.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone

from bookings.services import bookings_link_call
from bookings.tools import call_tool_registry
from calls import instances, limits, live, protocol, services, telemetry
from calls.engines import LLM_METRICS, Engines, get_engines, get_session_registry
from calls.listening import ClientTurnStream, HeardTurn, Listener
from calls.recorder import TranscriptRecorder
from calls.recording import record_agent_audio, recording_for_call
from calls.speech_out import ReplySpeaker
from calls.webhook import call_report_queue, schedule_call_report
from llm.prefetch import PrefetchingProvider
from llm.session import Conversation, QueueFullError
from llm.turn import Reply, ReplyChunk
from stt.audio import duration_seconds, is_silent
from stt.base import TranscriptionError

if TYPE_CHECKING:
    from agents.models import PromptVersion

logger = logging.getLogger(__name__)

_active_calls: set[str] = set()

# Hands-free: speech starting this soon (audio ms) after a turn that is still being
# transcribed continues that turn rather than interrupting its answer.
CONTINUATION_MS = 1000


def active_call_count() -> int:
    """Calls this process serves right now."""
    return len(_active_calls)


def has_capacity() -> bool:
    """Whether this process may take one more call (``VANTUM_MAX_CALLS``)."""
    return len(_active_calls) < settings.VANTUM_MAX_CALLS


@dataclass(frozen=True)
class Request:
    """The client request a reply or an error belongs to (opaque to the session)."""

    event_type: str
    event_id: str | None = None


class CallPort(Protocol):
    """What a transport does with the call's output. Every method may be called after the
    caller hung up; implementations must then do nothing rather than raise."""

    async def response_start(self, utterance_id: str) -> None: ...
    async def response_text(self, utterance_id: str, index: int, text: str) -> None: ...
    async def response_audio(self, utterance_id: str, pcm: bytes, sample_rate: int) -> None: ...
    async def response_complete(self, utterance_id: str, metrics: dict[str, Any]) -> None: ...
    async def response_stop(self, utterance_id: str) -> None: ...
    async def transcript_user(self, text: str, message_id: str) -> None: ...
    async def request_error(self, request: Request | None, message: str) -> None: ...
    async def speech_error(self, error_type: str, message: str, retryable: bool) -> None: ...
    async def call_ended(self, reason: str, message: str | None) -> None: ...
    async def close(self, code: int) -> None: ...
    # Hands-free (server turn detection); ``at_ms`` is audio time since listening began.
    async def speech_started(self, at_ms: int) -> None: ...
    async def speech_stopped(self, at_ms: int) -> None: ...
    async def transcript_partial(self, text: str) -> None: ...

    def played_seconds(self, utterance_id: str) -> float:
        """Seconds of this reply's audio the caller has heard so far (best knowledge)."""
        ...

    def may_be_playing(self, utterance_id: str) -> bool:
        """Whether this reply's audio could still be playing at the caller's end."""
        ...


class CallSession:
    """The behaviour of one call. Build it, ``await start()``, drive it, ``await hangup()``.

    Preconditions: ``start`` runs once, before any other method; the transport calls
    ``hangup`` exactly once when its connection is gone (after ``end`` too).
    """

    def __init__(self, *, port: CallPort, transport: str = "browser", phone_number: str = "") -> None:
        self.transport = transport
        self.phone_number = phone_number  # the other party's, on a phone call
        self.session_id = protocol.new_id()
        self.call_uuid = uuid.UUID(self.session_id)
        # Both sides of the call's audio, stored at hang-up (None when CALL_RECORDINGS is false).
        self.recording = recording_for_call(session_id=self.session_id)
        self.port = record_agent_audio(port, self.recording)
        self.engines: Engines = get_engines()
        self.conversation: Conversation | None = None
        self.recorder = TranscriptRecorder(call_id=self.session_id)
        self.voice_id = self.engines.speech.resolve_voice(None)
        self.language: str | None = None
        self.end_reason = ""
        self.seq = 0
        self.turn_tasks: set[asyncio.Task[None]] = set()
        # Each turn's "my words are in" signal, resolved in the order turns were heard.
        self._turn_order: dict[asyncio.Task[None], asyncio.Future[None]] = {}
        self._last_turn_in_order: asyncio.Future[None] | None = None
        self.side_tasks: set[asyncio.Task[Any]] = set()
        self.watchers = live.Watchers()  # staff following this call live
        # The reply being produced, and the last one produced (it may still be playing).
        self.replying: tuple[asyncio.Task[Any], ReplySpeaker, int, Reply] | None = None
        self.last_speaker: tuple[ReplySpeaker, int, Reply] | None = None
        self.utterance: bytearray | None = None
        self.utterance_rate = protocol.DEFAULT_SAMPLING_RATE
        self.utterance_too_long = False
        self.utterance_over_budget = False  # VANTUM_MAX_AUDIO_BUFFER_BYTES was reached
        self.utterance_reserved = 0  # bytes of the process audio budget this utterance holds
        self.client_stream: ClientTurnStream | None = None  # a streaming engine hearing the utterance
        self.turn_rate = limits.TurnRate(settings.VANTUM_MAX_TURNS_PER_MINUTE)
        self._started = False
        # Hands-free: the listener exists while turnDetection is "server".
        self.turn_detection = "client"
        self.listener: Listener | None = None
        self.input_rate = protocol.DEFAULT_SAMPLING_RATE  # from the last audio.start
        self.transcribing: dict[asyncio.Task[None], HeardTurn] = {}  # voice turns not yet committed
        self.carry_audio = b""  # a turn the caller went on from: joins the next one
        self.voices_told: set[str] = set()
        self._closed: asyncio.Event | None = None  # made on first use (memory of idle calls)
        self.prompt_version: PromptVersion | None = None  # set at start (None: database down, no version yet)
        self.ending_reply: Reply | None = None  # the agent's reply that ended the call (end_call)

    # ---------------------------------------------------------------- life cycle
    async def start(self, *, profile_name: str | None = None) -> None:
        """Open the call: conversation, capacity slot, stored row, live registry.
        ``profile_name``: the agent profile whose prompt version to use (None: the default)."""
        # An A/B split of the agent profile, else its active version (created at first
        # start); the last one seen when the database is down: a new call still connects and
        # its rows arrive after recovery.
        version = await database_sync_to_async(instances.prompt_version_for_new_call)(profile_name)
        config = instances.llm_config_for_new_call(version)
        self.prompt_version = version
        chat = self.engines.chat
        self.conversation = Conversation(
            call_id=self.session_id,
            # Per call: it holds this call's preemptive request (hands-free only).
            provider=PrefetchingProvider(chat) if config.preemptive_generation else chat,
            config=config,
            metrics=LLM_METRICS,
            tools=call_tool_registry(timeout=config.tool_timeout, record=self.recorder.record),
        )
        self._started = True
        _active_calls.add(self.session_id)
        telemetry.ACTIVE_CALLS.set(len(_active_calls))
        telemetry.CALLS.inc()
        get_session_registry().register(self.conversation, self._expire)
        instances.call_opened(self.session_id, self._end_and_wait)
        self.recorder.record(
            services.call_start,
            session_id=self.call_uuid,
            started_at=timezone.now(),
            prompt_version_id=version.pk if version else None,
            server_instance=instances.INSTANCE_ID,
            voice_id=self.voice_id,
            # The demo responder is no model: never store a real model's name for it.
            llm_model="demo" if self.engines.chat.name == "demo" else config.params.model,
            tts_engine=self.engines.speech.name,
            stt_engine=self.engines.transcriber.name if self.engines.transcriber else "none",
            transport=self.transport,
            phone_number=self.phone_number,
        )
        logger.info(
            "call=%s started over %s (prompt v%s)",
            self.session_id,
            self.transport,
            getattr(version, "number", "-"),
        )

    async def hangup(self) -> None:
        """The transport is gone: cancel turns, record the end, drain the writes."""
        if not self._started:
            return
        self._started = False
        _active_calls.discard(self.session_id)
        telemetry.ACTIVE_CALLS.set(len(_active_calls))
        get_session_registry().unregister(self.session_id)
        self._release_utterance()
        self._drop_client_stream()
        if self.conversation is not None:
            self.conversation.discard_prefetch()
        # Set before cancelling: a turn cut by a hang-up must not write to the closed socket.
        self.end_reason = reason = self.end_reason or "hangup"
        if self.listener is not None:
            await self.listener.close()
        self._mark_last_reply_heard()  # it may still have been playing when the caller left
        tasks = list(self.turn_tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        self.recorder.record(
            services.call_end, session_id=self.call_uuid, reason=reason, ended_at=timezone.now()
        )
        self.recorder.record(bookings_link_call, session_id=self.call_uuid)
        # No outcome from the agent or staff: no decision (failed when the call broke).
        self.recorder.record(
            services.call_settle_outcome, session_id=self.call_uuid, failed=reason == "error"
        )
        self._publish({"kind": "ended", "reason": reason})
        try:
            if self.recording is not None:
                # Resampled and written in a worker thread while the rows above are written;
                # the call's pointer to it is queued after them (kept through an outage).
                await self.recording.save(record=self.recorder.record)
            call_report_queue(record=self.recorder.record, session_id=self.call_uuid)  # webhook outbox
            await self.recorder.close(wait_seconds=5)
        finally:
            instances.call_closed(self.session_id)
            self._closed_event().set()
        schedule_call_report(session_id=self.call_uuid)  # the webhook, in the background
        logger.info("call=%s ended: %s", self.session_id, reason)

    async def end(self, *, reason: str, message: str | None = None) -> None:
        """End the call from our side (staff, expiry, the agent, shutdown): stop the reply,
        tell the caller why, close. The transport then reports ``hangup``."""
        if self.end_reason or not self._started:
            return
        self.end_reason = reason
        logger.info("call=%s ending: %s", self.session_id, reason)
        await self._barge_in()
        await self.port.call_ended(reason, message)
        await self.port.close(1000)

    async def _expire(self, call_id: str, reason: str) -> None:
        await self.end(reason=reason)

    async def _end_and_wait(self, reason: str) -> None:
        """Server shutdown: end the call, then wait until its rows are stored (or spooled)."""
        message = SHUTDOWN_MESSAGE if reason == instances.SHUTDOWN_REASON else None
        await self.end(reason=reason, message=message)
        await asyncio.wait_for(self._closed_event().wait(), settings.VANTUM_SHUTDOWN_SECONDS)

    def _closed_event(self) -> asyncio.Event:
        """Set once the call's rows are stored (or spooled) at hang-up."""
        if self._closed is None:
            self._closed = asyncio.Event()
        return self._closed

    # ---------------------------------------------------------------- caller input
    async def audio_start(
        self, *, request: Request, sample_rate: int | None, voice_id: str | None, language: str | None
    ) -> None:
        """The caller starts talking (client turn detection): a barge-in, then a new utterance.

        With server turn detection it only sets the rate of the chunks that follow: the
        caller's voice, not the button, decides when a turn starts and cuts the agent."""
        self.input_rate = sample_rate or protocol.DEFAULT_SAMPLING_RATE
        await self._apply_voice(voice_id, language)
        if self.listener is not None:
            return
        await self._barge_in()
        self._begin_utterance(self.input_rate)
        transcriber = self.engines.transcriber
        if callable(getattr(transcriber, "open", None)):
            # A streaming engine hears the utterance while the caller speaks (calls.listening).
            # Only from audio.start: chunks sent before it keep the batch path (one connection).
            self.client_stream = ClientTurnStream(
                transcriber=transcriber,
                sample_rate=self.input_rate,
                language=self.language,
                call_id=self.session_id,
                on_partial=getattr(self.port, "transcript_partial", None),  # a phone has no screen
            )

    def audio_chunk(self, pcm: bytes, *, muted: bool = False) -> None:
        """Caller audio at the utterance's rate; muted chunks carry no speech."""
        if self.listener is not None:
            # A muted chunk is silence for the detector: audio time goes on, a turn can end.
            heard = bytes(len(pcm)) if muted else pcm
            if self.recording is not None:
                self.recording.add_caller(heard, self.input_rate)
            self.listener.feed(heard, self.input_rate)
            return
        if muted:
            return
        if self.utterance is None:
            # The browser client may send a few chunks before audio.start: 16 kHz.
            self._begin_utterance(protocol.DEFAULT_SAMPLING_RATE)
        if self.recording is not None:
            self.recording.add_caller(pcm, self.utterance_rate)
        limit = int(settings.STT_MAX_UTTERANCE_SECONDS * self.utterance_rate * 2)
        if self.utterance_too_long or len(self.utterance) + len(pcm) > limit:
            self.utterance_too_long = True
            return
        if not limits.audio_buffer().reserve(len(pcm)):  # all calls' buffered audio is bounded
            self.utterance_too_long = self.utterance_over_budget = True
            return
        self.utterance_reserved += len(pcm)
        self.utterance.extend(pcm)
        if self.client_stream is not None:
            self.client_stream.feed(pcm)

    async def audio_end(self, *, request: Request) -> None:
        """The caller's utterance is over: transcribe it, then answer. With server turn
        detection: the turn in progress ends now (nothing happens when none is)."""
        if self.listener is not None:
            self.listener.end_now()
            return
        pcm, rate, too_long = bytes(self.utterance or b""), self.utterance_rate, self.utterance_too_long
        over_budget = self.utterance_over_budget
        self.utterance = None
        self.utterance_too_long = self.utterance_over_budget = False
        self._release_utterance()
        stream, self.client_stream = self.client_stream, None
        if (over_budget or too_long) and stream is not None:
            stream.abort()
        if over_budget:
            await self.port.request_error(
                request,
                "The server is holding too much caller audio right now, so that utterance was not "
                "transcribed. Please say it again in shorter parts.",
            )
            return
        if too_long:
            await self.port.request_error(
                request,
                f"The utterance was longer than {settings.STT_MAX_UTTERANCE_SECONDS:g} s and was not "
                "transcribed. Please say it in shorter parts.",
            )
            return
        if await self._turn_allowed(request):
            streamed = stream.finish() if stream is not None else None
            self._start_turn(voice=(pcm, rate), request=request, streamed=streamed)
        elif stream is not None:
            stream.abort()

    async def text_input(self, text: str, *, request: Request) -> None:
        """A typed turn: a barge-in, then the text is the caller's words."""
        await self._barge_in()
        if await self._turn_allowed(request):
            self._start_turn(text=text.strip(), request=request)

    async def _turn_allowed(self, request: Request) -> bool:
        """``VANTUM_MAX_TURNS_PER_MINUTE``: a flood of turns must not become model requests."""
        if self.turn_rate.allow():
            return True
        telemetry.REJECTED_TURNS.inc()
        await self.port.request_error(
            request,
            f"Too many turns: at most {self.turn_rate.per_minute} a minute. "
            f"Please wait {self.turn_rate.retry_after():.0f} s.",
        )
        return False

    async def update(
        self,
        *,
        request: Request,
        prospect: dict[str, str] | None = None,
        voice_id: str | None = None,
        language: str | None = None,
        turn_detection: str | None = None,
    ) -> None:
        """Prospect data, voice, language and turn detection for the following turns."""
        if prospect:
            self.conversation.update_prospect(prospect)
        await self._apply_voice(voice_id, language)
        if turn_detection is not None:
            await self.switch_turn_detection(turn_detection, request)
        self.recorder.record(
            services.call_update_settings,
            session_id=self.call_uuid,
            prospect=dict(self.conversation.prospect) if prospect else None,
            voice_id=self.voice_id,
            language=self.language,
        )

    def _begin_utterance(self, rate: int) -> None:
        self._release_utterance()
        self.utterance = bytearray()
        self.utterance_rate = rate
        self.utterance_too_long = self.utterance_over_budget = False
        self._drop_client_stream()

    def _drop_client_stream(self) -> None:
        if self.client_stream is not None:
            self.client_stream.abort()
            self.client_stream = None

    def _release_utterance(self) -> None:
        if self.utterance_reserved:
            limits.audio_buffer().release(self.utterance_reserved)
            self.utterance_reserved = 0

    async def _apply_voice(self, voice_id: str | None, language: str | None) -> None:
        if voice_id:
            self.voice_id, known = resolve_voice_alias(self.engines.speech, voice_id)
            if not known and voice_id not in self.voices_told:
                self.voices_told.add(voice_id)  # once per voice and call: clients resend it often
                await self.port.speech_error(
                    "voice",
                    f"The voice {voice_id!r} is not available on this server; the agent speaks with "
                    f"{self.voice_id!r}. Map it with VOICE_ALIASES.",
                    False,
                )
        if language:
            self.language = language

    # ---------------------------------------------------------------- hands-free
    async def switch_turn_detection(self, mode: str, request: Request | None = None) -> bool:
        """Switch between client ("client": audio.start/audio.end) and server turn detection
        ("server": the session's VAD ends turns). True when the call is now in ``mode``.

        A switch drops what the other mode had half-heard: an open client utterance, or the
        detector's turn in progress (audio time restarts at 0). Server mode needs a
        speech-to-text engine; without one the caller is told and the mode stays."""
        if mode == self.turn_detection:
            return True
        if mode == "server":
            if self.engines.transcriber is None:
                await self.port.request_error(
                    request or Request(protocol.SESSION_UPDATE),
                    "Hands-free needs speech-to-text, which is not configured on this server. "
                    "Please type your message instead.",
                )
                return False
            self.utterance = None
            self._release_utterance()
            self._drop_client_stream()
            self.listener = Listener(host=self, transcriber=self.engines.transcriber)
        else:
            listener, self.listener = self.listener, None
            if listener is not None:
                await listener.close()
        self.turn_detection = mode
        logger.info("call=%s turn detection: %s", self.session_id, mode)
        return True

    async def caller_confirmed_speech(self, onset_ms: int) -> None:
        """Voice barge-in: the caller has talked for at least ``BARGE_IN_MIN_SPEECH_MS``.

        Speech that began within ``CONTINUATION_MS`` (audio time) of the end of a voice turn
        still being transcribed continues that turn: the turn is dropped and its audio joins
        the coming one (the caller only paused). Otherwise a reply being produced or possibly
        still playing is cut exactly as a typed barge-in cuts it (``response.stop``, only what
        was heard kept).

        After a false start (the caller stops, no words) the cut reply is not resumed: the
        caller has heard the agent stop and now has the turn; replaying the rest of a
        sentence cut at an unknown word would sound broken, and the transcript already
        records what was heard. The barge-in minimum keeps coughs and "mm-hm"s from cutting.
        """
        for task, heard in list(self.transcribing.items()):
            if heard.forced or not 0 <= onset_ms - heard.ended_at_ms <= CONTINUATION_MS:
                continue  # a forced turn is final; a later start is a new turn
            task.cancel()
            self.transcribing.pop(task, None)
            self._carry(heard.audio)
        await self._barge_in()

    def caller_may_be_done(self, text: str) -> None:
        """Preemptive generation: the caller paused after ``text``; unless a turn is still
        being transcribed or answered, ask the model now (held until the turn takes it)."""
        if self.conversation is None or self.transcribing or self.turn_tasks:
            return
        self.conversation.prefetch(text)

    def caller_went_on(self) -> None:
        if self.conversation is not None:
            self.conversation.discard_prefetch()

    def _agent_may_be_speaking(self) -> bool:
        if self.replying is not None:
            return True
        if self.last_speaker is None:
            return False
        speaker = self.last_speaker[0]
        return speaker.first_audio_at is not None and self.port.may_be_playing(speaker.utterance_id)

    def _carry(self, audio: bytes) -> None:
        """Keep a dropped turn's audio (16 kHz) for the next one, at most one turn's length."""
        max_turn_ms = self.listener.detector.config.max_turn_ms if self.listener else settings.TURN_MAX_MS
        self.carry_audio = (self.carry_audio + audio)[-(32 * max_turn_ms) :]

    async def caller_turn_ended(self, turn: HeardTurn) -> None:
        """The detector ended a caller turn: answer it (transcription first, in the turn task).

        A turn too short to interrupt (< ``BARGE_IN_MIN_SPEECH_MS`` of speech) heard while
        the agent was speaking is a backchannel ("mm-hm", "right"): the agent keeps the
        floor and does not answer it."""
        if (
            not turn.forced
            and turn.reason != "client_end"
            and self.listener is not None
            and turn.speech_ms < self.listener.detector.config.barge_in_min_speech_ms
            and self._agent_may_be_speaking()
        ):
            if turn.transcript is not None:
                turn.transcript.cancel()
            logger.info(
                "call=%s a %d ms backchannel while the agent spoke: no turn", self.session_id, turn.speech_ms
            )
            return
        if self.carry_audio:
            if turn.transcript is not None:
                turn.transcript.cancel()  # it heard only the second half
            turn = HeardTurn(
                audio=self.carry_audio + turn.audio,
                transcript=None,
                forced=turn.forced,
                reason=turn.reason,
                speech_end_ms=turn.speech_end_ms,
                ended_at_ms=turn.ended_at_ms,
            )
            self.carry_audio = b""
        request = Request(protocol.AUDIO_CHUNK)
        if not await self._turn_allowed(request):
            if turn.transcript is not None:
                turn.transcript.cancel()
            return
        task = self._start_turn(request=request, heard=turn)
        self.transcribing[task] = turn

    # ---------------------------------------------------------------- turns
    async def _barge_in(self) -> None:
        """Cut the reply being produced, or stop playback of the last one. Either way the
        transcript and the model keep only what the caller heard of it."""
        if self.replying is not None:
            task = self.replying[0]
            task.cancel()  # the turn keeps what was heard as it stops (``_run_turn``)
            await asyncio.wait({task}, timeout=2)
            return
        if self.last_speaker is None:
            return
        speaker, seq, reply = self.last_speaker
        self.last_speaker = None
        if speaker.first_audio_at is not None and self.port.may_be_playing(speaker.utterance_id):
            await self.port.response_stop(speaker.utterance_id)
            self._keep_heard(reply, speaker)
            self._record_heard(reply, seq)
            self._publish(
                {
                    "kind": "stop",
                    "utteranceId": speaker.utterance_id,
                    "heardChunks": [chunk.index for chunk in reply.chunks if chunk.heard],
                }
            )

    def _mark_last_reply_heard(self) -> None:
        """At hang-up: a finished reply whose audio was still playing was cut off.

        Browser calls only: the browser's playback is an estimate from the clock, which
        keeps running once the caller left; a phone's played audio is what Twilio's marks
        acknowledged, and marks still in flight when the stream stops are lost with it (so
        every phone reply would be stored as unheard)."""
        if self.transport != "browser" or self.replying is not None or self.last_speaker is None:
            return
        speaker, seq, reply = self.last_speaker
        self.last_speaker = None
        if speaker.first_audio_at is not None and self.port.may_be_playing(speaker.utterance_id):
            self._keep_heard(reply, speaker)
            self._record_heard(reply, seq)

    def _keep_heard(self, reply: Reply, speaker: ReplySpeaker) -> None:
        """The reply was cut while the caller's side still had audio of it to play: keep as
        said only the chunks whose audio had started playing (the port knows: the browser's
        playback estimate, the phone's acknowledged marks), in the reply and the model's
        context. Audio is sent ahead of playback, so "sent" is not "heard"."""
        played = self.port.played_seconds(speaker.utterance_id)
        reply.keep_heard({index for index, start in speaker.chunk_audio_starts.items() if start < played})
        if self.conversation is not None:
            self.conversation.revise_reply(reply)

    def _record_heard(self, reply: Reply, seq: int) -> None:
        """Store the cut reply's heard text and chunks (its row was queued before)."""
        self.recorder.record(
            services.message_keep_heard,
            session_id=self.call_uuid,
            seq=seq,
            text=reply.said_text,
            heard=[chunk.index for chunk in reply.chunks if chunk.heard],
        )

    def _start_turn(
        self,
        *,
        request: Request,
        text: str | None = None,
        voice: tuple[bytes, int] | None = None,
        heard: HeardTurn | None = None,
        streamed: asyncio.Task[str] | None = None,
    ) -> asyncio.Task[None]:
        # Turns transcribe side by side (the pool has several workers), but the caller's
        # words reach the transcript and the model in the order they were said.
        loop = asyncio.get_running_loop()
        previous, in_order = self._last_turn_in_order, loop.create_future()
        self._last_turn_in_order = in_order
        task = loop.create_task(
            self._run_turn(request, text, voice, heard, previous=previous, streamed=streamed)
        )
        task.add_done_callback(lambda _: in_order.done() or in_order.set_result(None))
        self._turn_order[task] = in_order
        self.turn_tasks.add(task)
        task.add_done_callback(self.turn_tasks.discard)
        task.add_done_callback(lambda done: self._turn_order.pop(done, None))
        return task

    async def _run_turn(
        self,
        request: Request,
        text: str | None,
        voice: tuple[bytes, int] | None,
        heard: HeardTurn | None = None,
        *,
        previous: asyncio.Future[None] | None = None,
        streamed: asyncio.Task[str] | None = None,
    ) -> None:
        source = "text"
        if voice is not None:
            source = "voice"
            text = await self._transcribe(request, *voice, streamed=streamed)
        elif heard is not None:
            source = "voice"
            try:
                text = await self._transcribe_heard(heard)
            finally:
                self.transcribing.pop(asyncio.current_task(), None)
        if previous is not None and not previous.done():
            await asyncio.wait({previous})  # the turn before this one has its words in first
        in_order = self._turn_order.get(asyncio.current_task())
        if not text:
            return
        try:
            self.conversation.check_queue()
        except QueueFullError as error:
            await self.port.request_error(request, str(error))
            return
        reply = Reply(started_at=time.monotonic())
        user_seq, reply_seq = self.seq + 1, self.seq + 2
        self.seq += 2
        self.recorder.record(
            services.message_record_user,
            session_id=self.call_uuid,
            seq=user_seq,
            text=text,
            source=source,
            created_at=timezone.now(),
        )
        await self.port.transcript_user(text, protocol.new_id())
        self._publish({"kind": "user", "text": text})
        if in_order is not None and not in_order.done():
            in_order.set_result(None)  # the next turn may go on; this one queues for the model first

        utterance_id = protocol.new_id()
        speaker = self._new_speaker(utterance_id)
        current = asyncio.current_task()

        def mark_replying() -> None:
            self.replying = (current, speaker, reply_seq, reply)

        try:
            await self.conversation.respond(text, sink=speaker, reply=reply, on_start=mark_replying)
        except QueueFullError as error:
            await self.port.request_error(request, str(error))
            return
        except asyncio.CancelledError:
            if speaker.started and self.end_reason != "hangup":
                await self.port.response_stop(utterance_id)
                self._keep_heard(reply, speaker)  # stored below with the reply
            if reply.end_call is not None and not self.end_reason:
                # Cut during the goodbye ("bye" over it): the outcome is stored and the model
                # was told the call ends, so it still ends, in its own task once this one stopped.
                ending = asyncio.get_running_loop().create_task(self._end_after_reply(reply))
                self.turn_tasks.add(ending)
                ending.add_done_callback(self.turn_tasks.discard)
            raise
        except Exception:
            # A bug, not a model or speech failure (those are handled inside the turn):
            # the caller hears the reply stop and is told, the call goes on.
            logger.exception("call=%s turn failed", self.session_id)
            reply.interrupted = True
            if speaker.started:
                await self.port.response_stop(utterance_id)
            await self.port.speech_error("server", "Sorry, something went wrong with that reply.", True)
        else:
            if speaker.started:
                await self.port.response_complete(utterance_id, self._turn_metrics(reply, speaker))
        finally:
            if self.replying is not None and self.replying[0] is current:
                self.replying = None
            if reply.chunks or reply.interrupted:
                self.last_speaker = (speaker, reply_seq, reply)
                self._record_reply(reply, speaker, reply_seq, utterance_id)
        if reply.end_call is not None:
            await self._end_after_reply(reply)

    def _new_speaker(self, utterance_id: str) -> ReplySpeaker:
        return ReplySpeaker(
            call_id=self.session_id,
            utterance_id=utterance_id,
            engine=self.engines.speech,
            voice_id=self.voice_id,
            port=self.port,
            frame_ms=settings.VANTUM_AUDIO_FRAME_MS,
            max_frame_bytes=settings.VANTUM_MAX_FRAME_BYTES // 2,
            on_chunk=lambda chunk: self._publish_chunk(utterance_id, chunk),
        )

    def say(self, text: str) -> asyncio.Task[None]:
        """Speak ``text`` as the agent without being asked (an outbound call's opener):
        chunked at ``||BREAK||`` and sentences, streamed, cut by a barge-in, stored and kept
        in the model's context like a reply. Returns the task (a turn task: hang-up cancels
        it). Precondition: the call has started."""
        task = asyncio.get_running_loop().create_task(self._run_say(text))
        self.turn_tasks.add(task)
        task.add_done_callback(self.turn_tasks.discard)
        return task

    async def _run_say(self, text: str) -> None:
        reply = Reply(started_at=time.monotonic())
        self.seq += 1
        seq = self.seq
        utterance_id = protocol.new_id()
        speaker = self._new_speaker(utterance_id)
        current = asyncio.current_task()
        self.replying = (current, speaker, seq, reply)
        chunker = self.conversation.chunker_factory()
        reply.raw_parts.append(text)
        reply.first_token_at = time.monotonic()
        try:
            for chunk_text in chunker.feed(text) + chunker.flush():
                chunk = ReplyChunk(index=len(reply.chunks), text=chunk_text)
                reply.chunks.append(chunk)
                reply.first_chunk_at = reply.first_chunk_at or time.monotonic()
                await speaker.speak(chunk)
            reply.stream_ended_at = reply.finished_at = time.monotonic()
            if speaker.started:
                await self.port.response_complete(utterance_id, self._turn_metrics(reply, speaker))
        except asyncio.CancelledError:
            reply.interrupted = True
            if speaker.started and self.end_reason != "hangup":
                await self.port.response_stop(utterance_id)
                self._keep_heard(reply, speaker)
            raise
        finally:
            reply.finished_at = reply.finished_at or time.monotonic()
            if self.replying is not None and self.replying[0] is current:
                self.replying = None
            self.last_speaker = (speaker, seq, reply)
            self.conversation.add_spoken(reply)
            self._record_reply(reply, speaker, seq, utterance_id)
            logger.info("call=%s said %d chunk(s) unprompted", self.session_id, len(reply.chunks))

    async def _end_after_reply(self, reply: Reply) -> None:
        """The agent's ``end_call`` or the tier 3 exit: the goodbye's audio has all been sent
        (``respond`` returned after the last chunk, then ``response.complete``), so end now,
        without cutting that audio short at the caller's end."""
        if reply.end_call.by == "fallback":
            self.recorder.record(services.call_settle_outcome, session_id=self.call_uuid, failed=True)
        self.last_speaker = None  # no response.stop: the goodbye must play to its end
        self.ending_reply = reply
        await self.end(reason=reply.end_call.reason)

    async def _transcribe(
        self, request: Request, pcm: bytes, rate: int, *, streamed: asyncio.Task[str] | None = None
    ) -> str | None:
        """Words of a client-ended utterance; ``streamed``: a streaming engine's final words
        for it (``ClientTurnStream``), else the utterance is transcribed now."""
        transcriber = self.engines.transcriber
        if transcriber is None:
            await self.port.request_error(
                request, "Speech-to-text is not configured on this server. Please type your message instead."
            )
            return None
        if duration_seconds(pcm, rate) < 0.1 or is_silent(pcm, settings.STT_SILENCE_THRESHOLD):
            if streamed is not None:
                streamed.cancel()  # nothing to hear: the engine's words are not waited for
            await self.port.request_error(request, "No speech was heard in that recording. Please try again.")
            return None
        try:
            if streamed is not None:
                text = await streamed
            else:
                text = await transcriber.transcribe(
                    pcm, sample_rate=rate, language=self.language, call_id=self.session_id
                )
        except TranscriptionError as error:
            await self.port.request_error(request, str(error))
            return None
        if not text.strip():
            await self.port.request_error(
                request, "No words were recognised in that recording. Please try again."
            )
            return None
        return text.strip()

    async def _transcribe_heard(self, heard: HeardTurn) -> str | None:
        """Words of a turn the detector found: the speculative/streaming result when there is
        one, else a transcription now. No error event for no words: the detector already
        judged it speech, and in hands-free a noise that fooled it should pass quietly."""
        try:
            if heard.transcript is not None:
                try:
                    text = await heard.transcript
                except asyncio.CancelledError:
                    if asyncio.current_task().cancelling():
                        raise
                    text = None  # the speculation was dropped: transcribe now
                if text is not None:
                    return text.strip() or None
            text = await self.engines.transcriber.transcribe(
                heard.audio, sample_rate=16000, language=self.language, call_id=self.session_id
            )
        except TranscriptionError as error:
            await self.port.request_error(Request(protocol.AUDIO_CHUNK), str(error))
            return None
        except asyncio.CancelledError:
            if heard.transcript is not None:
                heard.transcript.cancel()
            raise
        if not text.strip():
            logger.info("call=%s a detected turn had no words", self.session_id)
        return text.strip() or None

    def _record_reply(self, reply: Reply, speaker: ReplySpeaker, seq: int, utterance_id: str) -> None:
        metrics = self._turn_metrics(reply, speaker)
        outcome = "interrupted" if reply.interrupted else "fallback" if reply.fallback_tier else "ok"
        error_kind = reply.error.kind.value if reply.error else ""
        telemetry.observe_turn(
            outcome=outcome,
            error_kind=error_kind or None,
            fallback_tier=reply.fallback_tier,
            first_token_s=_seconds(metrics["firstTokenMs"]),
            first_chunk_s=_seconds(metrics["firstChunkMs"]),
            first_audio_s=_seconds(metrics["firstAudioMs"]),
            total_s=_seconds(metrics["totalMs"]),
        )
        said = reply.said_text
        self.recorder.record(
            services.message_record_assistant,
            session_id=self.call_uuid,
            seq=seq,
            text=said,
            raw_text=reply.raw_text,
            chunks=[
                {
                    "index": c.index,
                    "text": c.text,
                    "spoken": c.heard,
                    "fallback": c.is_fallback,
                    "hold": c.is_hold,
                }
                for c in reply.chunks
            ],
            interrupted=reply.interrupted,
            fallback_tier=reply.fallback_tier,
            error_kind=error_kind,
            utterance_id=utterance_id,
            created_at=timezone.now(),
            tool_calls=[call.record() for call in reply.tool_calls],
            metrics={
                "first_token_ms": metrics["firstTokenMs"],
                "first_chunk_ms": metrics["firstChunkMs"],
                "first_audio_ms": metrics["firstAudioMs"],
                "total_ms": metrics["totalMs"],
                "chunk_count": len(reply.chunks),
                "prompt_tokens": reply.prompt_tokens,
                "completion_tokens": reply.completion_tokens,
                "retries": reply.retries,
                "error_kind": error_kind,
            },
        )
        self._publish(
            {
                "kind": "reply",
                "utteranceId": utterance_id,
                "text": said,
                "interrupted": reply.interrupted,
                "heardChunks": [chunk.index for chunk in reply.chunks if chunk.heard],
                "fallbackTier": reply.fallback_tier,
                "metrics": metrics,  # the timing line staff see under the reply
                "toolCalls": [call.record() for call in reply.tool_calls],
            }
        )

    @staticmethod
    def _turn_metrics(reply: Reply, speaker: ReplySpeaker) -> dict[str, Any]:
        return {
            "firstTokenMs": reply.elapsed_ms(reply.first_token_at),
            "firstChunkMs": reply.elapsed_ms(reply.first_chunk_at),
            "firstAudioMs": reply.elapsed_ms(speaker.first_audio_at),
            "modelDoneMs": reply.elapsed_ms(reply.stream_ended_at),
            "totalMs": reply.elapsed_ms(reply.finished_at or time.monotonic()),
            "chunks": len(reply.chunks),
            "fallbackTier": reply.fallback_tier,
            "errorKind": reply.error.kind.value if reply.error else None,
            "promptTokens": reply.prompt_tokens,
            "completionTokens": reply.completion_tokens,
        }

    # ---------------------------------------------------------------- staff following live
    def _publish_chunk(self, utterance_id: str, chunk: ReplyChunk) -> None:
        self._publish(
            {"kind": "chunk", "utteranceId": utterance_id, "index": chunk.index, "text": chunk.text}
        )

    def _publish(self, event: dict[str, Any]) -> None:
        """Tell staff following the call; fire and forget, never on the audio path."""
        if not self.watchers.watched:
            return
        task = asyncio.get_running_loop().create_task(
            live.publish_call_event(session_id=self.session_id, event=event)
        )
        self.side_tasks.add(task)
        task.add_done_callback(self.side_tasks.discard)


def parse_voice_aliases(spec: str) -> dict[str, tuple[str, ...]]:
    """``"kyle=en_US-joe-medium|en-us,tessa=en-us+f3"`` -> ``{"kyle": ("en_US-joe-medium",
    "en-us"), ...}``: a client's voice id (case-insensitive) -> local voices, first known wins."""
    aliases: dict[str, tuple[str, ...]] = {}
    for item in spec.split(","):
        name, sep, targets = item.partition("=")
        if sep and name.strip() and targets.strip():
            aliases[name.strip().lower()] = tuple(t.strip() for t in targets.split("|") if t.strip())
    return aliases


def resolve_voice_alias(engine: Any, voice_id: str) -> tuple[str, bool]:
    """(the engine's voice for ``voice_id``, whether it was known: itself or an alias).

    A voice is known when the engine lists it or takes it as it is (Cartesia takes any id)."""
    known_ids = {voice.id for voice in engine.voices()}
    aliases = parse_voice_aliases(settings.VOICE_ALIASES).get(voice_id.strip().lower(), ())
    for candidate in (voice_id, *aliases):
        if candidate in known_ids or engine.resolve_voice(candidate) == candidate:
            return engine.resolve_voice(candidate), True
    return engine.resolve_voice(voice_id), False


SHUTDOWN_MESSAGE = "The server is restarting. Please call again in a moment."


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else ms / 1000.0
