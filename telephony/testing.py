"""A Twilio simulator for tests and benchmarks: plays Twilio's side of a phone call.

It calls the voice webhook signed like Twilio, reads the TwiML, opens the media stream
with a signed upgrade, sends ``connected`` / ``start`` / ``media`` (caller audio as μ-law
8 kHz in 20 ms frames) / ``dtmf`` / ``stop``, and behaves like a phone on the way back:
the agent's ``media`` is queued and "played" at ``speed`` times real time, each ``mark``
is echoed once the audio before it has played, and ``clear`` drops what is queued and
echoes the pending marks at once (as Twilio does).

Works in-process over channels' ``WebsocketCommunicator`` (the ASGI app is the real one),
or, given ``server="http://127.0.0.1:PORT"``, over real HTTP and a real WebSocket against a
running server (uvicorn), as Twilio reaches a deployment.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx2
import numpy as np
import websockets
from channels.testing import WebsocketCommunicator
from twilio.request_validator import RequestValidator

from telephony.audio import FRAME_BYTES, PhoneOutbound

FRAME_SECONDS = 0.02


def sign(auth_token: str, url: str, params: dict[str, str] | None = None) -> str:
    return RequestValidator(auth_token).compute_signature(url, params or {})


@dataclass
class TwiMLStream:
    url: str
    parameters: dict[str, str]


def parse_twiml(xml: str) -> TwiMLStream | None:
    root = ET.fromstring(xml)
    stream = root.find("./Connect/Stream")
    if stream is None:
        return None
    params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
    return TwiMLStream(url=stream.get("url", ""), parameters=params)


def speech_ulaw_frames(pcm: bytes, rate: int) -> list[bytes]:
    """Caller audio (PCM at ``rate``) as Twilio sends it: μ-law 8 kHz, 20 ms frames."""
    outbound = PhoneOutbound(rate)
    return outbound.feed(pcm) + outbound.flush()


SILENCE_FRAME = b"\xff" * FRAME_BYTES


class SocketCommunicator:
    """The part of ``WebsocketCommunicator`` a ``PhoneLeg`` uses, over a real WebSocket."""

    def __init__(self, socket: Any) -> None:
        self.socket = socket

    async def receive_output(self, timeout: float) -> dict[str, Any]:
        try:
            message = await asyncio.wait_for(self.socket.recv(), timeout)
        except websockets.ConnectionClosed as closed:
            return {"type": "websocket.close", "code": closed.rcvd.code if closed.rcvd else 1006}
        key = "text" if isinstance(message, str) else "bytes"
        return {"type": "websocket.send", key: message}

    async def send_to(self, text_data: str) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):  # the reader reports the close
            await self.socket.send(text_data)

    async def disconnect(self, timeout: float = 10) -> None:
        await asyncio.wait_for(self.socket.close(), timeout)


@dataclass
class _Queued:
    kind: str  # "media" or "mark"
    value: Any


@dataclass
class PhoneLeg:
    """One simulated phone on one stream."""

    communicator: WebsocketCommunicator | SocketCommunicator
    stream_sid: str
    call_sid: str
    speed: float = 1.0
    received: list[dict[str, Any]] = field(default_factory=list)
    played: bytearray = field(default_factory=bytearray)
    marks_acked: list[str] = field(default_factory=list)
    mark_times: list[float] = field(default_factory=list)  # time.monotonic() of each echo
    mark_positions: list[float] = field(default_factory=list)  # seconds played at each echo
    media_times: list[float] = field(default_factory=list)  # time.monotonic() of each media received
    clears: int = 0
    closed_code: int | None = None
    _queue: list[_Queued] = field(default_factory=list)
    _sequence: int = 0
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    last_message_at: float = 0.0
    first_media_at: float | None = None

    def begin(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._read()), loop.create_task(self._play())]

    async def _read(self) -> None:
        while True:
            try:
                message = await self.communicator.receive_output(timeout=3600)
            except asyncio.CancelledError:
                raise
            except Exception:
                return
            if message["type"] == "websocket.close":
                self.closed_code = message.get("code", 1000)
                self._changed.set()
                return
            if message["type"] != "websocket.send":
                continue
            data = json.loads(message.get("text") or message.get("bytes"))
            self.received.append(data)
            self.last_message_at = time.monotonic()
            event = data.get("event")
            if event == "media":
                self.media_times.append(time.monotonic())
                if self.first_media_at is None:
                    self.first_media_at = time.monotonic()
                self._queue.append(_Queued("media", base64.b64decode(data["media"]["payload"])))
            elif event == "mark":
                self._queue.append(_Queued("mark", data["mark"]["name"]))
            elif event == "clear":
                self.clears += 1
                pending = [q.value for q in self._queue if q.kind == "mark"]
                self._queue.clear()
                for name in pending:  # Twilio returns the marks of dropped audio at once
                    await self._send({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})
            self._changed.set()

    async def _play(self) -> None:
        """Play queued audio at ``speed`` x real time; echo marks as they are reached."""
        while True:
            if not self._queue:
                self._changed.clear()
                await self._changed.wait()
                continue
            item = self._queue.pop(0)
            if item.kind == "mark":
                self.marks_acked.append(item.value)
                self.mark_times.append(time.monotonic())
                self.mark_positions.append(len(self.played) / 8000)
                await self._send(
                    {"event": "mark", "streamSid": self.stream_sid, "mark": {"name": item.value}}
                )
            else:
                self.played += item.value
                await asyncio.sleep(len(item.value) / 8000 / self.speed)

    async def _send(self, message: dict[str, Any]) -> None:
        if self.closed_code is not None:
            return
        self._sequence += 1
        message.setdefault("sequenceNumber", str(self._sequence))
        await self.communicator.send_to(text_data=json.dumps(message))

    async def send_raw(self, text: str) -> None:
        await self.communicator.send_to(text_data=text)

    async def start(self, parameters: dict[str, str]) -> None:
        await self._send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        await self._send(
            {
                "event": "start",
                "start": {
                    "accountSid": "ACtest",
                    "streamSid": self.stream_sid,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                    "customParameters": parameters,
                },
                "streamSid": self.stream_sid,
            }
        )

    async def say(self, frames: list[bytes], *, realtime: bool = False) -> None:
        for n, frame in enumerate(frames):
            await self._send(
                {
                    "event": "media",
                    "streamSid": self.stream_sid,
                    "media": {
                        "track": "inbound",
                        "chunk": str(n + 1),
                        "timestamp": str(n * 20),
                        "payload": base64.b64encode(frame).decode(),
                    },
                }
            )
            if realtime:
                await asyncio.sleep(FRAME_SECONDS)
            elif n % 25 == 24:
                await asyncio.sleep(0)  # let the server breathe, as a network would

    async def silence(self, seconds: float, *, realtime: bool = False) -> None:
        await self.say([SILENCE_FRAME] * int(seconds / FRAME_SECONDS), realtime=realtime)

    async def press(self, digit: str) -> None:
        await self._send(
            {
                "event": "dtmf",
                "streamSid": self.stream_sid,
                "dtmf": {"track": "inbound_track", "digit": digit},
            }
        )

    async def stop(self) -> None:
        await self._send(
            {
                "event": "stop",
                "streamSid": self.stream_sid,
                "stop": {"accountSid": "ACtest", "callSid": self.call_sid},
            }
        )

    async def talk_over_the_agent(self, frames: list[bytes], *, after_played: float) -> float:
        """Once the phone has played ``after_played`` seconds of the agent, say ``frames``
        over it and wait for the ``clear`` (at most ~4 s). Returns how much the
        acknowledged marks say was played: what the server may count as heard."""
        for _ in range(500):
            if len(self.played) >= after_played * 8000:
                break
            await asyncio.sleep(0.02)
        await self.say(frames)
        for _ in range(200):
            if self.clears:
                break
            await asyncio.sleep(0.02)
        return max(self.mark_positions, default=0.0)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [m for m in self.received if m.get("event") == name]

    def first_media_after(self, count: int) -> float:
        """When the media message number ``count`` (0-based) arrived."""
        return self.media_times[count]

    def media_seconds(self) -> float:
        return sum(len(base64.b64decode(m["media"]["payload"])) for m in self.events("media")) / 8000

    def replies_played(self) -> int:
        """Replies the phone played to their end (their closing mark echoed)."""
        return sum(1 for name in self.marks_acked if name.endswith(":end"))

    async def until_replies_played(self, count: int, *, timeout: float = 20.0) -> None:
        """Until ``count`` replies in all have played to their end."""
        deadline = time.monotonic() + timeout
        while self.replies_played() < count and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        if self.replies_played() < count:
            raise TimeoutError(f"{self.replies_played()} replies played, not {count}")

    async def until_quiet(
        self, *, quiet: float = 0.4, timeout: float = 20.0, need_media: bool = True, after: int | None = None
    ) -> None:
        """Until the agent said something (more than ``after`` media messages in all: pass
        the count from before the caller spoke to wait for the answer to *that*), every mark
        came back, and nothing arrived for ``quiet`` s."""
        after = after or 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            marks_sent = {m["mark"]["name"] for m in self.events("mark")}
            spoke = not need_media or len(self.events("media")) > after
            done = spoke and marks_sent <= set(self.marks_acked)
            if done and not self._queue and time.monotonic() - self.last_message_at >= quiet:
                return
            if self.closed_code is not None:
                return
            await asyncio.sleep(0.05)
        marks = {m["mark"]["name"] for m in self.events("mark")}
        raise TimeoutError(
            f"the agent did not finish: {len(self.received)} messages, queue {len(self._queue)}, "
            f"marks unacknowledged {sorted(marks - set(self.marks_acked))}, clears {self.clears}"
        )

    async def until_closed(self, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while self.closed_code is None and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        if self.closed_code is None:
            raise TimeoutError("the stream was not closed")
        return self.closed_code

    async def hang_up(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.communicator.disconnect(timeout=10)


class TwilioSimulator:
    """Twilio's side: signed webhooks and signed streams, in-process (Django's async test
    client and ``WebsocketCommunicator``) or, with ``server``, over the network.

    Signatures are computed over ``public_base`` (what Twilio would request), whatever
    address the requests really go to: the server checks them against its
    ``TWILIO_PUBLIC_BASE_URL``."""

    def __init__(
        self, *, auth_token: str, public_base: str, application: Any = None, server: str | None = None
    ) -> None:
        self.auth_token = auth_token
        self.public_base = public_base.rstrip("/")
        self.server = server.rstrip("/") if server else None
        if self.server is None:
            from django.test import AsyncClient

            if application is None:
                from vantum.asgi import application as asgi_application

                application = asgi_application
            self.client = AsyncClient()
        self.application = application

    async def webhook(self, path: str, params: dict[str, str], *, signature: str | None = None):
        url = self.public_base + path
        signature = sign(self.auth_token, url, params) if signature is None else signature
        headers = {"X-Twilio-Signature": signature}
        if self.server is None:
            return await self.client.post(path, params, headers=headers)
        async with httpx2.AsyncClient(timeout=30) as client:
            return await client.post(self.server + path, data=params, headers=headers)

    async def answer(
        self,
        *,
        call_sid: str,
        direction: str = "inbound",
        from_: str = "+14155550100",
        to: str = "+14155550199",
        attempt: str | None = None,
        answered_by: str | None = None,
    ) -> tuple[Any, TwiMLStream | None]:
        params = {
            "CallSid": call_sid,
            "AccountSid": "ACtest",
            "From": from_,
            "To": to,
            "Direction": direction,
        }
        if answered_by:
            params["AnsweredBy"] = answered_by
        path = "/telephony/twilio/voice" + (f"?{urlencode({'attempt': attempt})}" if attempt else "")
        response = await self.webhook(path, params)
        stream = parse_twiml(response.content.decode()) if response.status_code == 200 else None
        return response, stream

    async def status(self, *, call_sid: str, status: str, attempt: str | None = None, **extra: str):
        path = "/telephony/twilio/status" + (f"?{urlencode({'attempt': attempt})}" if attempt else "")
        return await self.webhook(path, {"CallSid": call_sid, "CallStatus": status, **extra})

    async def open_stream(
        self, stream: TwiMLStream, *, call_sid: str, speed: float = 1.0, signature: str | None = None
    ) -> tuple[bool, PhoneLeg]:
        parts = urlsplit(stream.url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        signature = sign(self.auth_token, stream.url) if signature is None else signature
        communicator: WebsocketCommunicator | SocketCommunicator
        if self.server is not None:
            url = "ws" + self.server.removeprefix("http") + path
            try:
                socket = await websockets.connect(
                    url, additional_headers={"X-Twilio-Signature": signature}, open_timeout=10
                )
            except websockets.InvalidStatus:
                return False, PhoneLeg(
                    communicator=None, stream_sid="MZ" + call_sid[2:], call_sid=call_sid, speed=speed
                )
            communicator, connected = SocketCommunicator(socket), True
        else:
            headers = [(b"host", parts.netloc.encode()), (b"x-twilio-signature", signature.encode())]
            communicator = WebsocketCommunicator(self.application, path, headers=headers)
            connected, _ = await communicator.connect(timeout=10)
        leg = PhoneLeg(
            communicator=communicator, stream_sid="MZ" + call_sid[2:], call_sid=call_sid, speed=speed
        )
        if connected:
            leg.begin()
        return connected, leg


def caller_speech(seconds: float, rate: int = 16000) -> list[bytes]:
    """Loud voiced-like audio (a 200 Hz square wave at speech level) as Twilio frames: what
    the energy VAD and a recogniser double treat as words."""
    n = np.arange(int(seconds * rate))
    pcm = np.where((n // (rate // 400)) % 2, 6000, -6000).astype("<i2").tobytes()
    return speech_ulaw_frames(pcm, rate)
