"""A local server that speaks Cartesia's TTS WebSocket messages, for tests and benchmarks.

It answers each generation request (a ``context_id``) with ``chunk`` messages (base64
audio) and a ``done``, or an ``error`` like Cartesia's for an output format it does not
offer; ``{"context_id": ..., "cancel": true}`` is recorded. Everything it was asked and
sent is kept, so a test can compare what reached the caller with what the "provider" sent.

Transcripts with a special meaning: ``fail`` (an error message), ``drop`` (the server
closes the socket), ``slow`` (20 blocks 50 ms apart, to cancel mid-synthesis).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import websockets

from tts.cartesia_engine import SUPPORTED_RATES

AudioFor = Callable[[str, dict[str, Any]], bytes]


def tagged_audio(text: str, output_format: dict[str, Any]) -> bytes:
    """The default audio: the transcript's first four bytes repeated, so a test can tell
    which request a block answers (routing by ``context_id``)."""
    return text.encode()[:4].ljust(4, b"_") * 300


class FakeCartesia:
    """``audio(transcript, output_format)`` makes a request's audio, sent in ``blocks``
    pieces ``block_delay`` seconds apart (split at odd byte offsets, as a network may)."""

    def __init__(
        self, *, audio: AudioFor = tagged_audio, blocks: int = 3, block_delay: float = 0.001
    ) -> None:
        self.audio = audio
        self.blocks = blocks
        self.block_delay = block_delay
        self.requests: list[dict[str, Any]] = []
        self.sent: dict[str, bytes] = {}  # context id -> all audio sent for it
        self.cancelled: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.connections = 0
        self.tasks: set[asyncio.Task[None]] = set()

    @contextlib.asynccontextmanager
    async def serve(self) -> AsyncIterator[str]:
        """Listen on loopback; yields the ``ws://`` URL for ``CartesiaEngine(url=...)``."""
        async with websockets.serve(self.handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            try:
                yield f"ws://127.0.0.1:{port}"
            finally:
                for task in self.tasks:
                    task.cancel()

    def audio_sent(self) -> bytes:
        """All audio sent, in the order the requests came."""
        return b"".join(self.sent.get(r["context_id"], b"") for r in self.requests)

    async def handler(self, socket: Any) -> None:
        self.connections += 1
        self.headers.append(dict(socket.request.headers))
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in socket:
                message = json.loads(raw)
                if message.get("cancel"):
                    self.cancelled.append(message["context_id"])
                    continue
                self.requests.append(message)
                task = asyncio.create_task(self._answer(socket, message))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    async def _answer(self, socket: Any, message: dict[str, Any]) -> None:
        context = message["context_id"]
        text = message["transcript"]
        output_format = message.get("output_format") or {}
        problem = _format_problem(output_format)
        if text == "fail" or problem:
            detail = problem or "Invalid voice"
            await socket.send(
                json.dumps({"type": "error", "done": True, "error": detail, "context_id": context})
            )
            return
        if text == "drop":
            await socket.close()
            return
        slow = text == "slow"
        audio = self.audio(text, output_format)
        blocks, delay = (20, 0.05) if slow else (self.blocks, self.block_delay)
        size = len(audio) // blocks + 1
        if size % 2 == 0:
            size += 1  # odd offsets: the engine's consumer must carry half samples over
        self.sent[context] = b""
        with contextlib.suppress(websockets.ConnectionClosed):
            for start in range(0, len(audio), size):
                piece = audio[start : start + size]
                await socket.send(
                    json.dumps(
                        {
                            "type": "chunk",
                            "data": base64.b64encode(piece).decode(),
                            "done": False,
                            "status_code": 206,
                            "context_id": context,
                        }
                    )
                )
                self.sent[context] += piece
                await asyncio.sleep(delay)
            await socket.send(
                json.dumps({"type": "done", "done": True, "status_code": 206, "context_id": context})
            )


def _format_problem(output_format: dict[str, Any]) -> str:
    if output_format.get("container") != "raw":
        return f"unsupported container {output_format.get('container')!r}"
    if output_format.get("encoding") not in {"pcm_s16le", "pcm_f32le", "pcm_mulaw", "pcm_alaw"}:
        return f"unsupported encoding {output_format.get('encoding')!r}"
    if output_format.get("sample_rate") not in SUPPORTED_RATES:
        return f"unsupported sample rate {output_format.get('sample_rate')!r}"
    return ""
