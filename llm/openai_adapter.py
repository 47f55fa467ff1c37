"""The OpenAI chat adapter: the only LLM module that imports ``openai``.

Works with OpenAI and any OpenAI-compatible server (vLLM, Ollama, llama.cpp) through
``base_url``. The SDK's defaults (a 600 s timeout and 2 retries) are wrong for a live
call: the timeout here is explicit and the SDK never retries; the streaming turn retries,
and only before the first token (a retry after speech began would repeat words).

Every failure leaves ``stream_chat`` as a ``ProviderError`` classified from the SDK's
exception classes (``classify_error``), whether it happened on the request or while
reading the stream.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx2
import openai

from llm.config import ModelParams
from llm.providers import ChatDelta, ErrorKind, ProviderError
from llm.sse import ServerSentEvent, SSEDecoder, SSEError, is_done, json_object, stream_error

logger = logging.getLogger(__name__)

OPENAI_BASE_URL = "https://api.openai.com/v1"
# Self-hosted OpenAI-compatible servers usually ignore the key, but the SDK insists on one.
PLACEHOLDER_KEY = "not-needed"


_INVALID = (
    openai.BadRequestError,
    openai.NotFoundError,
    openai.UnprocessableEntityError,
    openai.ConflictError,
)


def classify_error(error: BaseException) -> ProviderError:
    """The spec's error classes, from the SDK's exception classes (and its transport's).

    Order matters: ``APITimeoutError`` is a subclass of ``APIConnectionError``. This SDK
    wraps transport errors raised while reading a stream too (a dropped connection
    mid-stream is an ``APIConnectionError`` caused by ``httpx2.RemoteProtocolError``); the
    ``httpx2`` classes are kept for SDK versions that let them through. The wrapped
    transport error is named in the message, since the SDK's own says only
    "Connection error.".
    """
    if isinstance(error, ProviderError):
        return error
    status = getattr(error, "status_code", None)
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    if isinstance(error, openai.AuthenticationError | openai.PermissionDeniedError):
        return ProviderError(ErrorKind.AUTH, message, status_code=status)
    if isinstance(error, openai.RateLimitError):
        return ProviderError(
            ErrorKind.RATE_LIMIT, message, status_code=status, retry_after=retry_after_seconds(error.response)
        )
    if isinstance(error, openai.APIConnectionError) and error.__cause__ is not None:
        message = f"{message} ({type(error.__cause__).__name__}: {error.__cause__})"
    if isinstance(error, openai.APITimeoutError | httpx2.TimeoutException):
        return ProviderError(ErrorKind.TIMEOUT, message)
    if isinstance(error, openai.APIConnectionError | httpx2.TransportError):
        return ProviderError(ErrorKind.NETWORK, message)
    if isinstance(error, _INVALID):
        return ProviderError(ErrorKind.INVALID_REQUEST, message, status_code=status)
    if isinstance(error, openai.InternalServerError) or (status is not None and status >= 500):
        return ProviderError(ErrorKind.SERVER, message, status_code=status)
    if isinstance(error, openai.APIError) and status is None and error.type == "server_error":
        # OpenAI's mid-stream ``data: {"error": {"type": "server_error", ...}}`` event.
        return ProviderError(ErrorKind.SERVER, message)
    return ProviderError(ErrorKind.UNKNOWN, message, status_code=status)


def retry_after_seconds(response: httpx2.Response | None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` / ``retry-after`` (seconds or an HTTP date)."""
    if response is None:
        return None
    headers = response.headers
    try:
        if "retry-after-ms" in headers:
            return max(0.0, float(headers["retry-after-ms"]) / 1000.0)
        value = headers.get("retry-after")
        if value is None:
            return None
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(headers["retry-after"])
    except (TypeError, ValueError, KeyError):
        return None
    return max(0.0, when.timestamp() - time.time())


class OpenAIChatProvider:
    """Streams chat completions; implements ``llm.providers.ChatProvider``.

    One instance serves every call of the process (it holds the HTTP connection pool).
    ``request_timeout`` (seconds, > 0) bounds connecting, each read (so also the gap
    between two streamed chunks) and writing. ``api_key`` may be empty only with a
    ``base_url`` (a self-hosted server); then a placeholder key is sent.
    """

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        organization: str | None = None,
        request_timeout: float = 30.0,
        http_client: httpx2.AsyncClient | None = None,
        name: str = "openai",
        description: str | None = None,
    ) -> None:
        if not api_key and not base_url:
            raise ValueError("api_key is required unless base_url points at a self-hosted server")
        if not request_timeout > 0:
            raise ValueError(f"request_timeout must be positive, got {request_timeout}")
        self.name = name
        self.base_url = base_url or None
        self._description = description
        # An explicit base_url: with None the SDK would read OPENAI_BASE_URL itself, behind
        # vantum.env's back. (organization=None still lets it read OPENAI_ORG_ID; "" would
        # send an empty OpenAI-Organization header.)
        self._client = openai.AsyncOpenAI(
            api_key=api_key or PLACEHOLDER_KEY,
            base_url=base_url or OPENAI_BASE_URL,
            organization=organization or None,
            timeout=httpx2.Timeout(request_timeout),
            max_retries=0,
            http_client=http_client,
        )

    def describe(self, model: str | None = None) -> str:
        """A short human description, e.g. ``"OpenAI gpt-4.1 at https://api.openai.com/v1"``."""
        if self._description:
            return self._description
        what = f"OpenAI {model}" if model else "OpenAI"
        if self.base_url:
            what = f"OpenAI-compatible server ({model})" if model else "OpenAI-compatible server"
        return f"{what} at {self.base_url or OPENAI_BASE_URL}"

    async def stream_chat(
        self,
        *,
        messages: Sequence[dict[str, Any]],
        params: ModelParams,
        call_id: str,
        tools: Sequence[dict[str, Any]] | None = None,
        tool_choice: str | None = None,
    ) -> AsyncIterator[ChatDelta]:
        """Yield deltas as the model writes (text, tool-call pieces, the finish reason), then
        one usage delta.

        The SDK sends the request (base URL, authentication, headers, timeout) through its
        generic ``post`` and raises its own errors for a failed one; the body is read raw and
        parsed by ``llm.sse`` (no pydantic object per chunk). The request body is built here
        as plain JSON: ``chat.completions.create`` ran the SDK's type-driven transformation
        over every message, 75 % of a request's CPU (docs/BENCHMARKS.md, issue 11).
        Raises ``ProviderError`` for every failure, including a stream that ends without
        the model finishing (no finish reason and no usage: the connection was cut cleanly).
        Cancelling the consumer, or closing this generator, closes the HTTP stream.
        """
        logger.debug("call=%s chat request: model=%s messages=%d", call_id, params.model, len(messages))
        body: dict[str, Any] = {
            "model": params.model,
            "messages": list(messages),
            "temperature": params.temperature,
            "max_tokens": params.max_tokens,
            "top_p": params.top_p,
            "frequency_penalty": params.frequency_penalty,
            "presence_penalty": params.presence_penalty,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if tools:
            body["tools"] = list(tools)
            if tool_choice:
                body["tool_choice"] = tool_choice
        async with contextlib.AsyncExitStack() as stack:
            try:
                # cast_to=Response with stream=True: the SDK hands back the unread response.
                http_response = await self._client.post(
                    "/chat/completions", body=body, cast_to=httpx2.Response, stream=True
                )
                stack.push_async_callback(http_response.aclose)
            except Exception as error:
                classified = classify_error(error)
                logger.warning(
                    "call=%s chat request failed (%s): %s", call_id, classified.kind, classified.message
                )
                raise classified from error
            finish_reason: str | None = None
            usage_seen = False
            try:
                async for payload in _chunks(http_response):
                    usage = payload.get("usage")
                    if usage:
                        usage_seen = True
                        yield ChatDelta(
                            prompt_tokens=usage.get("prompt_tokens"),
                            completion_tokens=usage.get("completion_tokens"),
                        )
                    choices = payload.get("choices")
                    if choices:
                        choice = choices[0]
                        delta = choice.get("delta") or _NO_DELTA
                        content = delta.get("content")
                        tool_calls = delta.get("tool_calls")
                        finished = choice.get("finish_reason")
                        if finished:
                            finish_reason = finished
                        if content or tool_calls or finished:
                            yield ChatDelta(text=content or "", tool_calls=tool_calls, finish_reason=finished)
            except Exception as error:
                classified = classify_error(error)
                logger.warning(
                    "call=%s chat stream broke (%s): %s", call_id, classified.kind, classified.message
                )
                raise classified from error
        if finish_reason is None and not usage_seen:
            logger.warning("call=%s chat stream ended before the model finished", call_id)
            raise ProviderError(ErrorKind.NETWORK, "the stream ended before the model finished")
        if finish_reason not in (None, "stop"):
            logger.info("call=%s reply ended by %s", call_id, finish_reason)


_NO_DELTA: dict[str, Any] = {}


async def _chunks(response: httpx2.Response) -> AsyncIterator[dict[str, Any]]:
    """The JSON chunks of a chat completion stream, up to ``[DONE]`` or the end of the body.

    Errors come out as the SDK's classes, as its own stream reader raises them: a transport
    error while reading is ``APITimeoutError`` / ``APIConnectionError`` (caused by the
    transport's), a mid-stream ``{"error": ...}`` event is ``APIError``. A body that is not
    an event stream of JSON objects is a ``ProviderError`` (SERVER: the server is broken).
    """
    decoder = SSEDecoder()
    try:
        async for raw in response.aiter_bytes():
            for event in decoder.feed(raw):
                if is_done(event):
                    return
                yield _payload(event, response)
        for event in decoder.finish():
            if is_done(event):
                return
            yield _payload(event, response)
    except httpx2.TimeoutException as error:
        raise openai.APITimeoutError(request=response.request) from error
    except httpx2.RequestError as error:
        raise openai.APIConnectionError(request=response.request) from error
    except SSEError as error:
        raise ProviderError(ErrorKind.SERVER, f"malformed stream from the model server: {error}") from error


def _payload(event: ServerSentEvent, response: httpx2.Response) -> dict[str, Any]:
    payload = json_object(event)
    failure = stream_error(payload)
    if failure is not None:
        raise openai.APIError(failure[0], response.request, body=failure[1])
    return payload
