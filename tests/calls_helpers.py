"""Driving the call consumer in-process with channels' WebsocketCommunicator."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import msgpack
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from calls.models import Call, Message


def frame(event_type: str, payload: dict[str, Any] | None = None, event_id: str | None = None) -> bytes:
    return msgpack.packb(
        {
            "eventType": event_type,
            "eventId": event_id or str(uuid.uuid4()),
            "sessionId": "",
            "payload": payload or {},
        },
        use_bin_type=True,
    )


def decode(data: bytes) -> dict[str, Any]:
    return msgpack.unpackb(data, raw=False, ext_hook=lambda code, raw: None if code == 0 else raw)


class Caller:
    def __init__(self, path: str = "/ws", *, origin: bytes | None = b"http://localhost") -> None:
        from vantum.asgi import application

        headers = [(b"origin", origin)] if origin else []
        self.communicator = WebsocketCommunicator(application, path, headers=headers)
        self.session_id = ""
        self._playback: dict[str, tuple[float, float]] = {}  # utteranceId -> (first audio, seconds)

    async def connect(self) -> dict[str, Any]:
        connected, _ = await self.communicator.connect(timeout=10)
        assert connected
        ack = await self.receive()
        assert ack["eventType"] == "connection.ack"
        self.session_id = ack["sessionId"]
        return ack

    async def send(
        self, event_type: str, payload: dict[str, Any] | None = None, event_id: str | None = None
    ) -> str:
        event_id = event_id or str(uuid.uuid4())
        await self.communicator.send_to(bytes_data=frame(event_type, payload, event_id))
        return event_id

    async def receive(self, timeout: float = 5.0) -> dict[str, Any]:
        message = await self.communicator.receive_output(timeout)
        if message["type"] == "websocket.close":
            return {"eventType": "<closed>", "code": message.get("code")}
        event = decode(message["bytes"])
        if event["eventType"] == "voicechat.response.chunk":
            # Played as it arrives, in real time from its first frame, like the browser client.
            payload = event["payload"]
            now = asyncio.get_running_loop().time()
            started, seconds = self._playback.get(payload["utteranceId"], (now, 0.0))
            seconds += len(payload["audio"]) / (2 * payload["sampleRate"])
            self._playback = {payload["utteranceId"]: (started, seconds)}
        return event

    async def until(self, *event_types: str, timeout: float = 10.0) -> list[dict[str, Any]]:
        events = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            event = await self.receive(max(0.05, deadline - loop.time()))
            events.append(event)
            if event["eventType"] in event_types or event["eventType"] == "<closed>":
                return events

    async def hang_up(self, *, after_listening: bool = False) -> None:
        """Hang up; ``after_listening``: first hear the last reply to its end (otherwise the
        server records it as cut off, with what had been played by then)."""
        if after_listening and self._playback:
            ((started, seconds),) = self._playback.values()
            # The server's estimate allows 15 % + 0.5 s of playback drift (calls.consumers).
            wait = started + seconds * 1.15 + 0.6 - asyncio.get_running_loop().time()
            await asyncio.sleep(max(0.0, wait))
        await self.communicator.disconnect(timeout=10)


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["eventType"] for e in events]


@database_sync_to_async
def stored_call(session_id: str) -> Call:
    return Call.objects.select_related("prompt_version").get(session_id=session_id)


@database_sync_to_async
def stored_messages(session_id: str) -> list[Message]:
    return list(Message.objects.filter(call__session_id=session_id).select_related("metrics").order_by("seq"))
