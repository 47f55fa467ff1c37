"""The browser call endpoint (``/ws``): one ``CallConsumer`` per WebSocket call.

Interface code only: it checks the connection, decodes MessagePack frames
(``calls.protocol``), ACKs at once and calls the transport-free ``CallSession``, whose
output comes back through ``BrowserPort`` as MessagePack events.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from calls import limits, live, protocol, telemetry
from calls.origins import origin_allowed as _origin_allowed
from calls.session import CallSession, Request, active_call_count, has_capacity

logger = logging.getLogger(__name__)

__all__ = ["BrowserPort", "CallConsumer", "active_call_count"]

# How much longer than the audio we sent a browser may still be playing it: its clock and
# scheduling drift (measured ~10 % behind with the product's client) plus buffering.
PLAYBACK_SLACK_RATIO = 0.15
PLAYBACK_SLACK_SECONDS = 0.5


class _Playback:
    """What we sent of one reply, to estimate what the browser has played."""

    __slots__ = ("first_audio_at", "seconds_sent")

    def __init__(self) -> None:
        self.first_audio_at: float | None = None
        self.seconds_sent = 0.0


class BrowserPort:
    """``CallPort`` for the browser protocol: each call becomes one MessagePack event."""

    def __init__(self, consumer: CallConsumer, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.consumer = consumer
        self.clock = clock
        self.session_id = ""
        self.closed = False
        self._playback: dict[str, _Playback] = {}

    async def _send(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            await self.consumer.send(bytes_data=data)
        except Exception:  # the socket may already be gone (hang-up)
            logger.debug("call=%s could not send after close", self.session_id)

    async def response_start(self, utterance_id: str) -> None:
        self._playback = {utterance_id: _Playback()}  # only the last reply can still be playing
        await self._send(protocol.encode_response_start(self.session_id, utterance_id))

    async def response_text(self, utterance_id: str, index: int, text: str) -> None:
        await self._send(protocol.encode_response_text(self.session_id, utterance_id, index, text))

    async def response_audio(self, utterance_id: str, pcm: bytes, sample_rate: int) -> None:
        playback = self._playback.get(utterance_id)
        if playback is not None:
            if playback.first_audio_at is None:
                playback.first_audio_at = self.clock()
            playback.seconds_sent += len(pcm) / (2 * sample_rate)
        await self._send(protocol.encode_response_chunk(self.session_id, utterance_id, pcm, sample_rate))

    async def response_complete(self, utterance_id: str, metrics: dict[str, Any]) -> None:
        await self._send(protocol.encode_response_complete(self.session_id, utterance_id, metrics))

    async def response_stop(self, utterance_id: str) -> None:
        await self._send(protocol.encode_response_stop(self.session_id, utterance_id))

    async def transcript_user(self, text: str, message_id: str) -> None:
        await self._send(protocol.encode_transcript_user(self.session_id, text, message_id))

    async def request_error(self, request: Request | None, message: str) -> None:
        request_type = request.event_type if request else protocol.UNKNOWN_REQUEST
        event_id = request.event_id if request else None
        await self._send(protocol.encode_error(request_type, event_id, self.session_id, message))

    async def speech_error(self, error_type: str, message: str, retryable: bool) -> None:
        await self._send(protocol.encode_voicechat_error(self.session_id, error_type, message, retryable))

    async def call_ended(self, reason: str, message: str | None) -> None:
        await self._send(protocol.encode_call_ended(self.session_id, reason, message))

    async def speech_started(self, at_ms: int) -> None:
        await self._send(protocol.encode_speech_started(self.session_id, at_ms))

    async def speech_stopped(self, at_ms: int) -> None:
        await self._send(protocol.encode_speech_stopped(self.session_id, at_ms))

    async def transcript_partial(self, text: str) -> None:
        await self._send(protocol.encode_transcript_partial(self.session_id, text))

    async def close(self, code: int) -> None:
        if not self.closed:
            try:
                await self.consumer.close(code=code)
            except Exception:  # the caller left first (a shutdown racing a hang-up)
                logger.debug("call=%s could not close: already gone", self.session_id)

    def played_seconds(self, utterance_id: str) -> float:
        """The browser plays audio as it arrives, at most in real time from the first frame."""
        playback = self._playback.get(utterance_id)
        if playback is None or playback.first_audio_at is None:
            return 0.0
        return min(playback.seconds_sent, self.clock() - playback.first_audio_at)

    def may_be_playing(self, utterance_id: str) -> bool:
        """True while the reply could still be playing, with a safety margin: a stop for a
        reply that already finished is harmless to clients, a missed one is not."""
        playback = self._playback.get(utterance_id)
        if playback is None or playback.first_audio_at is None:
            return False
        margin = playback.seconds_sent * PLAYBACK_SLACK_RATIO + PLAYBACK_SLACK_SECONDS
        return self.clock() < playback.first_audio_at + playback.seconds_sent + margin


class CallConsumer(live.LiveCallControls, AsyncWebsocketConsumer):
    session: CallSession | None = None
    client_address: str | None = None  # set while this call holds a per-address slot

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
            await self._refuse("auth", "This call needs a valid access token (?token=).", code=4001)
            return
        if not has_capacity():
            telemetry.REJECTED_CALLS.labels("capacity").inc()
            await self._refuse(
                "capacity", "The server is at its call limit. Please try again shortly.", code=1013
            )
            return

        address = limits.client_address(self.scope)
        # A call with no known address (a unix socket with no trusted header) is not counted.
        if address != limits.UNKNOWN_ADDRESS and not limits.address_slots().acquire(address):
            telemetry.REJECTED_CALLS.labels("address").inc()
            await self._refuse(
                "capacity", "Too many calls from your address at once. Please end one first.", code=1013
            )
            return
        self.client_address = address if address != limits.UNKNOWN_ADDRESS else None

        self.port = BrowserPort(self)
        session = CallSession(port=self.port, transport="browser")
        self.port.session_id = session.session_id
        try:
            await session.start()
        except BaseException:
            self._release_address()
            raise
        self.session = session
        self.frame_budget = limits.FrameBudget(
            frames_per_second=settings.VANTUM_MAX_EVENTS_PER_SECOND,
            bytes_per_second=settings.VANTUM_MAX_BYTES_PER_SECOND,
        )
        self.rate_limited_at = 0.0
        await self.accept()
        # Best effort (see calls.live): a Redis outage costs live features, never the call.
        await self.channel_layer.group_add(live.call_group(session.session_id), self.channel_name)
        transcriber = session.engines.transcriber
        capabilities = {
            "speechToText": transcriber.name if transcriber else None,
            "turnDetection": ["client", "server"] if transcriber else ["client"],
        }
        await self.send(bytes_data=protocol.encode_connection_ack(session.session_id, capabilities))

    async def disconnect(self, code: int) -> None:
        session = self.session
        if session is None:
            self._release_address()
            return
        self.port.closed = True
        self._release_address()  # the caller's connection is gone
        try:
            await session.hangup()  # first: the call's slot and rows never wait for Redis
        finally:
            await self.channel_layer.group_discard(live.call_group(session.session_id), self.channel_name)
        logger.info("call=%s socket closed (code %s)", session.session_id, code)

    def _release_address(self) -> None:
        if self.client_address is not None:
            limits.address_slots().release(self.client_address)
            self.client_address = None

    def _token_valid(self) -> bool:
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        token = (query.get("token") or [""])[0]
        return any(hmac.compare_digest(token, valid) for valid in settings.VANTUM_CALL_TOKENS)

    async def _refuse(self, error_type: str, message: str, *, code: int) -> None:
        await self.accept()
        await self.send(bytes_data=protocol.encode_voicechat_error("", error_type, message, False))
        await self.close(code=code)

    # ---------------------------------------------------------------- frames
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.session is None:
            return
        # Before any decoding: a flooder's frame costs a subtraction, not a MessagePack parse.
        size = len(bytes_data) if bytes_data is not None else len(text_data or "")
        if not self.frame_budget.allow(size):
            if self.frame_budget.abusive:
                telemetry.REJECTED_CALLS.labels("flood").inc()
                logger.warning("call=%s closed: far over its frame budget", self.session.session_id)
                await self.close(code=1008)
                return
            now = time.monotonic()
            if now - self.rate_limited_at >= 1.0:  # one error a second, not one per dropped frame
                self.rate_limited_at = now
                telemetry.PROTOCOL_ERRORS.inc()
                await self.port.request_error(
                    None, "Too many messages: frames are being dropped (rate limit)."
                )
            return
        if bytes_data is None:
            await self.port.request_error(None, "Text frames are not supported: send MessagePack.")
            telemetry.PROTOCOL_ERRORS.inc()
            return
        try:
            event = protocol.decode_frame(bytes_data, max_bytes=settings.VANTUM_MAX_FRAME_BYTES)
        except protocol.ProtocolError as error:
            telemetry.PROTOCOL_ERRORS.inc()
            await self.port.request_error(Request(error.request_type, error.event_id), error.message)
            return
        await self._dispatch(event)

    async def _dispatch(self, event: protocol.ClientEvent) -> None:
        session, payload = self.session, event.payload
        request = Request(event.event_type, event.event_id)
        if event.event_type == protocol.AUDIO_CHUNK:  # the hot path: no ACK, no await
            session.audio_chunk(payload["audio"], muted=bool(payload.get("isMuted")))
            return
        await self.send(bytes_data=protocol.encode_ack(event.event_type, event.event_id, session.session_id))
        if event.event_type == protocol.AUDIO_START:
            await session.audio_start(
                request=request,
                sample_rate=payload.get("samplingRate"),
                voice_id=payload.get("voiceId"),
                language=payload.get("language"),
            )
        elif event.event_type == protocol.AUDIO_END:
            await session.audio_end(request=request)
        elif event.event_type == protocol.TEXT_INPUT:
            await session.text_input(payload["text"], request=request)
        elif event.event_type == protocol.SESSION_UPDATE:
            await session.update(
                request=request,
                prospect=payload.get("prospect"),
                voice_id=payload.get("voiceId"),
                language=payload.get("language"),
                turn_detection=payload.get("turnDetection"),
            )
