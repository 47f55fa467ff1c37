"""What the streaming turn needs from a chat model, and how failures are described.

Only adapter modules (``llm/openai_adapter.py``) import a provider SDK; they translate
the SDK's exceptions into ``ProviderError`` with one of the ``ErrorKind`` classes, so the
turn, the metrics and the tests speak one vocabulary.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from llm.config import ModelParams


class ErrorKind(enum.StrEnum):
    """The spec's ``OpenAIErrorType`` classes."""

    NETWORK = "network"
    AUTH = "auth"
    RATE_LIMIT = "rate_limit"
    TIMEOUT = "timeout"
    INVALID_REQUEST = "invalid"
    SERVER = "server"
    UNKNOWN = "unknown"


RETRYABLE_KINDS = frozenset({ErrorKind.NETWORK, ErrorKind.RATE_LIMIT, ErrorKind.TIMEOUT, ErrorKind.SERVER})


class ProviderError(Exception):
    """A classified model failure (the spec's ``ClassifiedError``)."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status_code = status_code
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE_KINDS

    def __repr__(self) -> str:
        return f"ProviderError({self.kind.value!r}, {self.message!r}, status_code={self.status_code})"


@dataclass(frozen=True, slots=True)
class ChatDelta:
    """One streamed piece: text content, and/or the usage that ends an OpenAI stream.

    ``tool_calls`` is the raw ``choices[0].delta.tool_calls`` list of an OpenAI chunk (pieces
    of function calls, to be joined by ``index``), ``finish_reason`` the choice's finish
    reason on the chunk that carries it (``"stop"``, ``"length"``, ``"tool_calls"``...).
    """

    text: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tool_calls: list[dict[str, Any]] | None = None
    finish_reason: str | None = None


class ChatProvider(Protocol):
    """A streaming chat model.

    ``stream_chat`` returns an async iterator that yields deltas as the model writes
    them. It raises ``ProviderError`` (from the call or from the iteration) for every
    failure; cancelling the consuming task closes the underlying HTTP stream.
    ``tools`` (OpenAI function schemas) and ``tool_choice`` are passed only when the
    conversation offers tools, so a provider without tool support needs neither.
    """

    name: str

    def stream_chat(
        self,
        *,
        messages: Sequence[dict[str, Any]],
        params: ModelParams,
        call_id: str,
        tools: Sequence[dict[str, Any]] | None = None,
        tool_choice: str | None = None,
    ) -> AsyncIterator[ChatDelta]: ...
