"""The OpenAI chat adapter: the only LLM module that imports ``openai``.

Works with OpenAI and any OpenAI-compatible server (vLLM, Ollama, llama.cpp) through
``base_url``. The SDK's defaults (600 s timeout, 2 retries) are wrong for a live call: the
timeout is explicit and the SDK never retries; the streaming turn retries, only before the
first token.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence

import httpx2
import openai

from llm.config import ModelParams
from llm.providers import ChatDelta, ErrorKind, ProviderError

logger = logging.getLogger(__name__)

# Self-hosted OpenAI-compatible servers usually ignore the key, but the SDK insists on one.
PLACEHOLDER_KEY = "not-needed"


def classify_error(error: BaseException) -> ProviderError:
    """The spec's error classes, from the SDK's exception classes (and its transport's)."""
    if isinstance(error, ProviderError):
        return error
    status = getattr(error, "status_code", None)
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    if isinstance(error, openai.AuthenticationError | openai.PermissionDeniedError):
        return ProviderError(ErrorKind.AUTH, message, status_code=status)
    if isinstance(error, openai.RateLimitError):
        return ProviderError(
            ErrorKind.RATE_LIMIT, message, status_code=status, retry_after=_retry_after(error)
        )
    if isinstance(error, openai.APITimeoutError | httpx2.TimeoutException):
        return ProviderError(ErrorKind.TIMEOUT, message)
    if isinstance(error, openai.APIConnectionError | httpx2.TransportError):
        return ProviderError(ErrorKind.NETWORK, message)
    if isinstance(
        error,
        openai.BadRequestError
        | openai.NotFoundError
        | openai.UnprocessableEntityError
        | openai.ConflictError,
    ):
        return ProviderError(ErrorKind.INVALID_REQUEST, message, status_code=status)
    if isinstance(error, openai.InternalServerError) or (status is not None and status >= 500):
        return ProviderError(ErrorKind.SERVER, message, status_code=status)
    return ProviderError(ErrorKind.UNKNOWN, message, status_code=status)


def _retry_after(error: openai.APIStatusError) -> float | None:
    value = error.response.headers.get("retry-after") if error.response is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class OpenAIChatProvider:
    """Streams chat completions; implements ``llm.providers.ChatProvider``."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        organization: str | None = None,
        request_timeout: float = 30.0,
        http_client: httpx2.AsyncClient | None = None,
        name: str = "openai",
    ) -> None:
        self.name = name
        self.base_url = base_url
        self._client = openai.AsyncOpenAI(
            api_key=api_key or (PLACEHOLDER_KEY if base_url else None),
            base_url=base_url or None,
            organization=organization or None,
            timeout=request_timeout,
            max_retries=0,
            http_client=http_client,
        )

    def describe(self) -> str:
        if self.base_url:
            return f"OpenAI-compatible server at {self.base_url}"
        return "OpenAI"

    async def stream_chat(
        self, *, messages: Sequence[dict[str, str]], params: ModelParams, call_id: str
    ) -> AsyncIterator[ChatDelta]:
        try:
            stream = await self._client.chat.completions.create(
                model=params.model,
                messages=list(messages),
                temperature=params.temperature,
                max_tokens=params.max_tokens,
                top_p=params.top_p,
                frequency_penalty=params.frequency_penalty,
                presence_penalty=params.presence_penalty,
                stream=True,
                stream_options={"include_usage": True},
            )
        except (openai.OpenAIError, httpx2.HTTPError) as error:
            raise classify_error(error) from error
        try:
            async for chunk in stream:
                if chunk.usage is not None:
                    yield ChatDelta(
                        prompt_tokens=chunk.usage.prompt_tokens,
                        completion_tokens=chunk.usage.completion_tokens,
                    )
                if chunk.choices:
                    content = chunk.choices[0].delta.content
                    if content:
                        yield ChatDelta(text=content)
        except (openai.OpenAIError, httpx2.HTTPError) as error:
            classified = classify_error(error)
            logger.warning("call=%s stream broke: %s", call_id, classified.message)
            raise classified from error
        finally:
            await stream.close()
