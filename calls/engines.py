"""The providers of this process, built once from settings.

Providers hold HTTP clients and model weights, so one instance serves every call of the
process. Tests replace them with ``override_engines`` (real adapters on the HTTP-level fake),
never by patching internals.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

from django.conf import settings

from llm.metrics import LLMServiceMetrics
from llm.providers import ChatProvider
from llm.session import SessionRegistry
from stt.base import Transcriber
from tts.base import SpeechEngine

logger = logging.getLogger(__name__)


@dataclass
class Engines:
    chat: ChatProvider
    speech: SpeechEngine
    transcriber: Transcriber | None


_engines: Engines | None = None
_registry: SessionRegistry | None = None
LLM_METRICS = LLMServiceMetrics()


def build_chat_provider() -> ChatProvider:
    config = settings.VANTUM_LLM
    if config.demo_mode:
        from llm.demo import build_demo_provider

        return build_demo_provider()
    from llm.openai_adapter import OpenAIChatProvider

    return OpenAIChatProvider(
        api_key=config.api_key,
        base_url=config.base_url or None,
        organization=config.organization or None,
        request_timeout=config.request_timeout,
    )


def build_transcriber() -> Transcriber | None:
    """The configured speech-to-text engine, or None when there is none (typed turns only)."""
    engine = settings.STT_ENGINE.lower()
    api_key = settings.STT_API_KEY or settings.VANTUM_LLM.api_key
    base_url = settings.STT_BASE_URL or settings.VANTUM_LLM.base_url
    if engine == "auto":
        engine = "openai" if (api_key or settings.STT_BASE_URL) else "none"
    if engine == "none":
        return None
    from stt.openai_stt import OpenAITranscriber

    if engine == "openai":
        return OpenAITranscriber(
            api_key=api_key, base_url=base_url or None, model=settings.STT_MODEL, timeout=settings.STT_TIMEOUT
        )
    if engine == "fake":
        # For browser tests and local demos of the voice path: the HTTP-level fake
        # answers every utterance with STT_FAKE_TEXT. Never a production setting.
        from llm.fake_openai import FakeOpenAI

        fake = FakeOpenAI(transcription_text=settings.STT_FAKE_TEXT, keep_log=False)
        transcriber = OpenAITranscriber(
            api_key="fake",
            base_url=None,
            model=settings.STT_MODEL,
            timeout=settings.STT_TIMEOUT,
            http_client=fake.http_client(),
        )
        transcriber.name = "fake (tests only)"
        return transcriber
    raise ValueError(f"STT_ENGINE: unknown engine {engine!r} (auto, openai, fake, none)")


def build_speech_engine() -> SpeechEngine:
    from tts.registry import build_engine

    return build_engine(
        settings.TTS_ENGINE,
        voice=settings.TTS_VOICE or None,
        openai_api_key=settings.TTS_OPENAI_API_KEY or settings.VANTUM_LLM.api_key,
        openai_base_url=settings.TTS_OPENAI_BASE_URL or None,
        openai_model=settings.TTS_OPENAI_MODEL,
        cartesia_api_key=settings.CARTESIA_API_KEY,
        cartesia_model=settings.CARTESIA_MODEL,
        cartesia_voice_id=settings.CARTESIA_VOICE_ID,
        cartesia_url=settings.CARTESIA_URL,
    )


def get_engines() -> Engines:
    global _engines
    if _engines is None:
        _engines = Engines(
            chat=build_chat_provider(), speech=build_speech_engine(), transcriber=build_transcriber()
        )
        logger.info(
            "engines: chat=%s speech=%s stt=%s",
            getattr(_engines.chat, "name", "?"),
            _engines.speech.name,
            _engines.transcriber.name if _engines.transcriber else "none",
        )
    return _engines


def get_session_registry() -> SessionRegistry:
    global _registry
    if _registry is None:
        _registry = SessionRegistry(config=settings.VANTUM_LLM, metrics=LLM_METRICS)
    return _registry


@contextlib.contextmanager
def override_engines(
    *,
    chat: ChatProvider | None = None,
    speech: SpeechEngine | None = None,
    transcriber: Transcriber | None = None,
    registry: SessionRegistry | None = None,
) -> Iterator[Engines]:
    """Use these providers (the rest as configured) inside the block."""
    global _engines, _registry
    saved, saved_registry = _engines, _registry
    base = _engines
    _engines = Engines(
        chat=chat or (base.chat if base else build_chat_provider()),
        speech=speech or (base.speech if base else build_speech_engine()),
        transcriber=transcriber if transcriber is not None else (base.transcriber if base else None),
    )
    if registry is not None:
        _registry = registry
    try:
        yield _engines
    finally:
        _engines, _registry = saved, saved_registry
