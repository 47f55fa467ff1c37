"""The Twilio media stream endpoint (``/telephony/twilio/stream``): one consumer per phone call.

Interface code only, like the browser consumer: it checks the upgrade's
``X-Twilio-Signature``, binds the stream to a call this server answered or placed (the
signed single-use token of the TwiML answer, checked at ``start``), decodes Twilio's JSON
messages and drives the transport-free ``CallSession`` through ``TwilioPort``. Caller audio
is μ-law 8 kHz in, PCM 16 kHz to the session.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from twilio.request_validator import RequestValidator

from calls import live, telemetry
from calls.session import CallSession, Request, has_capacity
from telephony import services, twilio_client
from telephony.audio import PhoneInbound, with_phone_speech
from telephony.models import Direction, PhoneCall
from telephony.port import TwilioPort
from telephony.twilio_protocol import (
    Connected,
    Dtmf,
    Mark,
    Media,
    Start,
    Stop,
    TwilioProtocolError,
    parse_message,
)

logger = logging.getLogger(__name__)

LISTEN_RATE = 16000
START_REQUEST = Request("twilio.start")

# Close codes (application range): the stream was refused.
CLOSE_BAD_SIGNATURE = 4003
CLOSE_BAD_TOKEN = 4001
CLOSE_NO_START = 4008


def stream_signature_valid(scope: dict[str, Any]) -> bool:
    """Twilio signs the WebSocket upgrade like a webhook: the wss URL, no parameters."""
    headers = dict(scope.get("headers", []))
    signature = headers.get(b"x-twilio-signature", b"").decode("latin-1")
    if not signature or not settings.TWILIO_AUTH_TOKEN:
        return False
    query = scope.get("query_string", b"").decode("latin-1")
    path = scope.get("path", "") + (f"?{query}" if query else "")
    base = settings.TWILIO_PUBLIC_BASE_URL
    if base:
        base = (
            "wss://" + base[len("https://") :]
            if base.startswith("https://")
            else "ws://" + base.removeprefix("http://")
        )
    else:
        host = headers.get(b"host", b"").decode("latin-1")
        base = f"{scope.get('scheme', 'ws')}://{host}"
    return RequestValidator(settings.TWILIO_AUTH_TOKEN).validate(base + path, {}, signature)


class TwilioStreamConsumer(live.LiveCallControls, AsyncWebsocketConsumer):
    session: CallSession | None = None
    port: TwilioPort | None = None
    phone_call: PhoneCall | None = None

    async def connect(self) -> None:
        if not twilio_client.configured() or not stream_signature_valid(self.scope):
            logger.warning("twilio stream refused: bad or missing X-Twilio-Signature")
            telemetry.REJECTED_CALLS.labels("twilio_signature").inc()
            await self.close(code=CLOSE_BAD_SIGNATURE)
            return
        if not has_capacity():
            telemetry.REJECTED_CALLS.labels("capacity").inc()
            await self.close(code=1013)
            return
        self.ended = False
        self.bad_frames = 0
        self.inbound = PhoneInbound(LISTEN_RATE)
        self.listening = False  # the session's VAD + end of turn hear the caller
        self.side_tasks: set[asyncio.Task[Any]] = set()
        await self.accept()
        self.start_timer = asyncio.get_running_loop().create_task(self._expect_start())

    async def _expect_start(self) -> None:
        await asyncio.sleep(settings.TWILIO_STREAM_START_TIMEOUT)
        if self.session is None:
            logger.warning(
                "twilio stream closed: no valid start in %ss", settings.TWILIO_STREAM_START_TIMEOUT
            )
            await self.close(code=CLOSE_NO_START)

    # ---------------------------------------------------------------- frames
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            event = parse_message(text_data if text_data is not None else bytes_data)
        except TwilioProtocolError as error:
            self.bad_frames += 1
            telemetry.PROTOCOL_ERRORS.inc()
            if self.bad_frames <= 5 or self.bad_frames % 100 == 0:
                logger.warning("call=%s twilio frame ignored: %s", self._call_id(), error)
            return
        if isinstance(event, Media):
            await self._on_media(event)
        elif isinstance(event, Mark):
            if self.port is not None:
                self.port.mark_played(event.name)
        elif isinstance(event, Start):
            await self._on_start(event)
        elif isinstance(event, Dtmf):
            self._on_dtmf(event)
        elif isinstance(event, Stop):
            await self._end_stream("hangup")
            await self.close(code=1000)
        elif isinstance(event, Connected):
            logger.debug("twilio stream connected (%s %s)", event.protocol, event.version)

    async def _on_start(self, event: Start) -> None:
        if self.session is not None:
            logger.warning("call=%s second start ignored", self._call_id())
            return
        token = event.custom_parameters.get("token", "")
        try:
            phone_call = await database_sync_to_async(services.stream_token_redeem)(
                token=token, call_sid=event.call_sid, stream_sid=event.stream_sid
            )
        except services.StreamTokenError as error:
            logger.warning("twilio stream %s refused: %s", event.stream_sid, error)
            telemetry.REJECTED_CALLS.labels("twilio_token").inc()
            await self.close(code=CLOSE_BAD_TOKEN)
            return
        self.start_timer.cancel()
        self.phone_call = phone_call
        self.port = TwilioPort(
            stream_sid=event.stream_sid,
            send_text=self._send_text,
            on_close=self._finish,
        )
        session = CallSession(port=self.port, transport="phone", phone_number=phone_call.phone)
        # An engine that renders 8 kHz itself (Cartesia) speaks at the phone's rate: no resampling.
        session.engines = with_phone_speech(session.engines)
        self.port.call_id = session.session_id
        try:
            await session.start(profile_name=services.agent_profile_name(phone_call))
        except Exception:
            # The database or the configuration failed us: Twilio gets a closed stream (the
            # caller hears the call end) rather than a socket left hanging.
            logger.exception("call=%s could not start the phone call", session.session_id)
            await self.close(code=1011)
            return
        self.session = session
        await database_sync_to_async(services.phone_call_attach_session)(
            phone_call_id=phone_call.pk, session_id=session.call_uuid
        )
        await self.channel_layer.group_add(live.call_group(session.session_id), self.channel_name)
        prospect = phone_call.prospect.as_context() if phone_call.prospect else {}
        if prospect:
            await session.update(request=START_REQUEST, prospect=prospect)
        # The session's own VAD + end of turn (hands-free), as a browser in server mode:
        # the same detector, barge-in and turn logic. Without speech-to-text the caller
        # cannot be heard (an outbound opener is still spoken); their audio is dropped.
        await session.audio_start(
            request=START_REQUEST, sample_rate=LISTEN_RATE, voice_id=None, language=None
        )
        self.listening = await session.switch_turn_detection("server", START_REQUEST)
        if not self.listening:
            logger.error("call=%s no speech-to-text configured: the caller is not heard", session.session_id)
        logger.info(
            "call=%s twilio %s call %s streaming (%s)",
            session.session_id,
            phone_call.direction,
            event.call_sid,
            event.stream_sid,
        )
        if phone_call.direction == Direction.OUTBOUND:
            opener = getattr(session.prompt_version, "opener", "")
            session.say(services.opener_text(prospect=prospect, template=opener))

    async def _on_media(self, event: Media) -> None:
        session = self.session
        if (
            session is None
            or self.ended
            or not self.listening
            or event.track not in {"inbound", "inbound_track"}
        ):
            return
        pcm = self.inbound.feed(event.payload)
        if pcm:
            session.audio_chunk(pcm)

    def _on_dtmf(self, event: Dtmf) -> None:
        if self.session is None or self.phone_call is None:
            return
        logger.info("call=%s DTMF %s", self.session.session_id, event.digit)
        # Off the audio path, retried like a transcript write.
        self.session.recorder.record(
            services.phone_call_record_dtmf, phone_call_id=self.phone_call.pk, digit=event.digit
        )

    # ---------------------------------------------------------------- output and ending
    async def _send_text(self, text: str) -> None:
        await self.send(text_data=text)

    async def _finish(self, code: int) -> None:
        """We end the call (agent, staff, expiry): let the last words play, hang up through
        Twilio's REST API, close the stream. Runs on its own task: the caller may be a turn
        that hang-up cancels."""
        task = asyncio.get_running_loop().create_task(self._hang_up_after_playback(code))
        self.side_tasks.add(task)
        task.add_done_callback(self.side_tasks.discard)

    async def _hang_up_after_playback(self, code: int) -> None:
        port, phone_call = self.port, self.phone_call
        if port is None or phone_call is None:
            return
        if not await port.wait_played(settings.TWILIO_GOODBYE_WAIT_SECONDS):
            logger.warning("call=%s goodbye not confirmed played; hanging up anyway", port.call_id)
        if phone_call.call_sid:
            try:
                await asyncio.to_thread(twilio_client.call_hang_up, call_sid=phone_call.call_sid)
            except (twilio_client.TwilioCallError, twilio_client.TelephonyNotConfigured) as error:
                logger.error("call=%s hang-up through Twilio failed: %s", port.call_id, error)
        await self._end_stream(port.end_reason or "ended")
        await self.close(code=code)

    async def _end_stream(self, reason: str) -> None:
        if getattr(self, "ended", True):
            return
        self.ended = True
        if self.port is not None:
            self.port.closed = reason == "hangup"
            if reason == "hangup":
                self.port.stop_waiting()  # a goodbye still playing will never be acknowledged
        session = self.session
        if session is None:
            return
        await self.channel_layer.group_discard(live.call_group(session.session_id), self.channel_name)
        await session.hangup()
        if self.port is not None:
            self.port.closed = True
        if self.phone_call is not None:
            # Through the call's recorder, after the call's own rows (it reads their outcome):
            # a database outage at hang-up spools it (the do-not-call entry with it) for the
            # replay at recovery, and never raises into the hang-up.
            session.recorder.record(
                services.phone_call_finish,
                phone_call_id=self.phone_call.pk,
                end_reason=(self.port.end_reason if self.port else "") or reason,
                agent_outcome=services.end_call_outcome(session.ending_reply),
            )
            await session.recorder.close(wait_seconds=5)

    async def disconnect(self, code: int) -> None:
        timer = getattr(self, "start_timer", None)
        if timer is not None:
            timer.cancel()
        await self._end_stream("hangup")

    def _call_id(self) -> str:
        return self.session.session_id if self.session is not None else "-"
