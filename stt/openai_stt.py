"""OpenAI-compatible transcription: the only speech-to-text module that imports ``openai``."""

from __future__ import annotations

import asyncio
import logging

import httpx2
import openai

from stt.audio import pcm16_to_wav, resample_pcm16
from stt.base import TranscriptionError

logger = logging.getLogger(__name__)

TARGET_RATE = 16000


class OpenAITranscriber:
    """``POST /audio/transcriptions`` with the utterance as a 16 kHz WAV file."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        model: str = "gpt-4o-mini-transcribe",
        timeout: float = 15.0,
        http_client: httpx2.AsyncClient | None = None,
    ) -> None:
        self.name = "openai" if not base_url else "openai-compatible"
        self.model = model
        self._client = openai.AsyncOpenAI(
            api_key=api_key or "not-needed",
            base_url=base_url or None,
            timeout=timeout,
            max_retries=0,
            http_client=http_client,
        )

    async def transcribe(self, pcm: bytes, *, sample_rate: int, language: str | None, call_id: str) -> str:
        # Resampling a long utterance is pure-Python CPU work: keep it off the event loop.
        wav = await asyncio.to_thread(
            lambda: pcm16_to_wav(resample_pcm16(pcm, sample_rate, TARGET_RATE), TARGET_RATE)
        )
        options = {"language": language} if language else {}
        try:
            result = await self._client.audio.transcriptions.create(
                model=self.model, file=("utterance.wav", wav, "audio/wav"), **options
            )
        except openai.AuthenticationError as error:
            logger.error("call=%s transcription refused: %s", call_id, error)
            raise TranscriptionError(
                "Speech-to-text is not available (the server rejected our credentials)."
            ) from error
        except openai.RateLimitError as error:
            raise TranscriptionError(
                "Speech-to-text is busy right now. Please try again, or type."
            ) from error
        except (openai.APITimeoutError, httpx2.TimeoutException) as error:
            raise TranscriptionError("Speech-to-text took too long. Please try again, or type.") from error
        except (openai.OpenAIError, httpx2.HTTPError) as error:
            logger.warning("call=%s transcription failed: %s", call_id, error)
            raise TranscriptionError(
                "Speech-to-text failed for that recording. Please try again, or type."
            ) from error
        return (getattr(result, "text", "") or "").strip()
