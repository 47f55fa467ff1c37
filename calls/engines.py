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
from stt.turn_detection import EndOfTurnModel, TurnConfig
from stt.vad import VadFactory
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
    """The configured speech-to-text engine, or None when there is none (typed turns only).

    ``local`` (the default) loads offline Whisper here, at server start, so the first caller
    never waits for it. ``auto`` picks a cloud engine only when one is configured.
    """
    engine = settings.STT_ENGINE.lower()
    api_key = settings.STT_API_KEY or settings.VANTUM_LLM.api_key
    base_url = settings.STT_BASE_URL or settings.VANTUM_LLM.base_url
    if engine == "auto":
        if settings.STT_API_KEY or settings.STT_BASE_URL:
            engine = "openai"
        elif settings.DEEPGRAM_API_KEY:
            engine = "deepgram"
        else:
            engine = "local"
    if engine == "none":
        return None
    if engine == "local":
        from pathlib import Path

        from stt.local_whisper import LocalWhisperTranscriber, ModelNotInstalled

        try:
            return LocalWhisperTranscriber(
                model=settings.STT_LOCAL_MODEL,
                max_concurrent=settings.STT_MAX_CONCURRENT or None,
                cache_dir=Path(settings.VANTUM_CACHE_DIR) if settings.VANTUM_CACHE_DIR else None,
                window_seconds=settings.STT_LOCAL_WINDOW_SECONDS,
            )
        except (ModelNotInstalled, ImportError) as error:
            # A server without the model still holds typed calls; the console says so.
            logger.error("speech-to-text disabled: %s", error)
            return None
    if engine == "deepgram":
        from stt.deepgram import DeepgramTranscriber

        if not settings.DEEPGRAM_API_KEY:
            raise ValueError("STT_ENGINE=deepgram needs DEEPGRAM_API_KEY")
        return DeepgramTranscriber(
            api_key=settings.DEEPGRAM_API_KEY,
            model=settings.DEEPGRAM_MODEL,
            url=settings.DEEPGRAM_URL,
            timeout=settings.STT_TIMEOUT,
        )
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
    raise ValueError(f"STT_ENGINE: unknown engine {engine!r} (local, openai, deepgram, auto, fake, none)")


def build_vad_factory() -> VadFactory:
    """Per-call VAD streams: Silero (one model per process, loaded now) or the energy detector."""
    from stt.vad import VadUnavailable, energy_factory, silero_factory

    engine = settings.VAD_ENGINE.lower()
    if engine == "silero":
        try:
            return silero_factory()
        except VadUnavailable as error:
            logger.error("Silero VAD unavailable (%s): falling back to the energy detector", error)
            return energy_factory()
    if engine == "energy":
        return energy_factory()
    raise ValueError(f"VAD_ENGINE: unknown engine {engine!r} (silero, energy)")


def build_turn_config() -> TurnConfig:
    """Server-side turn detection timings from settings (see stt.turn_detection.TurnConfig)."""
    return TurnConfig(
        end_silence_ms=settings.TURN_END_SILENCE_MS,
        barge_in_min_speech_ms=settings.BARGE_IN_MIN_SPEECH_MS,
        min_speech_ms=settings.TURN_MIN_SPEECH_MS,
        speech_threshold=settings.TURN_SPEECH_THRESHOLD,
        padding_ms=settings.TURN_PADDING_MS,
        max_turn_ms=settings.TURN_MAX_MS,
        pause_ms=min(settings.TURN_PAUSE_MS, settings.TURN_END_SILENCE_MS),
        smart_wait_ms=settings.TURN_SMART_WAIT_MS,
    )


def build_end_of_turn_model() -> EndOfTurnModel | None:
    """Smart Turn v3.2 (one ONNX session per process) when ``TURN_SMART`` is on, else None.

    Pass it to ``TurnDetector(end_of_turn=...)``; it runs inside ``feed``, which the
    ``Listener`` then runs in a worker thread.
    """
    if not settings.TURN_SMART:
        return None
    from stt.smart_turn import shared_smart_turn

    return shared_smart_turn()


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
        if _engines.transcriber is not None:
            # Hands-free is possible: load the VAD model now too, so the first hands-free
            # call does not pay for it (the model is the process's; calls.listening keeps it).
            from calls.listening import vad_factory

            vad_factory()
    return _engines


def get_session_registry() -> SessionRegistry:
    global _registry
    if _registry is None:
        _registry = SessionRegistry(config=settings.VANTUM_LLM, metrics=LLM_METRICS)
    return _registry


_AS_CONFIGURED = object()


@contextlib.contextmanager
def override_engines(
    *,
    chat: ChatProvider | None = None,
    speech: SpeechEngine | None = None,
    transcriber: Transcriber | object | None = _AS_CONFIGURED,
    registry: SessionRegistry | None = None,
) -> Iterator[Engines]:
    """Use these providers (the rest as configured) inside the block. ``transcriber=None``
    means no speech-to-text at all (the default keeps the configured one)."""
    global _engines, _registry
    saved, saved_registry = _engines, _registry
    base = _engines
    _engines = Engines(
        chat=chat or (base.chat if base else build_chat_provider()),
        speech=speech or (base.speech if base else build_speech_engine()),
        transcriber=(base.transcriber if base else None) if transcriber is _AS_CONFIGURED else transcriber,
    )
    if registry is not None:
        _registry = registry
    try:
        yield _engines
    finally:
        _engines, _registry = saved, saved_registry
