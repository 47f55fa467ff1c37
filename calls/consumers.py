"""The call endpoint: one ``CallConsumer`` per WebSocket call (``/ws``).

Interface code only: it checks the connection, parses frames (``calls.protocol``), runs
each turn in its own task so barge-in and hang-up are never blocked, and hands database
writes to ``TranscriptRecorder`` (never awaited between a token and its audio).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.utils import timezone

from agents.selectors import llm_config_for_version
from agents.services import prompt_version_ensure_initial
from calls import live, protocol, services, telemetry
from calls.engines import LLM_METRICS, get_engines, get_session_registry
from calls.origins import origin_allowed as _origin_allowed
from calls.recorder import TranscriptRecorder
from calls.speech_out import ReplySpeaker
from llm.session import Conversation, QueueFullError
from llm.turn import Reply, ReplyChunk
from stt.audio import duration_seconds, is_silent
from stt.base import TranscriptionError

logger = logging.getLogger(__name__)

_active_calls: set[str] = set()


def active_call_count() -> int:
    return len(_active_calls)


class _RateLimiter:
    """Token bucket: ``rate`` events a second, bursts up to twice that."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.capacity = 2.0 * rate
        self.tokens = self.capacity
        self.updated = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class CallConsumer(AsyncWebsocketConsumer):
    session_id: str = ""
    recorder: TranscriptRecorder | None = None
    conversation: Conversation | None = None

    # ---------------------------------------------------------------- connection
    async def connect(self) -> None:
        headers = dict(self.scope.get("headers", []))
        origin = headers.get(b"origin", b"").decode("latin-1") or None
        if not _origin_allowed(origin, self.scope):
            logger.warning("call refused: origin %r not allowed", origin)
            telemetry.REJECTED_CALLS.labels("origin").inc()
            await self.close(code=4003)
            return
        if settings.VANTUM_CALL_TOKENS and not self._token_valid():
            telemetry.REJECTED_CALLS.labels("token").inc()
            await self.accept()
            await self._send_refusal(
                "auth", "This call needs a valid access token (?token=).", retryable=False
            )
            await self.close(code=4001)
            return
        if len(_active_calls) >= settings.VANTUM_MAX_CALLS:
            telemetry.REJECTED_CALLS.labels("capacity").inc()
            await self.accept()
            await self._send_refusal("capacity", "The server is at its call limit. Please try again shortly.")
            await self.close(code=1013)
            return

        self.session_id = protocol.new_id()
        self.call_uuid = uuid.UUID(self.session_id)
        self.engines = get_engines()
        version = await database_sync_to_async(prompt_version_ensure_initial)(config=settings.VANTUM_LLM)
        config = llm_config_for_version(base=settings.VANTUM_LLM, version=version)
        self.conversation = Conversation(
            call_id=self.session_id, provider=self.engines.chat, config=config, metrics=LLM_METRICS
        )
        self.voice_id = self.engines.speech.resolve_voice(None)
        self.language: str | None = None
        self.end_reason = ""
        self.seq = 0
        self.turn_tasks: set[asyncio.Task[None]] = set()
        self.side_tasks: set[asyncio.Task[Any]] = set()
        self.replying: tuple[asyncio.Task[Any], ReplySpeaker, int] | None = None
        self.last_speaker: tuple[ReplySpeaker, int] | None = None
        self.utterance: bytearray | None = None
        self.utterance_rate = 16000
        self.utterance_too_long = False
        self.rate_limiter = _RateLimiter(settings.VANTUM_MAX_EVENTS_PER_SECOND)
        self.rate_limited_at = 0.0
        self.recorder = TranscriptRecorder(call_id=self.session_id)

        await self.accept()
        _active_calls.add(self.session_id)
        telemetry.ACTIVE_CALLS.set(len(_active_calls))
        telemetry.CALLS.inc()
        await self.channel_layer.group_add(live.call_group(self.session_id), self.channel_name)
        get_session_registry().register(self.conversation, self._expire)
        self.recorder.record(
            services.call_start,
            session_id=self.call_uuid,
            started_at=timezone.now(),
            prompt_version_id=version.pk,
            voice_id=self.voice_id,
            llm_model=config.params.model,
            tts_engine=self.engines.speech.name,
            stt_engine=self.engines.transcriber.name if self.engines.transcriber else "none",
        )
        await self.send(bytes_data=protocol.encode_connection_ack(self.session_id))
        logger.info("call=%s connected (prompt v%s)", self.session_id, version.number)

    async def disconnect(self, code: int) -> None:
        if not self.session_id or self.recorder is None:
            return
        _active_calls.discard(self.session_id)
        telemetry.ACTIVE_CALLS.set(len(_active_calls))
        get_session_registry().unregister(self.session_id)
        await self.channel_layer.group_discard(live.call_group(self.session_id), self.channel_name)
        # Set before cancelling: a turn cut by a hang-up must not write to the closed socket.
        self.end_reason = reason = self.end_reason or "hangup"
        tasks = list(self.turn_tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        self.recorder.record(
            services.call_end, session_id=self.call_uuid, reason=reason, ended_at=timezone.now()
        )
        self._publish({"kind": "ended", "reason": reason})
        await self.recorder.close(wait_seconds=5)
        logger.info("call=%s ended: %s (close code %s)", self.session_id, reason, code)

    async def call_end(self, message: dict[str, Any]) -> None:
        """Channel-layer request to end this call (staff action, expiry)."""
        await self._end_call(message.get("reason") or "staff_ended")

    async def _expire(self, call_id: str, reason: str) -> None:
        await self._end_call(reason)

    async def _end_call(self, reason: str) -> None:
        if self.end_reason:
            return
        self.end_reason = reason
        logger.info("call=%s ending: %s", self.session_id, reason)
        await self._barge_in()
        await self.close(code=1000)

    def _token_valid(self) -> bool:
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        token = (query.get("token") or [""])[0]
        return any(hmac.compare_digest(token, valid) for valid in settings.VANTUM_CALL_TOKENS)

    async def _send_refusal(self, error_type: str, message: str, *, retryable: bool = True) -> None:
        await self.send(bytes_data=protocol.encode_voicechat_error("", error_type, message, retryable))

    # ---------------------------------------------------------------- frames
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if not self.session_id:
            return
        if not self.rate_limiter.allow():
            now = time.monotonic()
            if now - self.rate_limited_at >= 1.0:  # one error a second, not one per dropped frame
                self.rate_limited_at = now
                await self._send_error(
                    "error.unknown", None, "Too many messages: frames are being dropped (rate limit)."
                )
            telemetry.PROTOCOL_ERRORS.inc()
            return
        if bytes_data is None:
            await self._send_error("error.unknown", None, "Text frames are not supported: send MessagePack.")
            telemetry.PROTOCOL_ERRORS.inc()
            return
        try:
            event = protocol.decode_frame(bytes_data, max_bytes=settings.VANTUM_MAX_FRAME_BYTES)
        except protocol.ProtocolError as error:
            telemetry.PROTOCOL_ERRORS.inc()
            await self._send_error(error.request_type, error.event_id, error.message)
            return
        handler = self._handlers.get(event.event_type)
        await handler(self, event)

    async def _on_audio_start(self, event: protocol.ClientEvent) -> None:
        await self._ack(event)
        await self._barge_in()
        payload = event.payload
        self._apply_voice(payload.get("voiceId"), payload.get("language"))
        self._begin_utterance(payload.get("samplingRate") or 16000)

    async def _on_audio_chunk(self, event: protocol.ClientEvent) -> None:
        payload = event.payload
        if payload.get("isMuted"):
            return
        if self.utterance is None:
            # The browser client may send a few chunks before audio.start: 16 kHz.
            self._begin_utterance(16000)
        audio = payload["audio"]
        limit = int(settings.STT_MAX_UTTERANCE_SECONDS * self.utterance_rate * 2)
        if len(self.utterance) + len(audio) > limit:
            self.utterance_too_long = True
            return
        self.utterance.extend(audio)

    async def _on_audio_end(self, event: protocol.ClientEvent) -> None:
        await self._ack(event)
        pcm, rate, too_long = bytes(self.utterance or b""), self.utterance_rate, self.utterance_too_long
        self.utterance = None
        self.utterance_too_long = False
        if too_long:
            await self._send_error(
                event.event_type,
                event.event_id,
                f"The utterance was longer than {settings.STT_MAX_UTTERANCE_SECONDS:g} s and was not "
                "transcribed. Please say it in shorter parts.",
            )
            return
        self._start_turn(voice=(pcm, rate), request=event)

    async def _on_text_input(self, event: protocol.ClientEvent) -> None:
        await self._ack(event)
        await self._barge_in()
        self._start_turn(text=event.payload["text"].strip(), request=event)

    async def _on_session_update(self, event: protocol.ClientEvent) -> None:
        await self._ack(event)
        payload = event.payload
        prospect = payload.get("prospect")
        if prospect:
            self.conversation.update_prospect(prospect)
        self._apply_voice(payload.get("voiceId"), payload.get("language"))
        self.recorder.record(
            services.call_update_settings,
            session_id=self.call_uuid,
            prospect=dict(self.conversation.prospect) if prospect else None,
            voice_id=self.voice_id,
            language=self.language,
        )

    _handlers = {
        protocol.AUDIO_START: _on_audio_start,
        protocol.AUDIO_CHUNK: _on_audio_chunk,
        protocol.AUDIO_END: _on_audio_end,
        protocol.TEXT_INPUT: _on_text_input,
        protocol.SESSION_UPDATE: _on_session_update,
    }

    def _begin_utterance(self, rate: int) -> None:
        self.utterance = bytearray()
        self.utterance_rate = rate
        self.utterance_too_long = False

    def _apply_voice(self, voice_id: str | None, language: str | None) -> None:
        if voice_id:
            self.voice_id = self.engines.speech.resolve_voice(voice_id)
        if language:
            self.language = language

    async def _ack(self, event: protocol.ClientEvent) -> None:
        await self.send(bytes_data=protocol.encode_ack(event.event_type, event.event_id, self.session_id))

    async def _send_error(self, request_type: str, event_id: str | None, message: str) -> None:
        await self.send(bytes_data=protocol.encode_error(request_type, event_id, self.session_id, message))

    # ---------------------------------------------------------------- turns
    async def _barge_in(self) -> None:
        """Cut the reply being produced, or stop playback of the last one."""
        if self.replying is not None:
            task = self.replying[0]
            task.cancel()
            await asyncio.wait({task}, timeout=2)
            return
        if self.last_speaker is None:
            return
        speaker, seq = self.last_speaker
        self.last_speaker = None
        if (
            speaker.first_audio_at is not None
            and time.monotonic() < speaker.first_audio_at + speaker.audio_seconds
        ):
            await self.send(bytes_data=protocol.encode_response_stop(self.session_id, speaker.utterance_id))
            self.recorder.record(services.message_mark_interrupted, session_id=self.call_uuid, seq=seq)
            self._publish({"kind": "stop", "utteranceId": speaker.utterance_id})

    def _start_turn(
        self,
        *,
        request: protocol.ClientEvent,
        text: str | None = None,
        voice: tuple[bytes, int] | None = None,
    ) -> None:
        task = asyncio.get_running_loop().create_task(self._run_turn(request, text, voice))
        self.turn_tasks.add(task)
        task.add_done_callback(self.turn_tasks.discard)

    async def _run_turn(
        self, request: protocol.ClientEvent, text: str | None, voice: tuple[bytes, int] | None
    ) -> None:
        source = "text"
        if voice is not None:
            source = "voice"
            text = await self._transcribe(request, *voice)
        if not text:
            return
        try:
            self.conversation.check_queue()
        except QueueFullError as error:
            await self._send_error(request.event_type, request.event_id, str(error))
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
        message_id = protocol.new_id()
        await self.send(bytes_data=protocol.encode_transcript_user(self.session_id, text, message_id))
        self._publish({"kind": "user", "text": text})

        utterance_id = protocol.new_id()
        speaker = ReplySpeaker(
            session_id=self.session_id,
            utterance_id=utterance_id,
            engine=self.engines.speech,
            voice_id=self.voice_id,
            send=self._send_bytes,
            frame_ms=settings.VANTUM_AUDIO_FRAME_MS,
            max_frame_bytes=settings.VANTUM_MAX_FRAME_BYTES // 2,
            on_chunk=lambda chunk: self._publish_chunk(utterance_id, chunk),
        )
        current = asyncio.current_task()

        def mark_replying() -> None:
            self.replying = (current, speaker, reply_seq)

        try:
            await self.conversation.respond(text, sink=speaker, reply=reply, on_start=mark_replying)
        except QueueFullError as error:
            await self._send_error(request.event_type, request.event_id, str(error))
            return
        except asyncio.CancelledError:
            if speaker.started and self.end_reason != "hangup":
                await self._send_quietly(protocol.encode_response_stop(self.session_id, utterance_id))
            raise
        except Exception:
            # A bug, not a model or speech failure (those are handled inside the turn):
            # the caller hears the reply stop and is told, the call goes on.
            logger.exception("call=%s turn failed", self.session_id)
            reply.interrupted = True
            if speaker.started:
                await self._send_quietly(protocol.encode_response_stop(self.session_id, utterance_id))
            await self._send_quietly(
                protocol.encode_voicechat_error(
                    self.session_id, "server", "Sorry, something went wrong with that reply.", True
                )
            )
        else:
            if speaker.started:
                await self.send(
                    bytes_data=protocol.encode_response_complete(
                        self.session_id, utterance_id, self._turn_metrics(reply, speaker)
                    )
                )
        finally:
            if self.replying is not None and self.replying[0] is current:
                self.replying = None
            if reply.chunks or reply.interrupted:
                self.last_speaker = (speaker, reply_seq)
                self._record_reply(reply, speaker, reply_seq, utterance_id)

    async def _transcribe(self, request: protocol.ClientEvent, pcm: bytes, rate: int) -> str | None:
        transcriber = self.engines.transcriber
        if transcriber is None:
            await self._send_error(
                request.event_type,
                request.event_id,
                "Speech-to-text is not configured on this server. Please type your message instead.",
            )
            return None
        if duration_seconds(pcm, rate) < 0.1 or is_silent(pcm, settings.STT_SILENCE_THRESHOLD):
            await self._send_error(
                request.event_type,
                request.event_id,
                "No speech was heard in that recording. Please try again.",
            )
            return None
        try:
            text = await transcriber.transcribe(
                pcm, sample_rate=rate, language=self.language, call_id=self.session_id
            )
        except TranscriptionError as error:
            await self._send_error(request.event_type, request.event_id, str(error))
            return None
        if not text.strip():
            await self._send_error(
                request.event_type,
                request.event_id,
                "No words were recognised in that recording. Please try again.",
            )
            return None
        return text.strip()

    def _record_reply(self, reply: Reply, speaker: ReplySpeaker, seq: int, utterance_id: str) -> None:
        metrics = self._turn_metrics(reply, speaker)
        outcome = "interrupted" if reply.interrupted else "fallback" if reply.fallback_tier else "ok"
        telemetry.observe_turn(
            outcome=outcome,
            error_kind=reply.error.kind.value if reply.error else None,
            fallback_tier=reply.fallback_tier,
            first_token_s=_seconds(metrics["firstTokenMs"]),
            first_chunk_s=_seconds(metrics["firstChunkMs"]),
            first_audio_s=_seconds(metrics["firstAudioMs"]),
            total_s=_seconds(metrics["totalMs"]),
        )
        self.recorder.record(
            services.message_record_assistant,
            session_id=self.call_uuid,
            seq=seq,
            text=reply.said_text,
            raw_text=reply.raw_text,
            chunks=[
                {"index": c.index, "text": c.text, "spoken": c.audio_sent, "fallback": c.is_fallback}
                for c in reply.chunks
            ],
            interrupted=reply.interrupted,
            fallback_tier=reply.fallback_tier,
            error_kind=reply.error.kind.value if reply.error else "",
            utterance_id=utterance_id,
            created_at=timezone.now(),
            metrics={
                "first_token_ms": metrics["firstTokenMs"],
                "first_chunk_ms": metrics["firstChunkMs"],
                "first_audio_ms": metrics["firstAudioMs"],
                "total_ms": metrics["totalMs"],
                "chunk_count": len(reply.chunks),
                "prompt_tokens": reply.prompt_tokens,
                "completion_tokens": reply.completion_tokens,
                "retries": reply.retries,
                "error_kind": reply.error.kind.value if reply.error else "",
            },
        )
        self._publish(
            {
                "kind": "reply",
                "utteranceId": utterance_id,
                "text": reply.said_text,
                "interrupted": reply.interrupted,
                "fallbackTier": reply.fallback_tier,
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

    # ---------------------------------------------------------------- output
    async def _send_bytes(self, data: bytes) -> None:
        await self.send(bytes_data=data)

    async def _send_quietly(self, data: bytes) -> None:
        try:
            await self.send(bytes_data=data)
        except Exception:  # the socket may already be gone (hang-up)
            logger.debug("call=%s could not send after close", self.session_id)

    def _publish_chunk(self, utterance_id: str, chunk: ReplyChunk) -> None:
        self._publish(
            {"kind": "chunk", "utteranceId": utterance_id, "index": chunk.index, "text": chunk.text}
        )

    def _publish(self, event: dict[str, Any]) -> None:
        """Tell staff following the call; fire and forget, never on the audio path."""
        task = asyncio.get_running_loop().create_task(
            live.publish_call_event(session_id=self.session_id, event=event)
        )
        self.side_tasks.add(task)
        task.add_done_callback(self.side_tasks.discard)


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else ms / 1000.0
