"""eSpeak NG in-process, from the ``espeakng-loader`` wheel (library and data included).

Light and instant, robotic to the ear: the fallback when Piper is not wanted. eSpeak NG
keeps global state, so one synthesis runs at a time per process; its callback delivers
PCM while it synthesizes and can abort mid-text.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from tts.base import SpeechError, Voice
from tts.pool import SynthesisPool

logger = logging.getLogger(__name__)

AUDIO_OUTPUT_SYNCHRONOUS = 2
POS_CHARACTER = 1
ESPEAK_CHARS_UTF8 = 1
VOICES = {"en-us": "English (US)", "en": "English (UK)", "en-us+f3": "English (US), female"}
DEFAULT_VOICE = "en-us"
_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
_library_lock = threading.Lock()
_library: tuple[ctypes.CDLL, int] | None = None


def _load() -> tuple[ctypes.CDLL, int]:
    global _library
    with _library_lock:
        if _library is None:
            import espeakng_loader

            lib = ctypes.CDLL(espeakng_loader.get_library_path())
            data_parent = str(Path(espeakng_loader.get_data_path()).parent).encode()
            lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
            rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 200, data_parent, 0)
            if rate <= 0:
                raise SpeechError("eSpeak NG failed to initialise")
            lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
            lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
            lib.espeak_Synth.argtypes = [
                ctypes.c_void_p,
                ctypes.c_size_t,
                ctypes.c_uint,
                ctypes.c_int,
                ctypes.c_uint,
                ctypes.c_uint,
                ctypes.c_void_p,
                ctypes.c_void_p,
            ]
            _library = (lib, rate)
        return _library


class EspeakEngine:
    name = "espeak"

    def __init__(self, *, default_voice: str | None = None) -> None:
        self._lib, self._rate = _load()
        self.default_voice = default_voice if default_voice in VOICES else DEFAULT_VOICE
        # eSpeak NG is not re-entrant: one worker serialises syntheses (each synthesis runs
        # whole within one step of the pool).
        self._pool = SynthesisPool(1, name="espeak")

    def voices(self) -> list[Voice]:
        return [Voice(voice_id, label, "en") for voice_id, label in VOICES.items()]

    def resolve_voice(self, voice_id: str | None) -> str:
        if voice_id in VOICES:
            return voice_id
        if voice_id:
            logger.info("Unknown eSpeak voice %r requested; using %s", voice_id, self.default_voice)
        return self.default_voice

    def sample_rate(self, voice_id: str) -> int:
        return self._rate

    async def synthesize(self, text: str, *, voice_id: str) -> AsyncIterator[bytes]:
        lib, voice = self._lib, self.resolve_voice(voice_id).encode()
        encoded = text.encode("utf-8") + b"\0"

        def blocks(cancelled: threading.Event) -> Iterator[bytes]:
            collected: list[bytes] = []

            def on_audio(wav: ctypes.POINTER(ctypes.c_short), count: int, events: int) -> int:
                if count > 0 and wav:
                    collected.append(ctypes.string_at(wav, count * 2))
                return 1 if cancelled.is_set() else 0

            callback = _SynthCallback(on_audio)
            lib.espeak_SetSynthCallback(callback)
            lib.espeak_SetVoiceByName(voice)
            # Synchronous mode: the callback runs inside espeak_Synth, sentence by sentence.
            status = lib.espeak_Synth(
                encoded, len(encoded), 0, POS_CHARACTER, 0, ESPEAK_CHARS_UTF8, None, None
            )
            if status != 0:
                raise SpeechError(f"eSpeak NG could not synthesize (status {status})")
            yield from collected

        async for block in self._pool.stream(blocks):
            yield block
