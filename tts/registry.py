"""Build the configured speech engine by name."""

from __future__ import annotations

import logging
from typing import Any

from tts.base import SpeechEngine

logger = logging.getLogger(__name__)

ENGINE_NAMES = ("piper", "espeak", "openai", "cartesia", "tone")


def build_engine(name: str, **options: Any) -> SpeechEngine:
    """``name`` is one of ``ENGINE_NAMES``; options are the TTS_* / CARTESIA_* settings."""
    name = (name or "").strip().lower()
    voice = options.get("voice")
    if name == "tone":
        from tts.tone_engine import ToneEngine

        return ToneEngine()
    if name == "piper":
        from tts.piper_engine import PiperEngine

        return PiperEngine(default_voice=voice)
    if name == "espeak":
        from tts.espeak_engine import EspeakEngine

        return EspeakEngine(default_voice=voice)
    if name == "openai":
        from tts.openai_speech import OpenAISpeechEngine

        if not (options.get("openai_api_key") or options.get("openai_base_url")):
            raise ValueError(
                "TTS_ENGINE=openai needs TTS_OPENAI_API_KEY (or OPENAI_API_KEY) or TTS_OPENAI_BASE_URL"
            )
        return OpenAISpeechEngine(
            api_key=options.get("openai_api_key") or "",
            base_url=options.get("openai_base_url"),
            model=options.get("openai_model") or "gpt-4o-mini-tts",
            default_voice=voice,
        )
    if name == "cartesia":
        from tts.cartesia_engine import CartesiaEngine

        if not options.get("cartesia_api_key"):
            raise ValueError("TTS_ENGINE=cartesia needs CARTESIA_API_KEY")
        return CartesiaEngine(
            api_key=options["cartesia_api_key"],
            model=options.get("cartesia_model") or "sonic-2",
            default_voice=voice or options.get("cartesia_voice_id") or None,
            url=options.get("cartesia_url") or "wss://api.cartesia.ai/tts/websocket",
        )
    raise ValueError(f"TTS_ENGINE: unknown engine {name!r}; choose one of {', '.join(ENGINE_NAMES)}")
