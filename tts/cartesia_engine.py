"""Cartesia (the product's earlier provider) over its WebSocket API.

One WebSocket per process, opened on first use and reopened after a drop; each chunk is a
context (``context_id``) whose responses are routed to it, so many calls share the socket.
Cancelling a synthesis (barge-in) sends ``{"context_id": ..., "cancel": true}``.

``for_rate(8000)`` is the same engine asking Cartesia for 8 kHz PCM: a phone call speaks
through it and its audio needs no resampling (only the G.711 μ-law encode, a table look-up).
Cartesia could send μ-law itself (``pcm_mulaw``), but everything between the engine and
the phone (framing, pacing, heard-audio accounting, the call recording) counts 16-bit PCM
samples. Passing μ-law through would save the encode and half of Cartesia's bytes, about
0.1 ms CPU per second of speech (``bench/bench_phone.py --engine-rates``), against a second
audio encoding in all of those; so the phone variant asks for ``pcm_s16le``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import websockets

from tts.base import SpeechError, Voice

logger = logging.getLogger(__name__)

API_VERSION = "2025-04-16"
SAMPLE_RATE = 24000
# The rates Cartesia's raw output formats offer.
SUPPORTED_RATES = frozenset({8000, 16000, 22050, 24000, 44100, 48000})
_UUID = re.compile(r"^[0-9a-fA-F-]{36}$")


class CartesiaEngine:
    name = "cartesia"

    def __init__(
        self,
        *,
        api_key: str,
        model: str = "sonic-2",
        default_voice: str | None = None,
        url: str = "wss://api.cartesia.ai/tts/websocket",
        sample_rate: int = SAMPLE_RATE,
        language: str = "en",
    ) -> None:
        if not default_voice:
            raise ValueError(
                "TTS_ENGINE=cartesia needs CARTESIA_VOICE_ID (or TTS_VOICE): a Cartesia voice id"
            )
        self.api_key = api_key
        self.model = model
        self.default_voice = default_voice
        self.url = url
        self.rate = sample_rate
        self.language = language
        self._socket: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._connecting = asyncio.Lock()
        self._contexts: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self._variants: dict[int, CartesiaAtRate] = {}

    def voices(self) -> list[Voice]:
        return [Voice(self.default_voice, "Cartesia voice", self.language)]

    def resolve_voice(self, voice_id: str | None) -> str:
        if voice_id and _UUID.match(voice_id):
            return voice_id
        if voice_id:
            logger.info("Unknown Cartesia voice %r requested; using %s", voice_id, self.default_voice)
        return self.default_voice

    def sample_rate(self, voice_id: str) -> int:
        return self.rate

    def for_rate(self, sample_rate: int) -> CartesiaEngine | CartesiaAtRate | None:
        """This engine rendering at ``sample_rate`` (the optional capability of
        ``tts.base``): it shares this engine's socket and voices. None for a rate Cartesia
        does not offer."""
        if sample_rate == self.rate:
            return self
        if sample_rate not in SUPPORTED_RATES:
            return None
        if sample_rate not in self._variants:
            self._variants[sample_rate] = CartesiaAtRate(self, sample_rate)
        return self._variants[sample_rate]

    def synthesize(self, text: str, *, voice_id: str) -> AsyncIterator[bytes]:
        return self.synthesize_at(text, voice_id=voice_id, sample_rate=self.rate)

    async def synthesize_at(self, text: str, *, voice_id: str, sample_rate: int) -> AsyncIterator[bytes]:
        """PCM s16le at ``sample_rate`` (one of ``SUPPORTED_RATES``), rendered by Cartesia."""
        socket = await self._connected()
        context_id = str(uuid.uuid4())
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._contexts[context_id] = queue
        finished = False
        try:
            await socket.send(
                json.dumps(
                    {
                        "model_id": self.model,
                        "transcript": text,
                        "voice": {"mode": "id", "id": voice_id},
                        "language": self.language,
                        "context_id": context_id,
                        "output_format": {
                            "container": "raw",
                            "encoding": "pcm_s16le",
                            "sample_rate": sample_rate,
                        },
                        "continue": False,
                    }
                )
            )
            while True:
                message = await queue.get()
                kind = message.get("type")
                if kind == "chunk" and message.get("data"):
                    yield base64.b64decode(message["data"])
                elif kind == "done" or (message.get("done") and kind != "error"):
                    finished = True
                    return
                elif kind == "error":
                    finished = True
                    detail = message.get("error") or message.get("message") or message.get("title") or "error"
                    raise SpeechError(f"Cartesia: {detail}")
        except websockets.ConnectionClosed as error:
            finished = True
            raise SpeechError("Cartesia connection closed during synthesis") from error
        finally:
            self._contexts.pop(context_id, None)
            if not finished:
                await self._cancel(context_id)

    async def _cancel(self, context_id: str) -> None:
        socket = self._socket
        if socket is None:
            return
        try:
            await socket.send(json.dumps({"context_id": context_id, "cancel": True}))
        except Exception:  # the socket went away: nothing left to cancel
            logger.debug("could not send Cartesia cancel for %s", context_id)

    async def _connected(self) -> Any:
        async with self._connecting:
            if self._socket is None:
                try:
                    self._socket = await websockets.connect(
                        self.url,
                        additional_headers={"X-API-Key": self.api_key, "Cartesia-Version": API_VERSION},
                        open_timeout=10,
                        max_size=None,
                    )
                except (OSError, websockets.WebSocketException) as error:
                    raise SpeechError(f"Cannot reach Cartesia: {error}") from error
                self._reader = asyncio.create_task(self._read(self._socket), name="cartesia-reader")
            return self._socket

    async def _read(self, socket: Any) -> None:
        try:
            async for raw in socket:
                try:
                    message = json.loads(raw)
                except ValueError:
                    continue
                queue = self._contexts.get(message.get("context_id", ""))
                if queue is not None:
                    queue.put_nowait(message)
        except websockets.ConnectionClosed:
            pass
        finally:
            if self._socket is socket:
                self._socket = None  # reconnect on next use
            for queue in self._contexts.values():
                queue.put_nowait({"type": "error", "error": "connection lost"})


class CartesiaAtRate:
    """A ``CartesiaEngine`` asking for another output rate: same socket, voices and name
    (the call's stored engine stays "cartesia"). Built by ``CartesiaEngine.for_rate``."""

    def __init__(self, engine: CartesiaEngine, sample_rate: int) -> None:
        self.engine = engine
        self.rate = sample_rate
        self.name = engine.name

    def voices(self) -> list[Voice]:
        return self.engine.voices()

    def resolve_voice(self, voice_id: str | None) -> str:
        return self.engine.resolve_voice(voice_id)

    def sample_rate(self, voice_id: str) -> int:
        return self.rate

    def for_rate(self, sample_rate: int) -> CartesiaEngine | CartesiaAtRate | None:
        return self.engine.for_rate(sample_rate)

    def synthesize(self, text: str, *, voice_id: str) -> AsyncIterator[bytes]:
        return self.engine.synthesize_at(text, voice_id=voice_id, sample_rate=self.rate)
