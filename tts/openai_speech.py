"""Any OpenAI-compatible ``/audio/speech`` server, streamed as raw PCM (24 kHz).

OpenAI's own speech models are announced for shutdown on 2027-01-06, so the model is
configuration (``TTS_OPENAI_MODEL``); local servers that speak this API work too.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx2
import openai

from tts.base import SpeechError, Voice

logger = logging.getLogger(__name__)

SAMPLE_RATE = 24000
VOICES = ("alloy", "ash", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer")


class OpenAISpeechEngine:
    name = "openai"

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        model: str = "gpt-4o-mini-tts",
        default_voice: str | None = None,
        timeout: float = 15.0,
        http_client: httpx2.AsyncClient | None = None,
    ) -> None:
        self.model = model
        self.default_voice = default_voice or "alloy"
        self._client = openai.AsyncOpenAI(
            api_key=api_key or "not-needed",
            base_url=base_url or None,
            timeout=timeout,
            max_retries=0,
            http_client=http_client,
        )

    def voices(self) -> list[Voice]:
        names = VOICES if self.default_voice in VOICES else (self.default_voice, *VOICES)
        return [Voice(name, name.capitalize(), "en") for name in names]

    def resolve_voice(self, voice_id: str | None) -> str:
        if (voice_id and voice_id in VOICES) or voice_id == self.default_voice:
            return voice_id  # type: ignore[return-value]
        if voice_id:
            logger.info("Unknown OpenAI voice %r requested; using %s", voice_id, self.default_voice)
        return self.default_voice

    def sample_rate(self, voice_id: str) -> int:
        return SAMPLE_RATE

    async def synthesize(self, text: str, *, voice_id: str) -> AsyncIterator[bytes]:
        try:
            async with self._client.audio.speech.with_streaming_response.create(
                model=self.model, voice=voice_id, input=text, response_format="pcm"
            ) as response:
                async for block in response.iter_bytes():
                    if block:
                        yield block
        except (openai.OpenAIError, httpx2.HTTPError) as error:
            raise SpeechError(f"speech server error: {getattr(error, 'message', None) or error}") from error
