"""A small MessagePack WebSocket client of the call protocol (../shared/PROTOCOL.md).

Written from the protocol document, independently of the server's codec, the way the
browser client is: the end-to-end tests and the benchmarks talk to a real server with it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import msgpack
import websockets


def _ext_hook(code: int, data: bytes) -> Any:
    return None if code == 0 else msgpack.ExtType(code, data)


@dataclass
class Event:
    event_type: str
    payload: dict[str, Any]
    envelope: dict[str, Any]
    received_at: float  # time.monotonic() in this process
    received_wall: float  # time.time(), comparable across processes


@dataclass
class TurnResult:
    events: list[Event] = field(default_factory=list)

    def of(self, event_type: str) -> list[Event]:
        return [e for e in self.events if e.event_type == event_type]

    @property
    def types(self) -> list[str]:
        return [e.event_type for e in self.events]

    @property
    def audio(self) -> bytes:
        return b"".join(e.payload["audio"] for e in self.of("voicechat.response.chunk"))

    @property
    def texts(self) -> list[str]:
        return [e.payload["text"] for e in self.of("voicechat.response.text")]


class CallClient:
    """One call. ``async with CallClient(url) as call: await call.say_text("hi")``."""

    def __init__(self, url: str, *, origin: str | None = None, open_timeout: float = 10.0) -> None:
        self.url = url
        self.origin = origin
        self.open_timeout = open_timeout
        self.session_id = ""
        self.socket: Any = None
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()

    async def __aenter__(self) -> CallClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> Event:
        headers = {"Origin": self.origin} if self.origin else None
        self.socket = await websockets.connect(
            self.url, additional_headers=headers, max_size=None, open_timeout=self.open_timeout
        )
        self._reader = asyncio.create_task(self._read())
        ack = await self.expect("connection.ack")
        self.session_id = ack.envelope["sessionId"]
        return ack

    async def close(self) -> None:
        if self.socket is not None:
            await self.socket.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)

    async def send(
        self, event_type: str, payload: dict[str, Any] | None = None, *, event_id: str | None = None
    ) -> str:
        event_id = event_id or str(uuid.uuid4())
        frame = {
            "eventType": event_type,
            "eventId": event_id,
            "sessionId": self.session_id,
            "payload": payload or {},
        }
        await self.socket.send(msgpack.packb(frame, use_bin_type=True))
        return event_id

    async def send_raw(self, data: bytes | str) -> None:
        await self.socket.send(data)

    async def next_event(self, timeout: float = 10.0) -> Event:
        return await asyncio.wait_for(self.events.get(), timeout)

    async def expect(self, event_type: str, timeout: float = 10.0) -> Event:
        """The next event, which must be of ``event_type``."""
        event = await self.next_event(timeout)
        if event.event_type != event_type:
            raise AssertionError(f"expected {event_type}, got {event.event_type}: {event.payload}")
        return event

    async def until(self, *event_types: str, timeout: float = 30.0) -> TurnResult:
        """Collect events up to and including the first of ``event_types``."""
        result = TurnResult()
        deadline = time.monotonic() + timeout
        while True:
            event = await self.next_event(max(0.01, deadline - time.monotonic()))
            result.events.append(event)
            if event.event_type in event_types:
                return result

    async def say_text(self, text: str, *, timeout: float = 30.0) -> TurnResult:
        """A typed turn, through its reply's ``response.complete``."""
        await self.send("voicechat.text.input", {"text": text})
        return await self.until("voicechat.response.complete", timeout=timeout)

    async def say_audio(self, pcm: bytes, *, sample_rate: int = 16000, chunk_bytes: int = 8192) -> None:
        await self.send("voicechat.audio.start", {"samplingRate": sample_rate})
        for start in range(0, len(pcm), chunk_bytes):
            await self.send("voicechat.audio.chunk", {"audio": pcm[start : start + chunk_bytes]})
        await self.send("voicechat.audio.end", {})

    async def _read(self) -> None:
        try:
            async for message in self.socket:
                if isinstance(message, str):
                    continue  # the client ignores text frames
                envelope = msgpack.unpackb(message, raw=False, ext_hook=_ext_hook)
                self.events.put_nowait(
                    Event(
                        event_type=envelope.get("eventType", ""),
                        payload=envelope.get("payload") or {},
                        envelope=envelope,
                        received_at=time.monotonic(),
                        received_wall=time.time(),
                    )
                )
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed.set()
