"""OpenAI-compatible transcription: the only speech-to-text module that imports ``openai``.

The utterance is resampled to 16 kHz (what Whisper-family models work at; a smaller
upload than 48 kHz) and sent as a WAV file. Like the chat adapter, the SDK gets an
explicit timeout and never retries: the caller is waiting, and can simply speak again.
"""

from __future__ import annotations

import asyncio
import logging

import httpx2
import openai

from stt.audio import pcm16_to_wav, resample_pcm16
from stt.base import TranscriptionError

logger = logging.getLogger(__name__)

TARGET_RATE = 16000
OPENAI_BASE_URL = "https://api.openai.com/v1"
PLACEHOLDER_KEY = "not-needed"  # self-hosted servers (faster-whisper, whisper.cpp) ignore the key

MESSAGES = {
    "auth": "Speech-to-text is not available (the server rejected our credentials).",
    "rate_limit": "Speech-to-text is busy right now. Please try again, or type.",
    "timeout": "Speech-to-text took too long. Please try again, or type.",
    "network": "Speech-to-text could not be reached. Please try again, or type.",
    "rejected": "Speech-to-text could not use that recording. Please try again, or type.",
    "failed": "Speech-to-text failed for that recording. Please try again, or type.",
    "empty": "Nothing was recorded. Please try again, or type.",
}


def _message_for(error: Exception) -> str:
    """The caller-facing message for an SDK (or transport) error. Timeout before connection:
    ``APITimeoutError`` subclasses ``APIConnectionError``."""
    if isinstance(error, openai.AuthenticationError | openai.PermissionDeniedError):
        return MESSAGES["auth"]
    if isinstance(error, openai.RateLimitError):
        return MESSAGES["rate_limit"]
    if isinstance(error, openai.APITimeoutError | httpx2.TimeoutException):
        return MESSAGES["timeout"]
    if isinstance(error, openai.APIConnectionError | httpx2.TransportError):
        return MESSAGES["network"]
    if isinstance(error, openai.BadRequestError | openai.UnprocessableEntityError):
        return MESSAGES["rejected"]
    return MESSAGES["failed"]


class OpenAITranscriber:
    """``POST /audio/transcriptions`` with the utterance as a 16 kHz mono WAV file.

    ``api_key`` may be empty with a ``base_url`` (a placeholder is sent). ``timeout``
    (seconds, > 0) bounds the whole exchange's connect/read/write steps.
    """

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        model: str = "gpt-4o-mini-transcribe",
        timeout: float = 15.0,
        http_client: httpx2.AsyncClient | None = None,
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.name = "openai" if not base_url else "openai-compatible"
        self.model = model
        self._client = openai.AsyncOpenAI(
            api_key=api_key or PLACEHOLDER_KEY,
            base_url=base_url or OPENAI_BASE_URL,
            timeout=httpx2.Timeout(timeout),
            max_retries=0,
            http_client=http_client,
        )

    async def transcribe(self, pcm: bytes, *, sample_rate: int, language: str | None, call_id: str) -> str:
        """The stripped transcript of ``pcm`` (s16le mono at ``sample_rate`` Hz).

        ``language`` is an ISO-639-1 hint, or None to let the model detect it. Raises
        ``TranscriptionError`` with a message meant for the caller.
        """
        if len(pcm) < 2:
            raise TranscriptionError(MESSAGES["empty"])
        # Resampling a long utterance is pure-Python CPU work: keep it off the event loop.
        wav = await asyncio.to_thread(
            lambda: pcm16_to_wav(resample_pcm16(pcm, sample_rate, TARGET_RATE), TARGET_RATE)
        )
        options = {"language": language} if language else {}
        try:
            result = await self._client.audio.transcriptions.create(
                model=self.model, file=("utterance.wav", wav, "audio/wav"), **options
            )
        except Exception as error:
            message = _message_for(error)
            level = logging.ERROR if message == MESSAGES["auth"] else logging.WARNING
            logger.log(level, "call=%s transcription failed: %r", call_id, error)
            raise TranscriptionError(message) from error
        return (getattr(result, "text", "") or "").strip()
