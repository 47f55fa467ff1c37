"""The streaming turn: model tokens -> semantic chunks -> speech, progressively.

Two tasks per reply: a *reader* pulls tokens from the model and feeds the chunker, and a
*speaker* hands finished chunks to the speech sink one at a time. Speaking chunk N never
stops the reading of tokens for chunk N+1, yet chunks reach speech strictly in order.

The caller owns a ``Reply`` and passes it in, so when the turn is cancelled (barge-in,
hang-up) the caller still knows exactly which chunks reached the caller.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from llm.chunking import SemanticChunker
from llm.config import LLMConfig, ModelParams
from llm.providers import ChatProvider, ErrorKind, ProviderError

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class ReplyChunk:
    """One semantic chunk. The speech sink sets ``audio_sent`` once the caller got audio
    of it and ``failed`` when synthesis failed (the text was then shown but not heard)."""

    index: int
    text: str
    is_fallback: bool = False
    audio_sent: bool = False
    failed: bool = False
    is_hold: bool = False  # the "one moment" said while the first token was late


@dataclass(slots=True)
class Reply:
    """Everything one assistant turn produced. Times are ``time.monotonic()`` seconds."""

    started_at: float = 0.0
    raw_parts: list[str] = field(default_factory=list)
    chunks: list[ReplyChunk] = field(default_factory=list)
    error: ProviderError | None = None
    fallback_tier: int | None = None
    retries: int = 0
    interrupted: bool = False
    first_token_at: float | None = None
    first_chunk_at: float | None = None
    stream_ended_at: float | None = None
    finished_at: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    @property
    def raw_text(self) -> str:
        return "".join(self.raw_parts)

    @property
    def said_text(self) -> str:
        """What the caller heard: the chunks whose audio went out, in order."""
        return " ".join(c.text for c in self.chunks if c.audio_sent)

    def elapsed_ms(self, moment: float | None) -> float | None:
        return None if moment is None else round((moment - self.started_at) * 1000.0, 3)


class SpeechSink(Protocol):
    async def speak(self, chunk: ReplyChunk) -> None:
        """Synthesize and send one chunk; set ``chunk.audio_sent`` / ``chunk.failed``.

        Must not raise for a synthesis failure (mark ``failed`` and return); may be
        cancelled mid-chunk.
        """


ChunkerFactory = Callable[[], SemanticChunker]

_END = object()


async def stream_reply(
    reply: Reply,
    *,
    provider: ChatProvider,
    messages: Sequence[dict[str, str]],
    params: ModelParams,
    config: LLMConfig,
    sink: SpeechSink,
    call_id: str,
    chunker: SemanticChunker | None = None,
) -> None:
    """Stream one model reply into ``sink``. Failures land in ``reply.error``, not raised.

    Retries (``config.max_retries``) happen only before the first token: once speech has
    begun, a failure keeps what was said and the caller speaks a fallback.
    """
    chunker = chunker or SemanticChunker()
    reply.started_at = reply.started_at or time.monotonic()
    queue: asyncio.Queue[object] = asyncio.Queue()
    speaker = asyncio.create_task(_speak_in_order(queue, sink), name=f"speaker-{call_id}")
    try:
        await _read_with_retries(_Reading(reply, provider, messages, params, config, chunker, queue, call_id))
        reply.stream_ended_at = time.monotonic()
        if reply.error is None:
            _enqueue(reply, queue, chunker.flush())
            if all(chunk.is_hold for chunk in reply.chunks):
                reply.error = ProviderError(ErrorKind.UNKNOWN, "the model returned an empty completion")
        queue.put_nowait(_END)
        await speaker
    finally:
        if not speaker.done():
            speaker.cancel()
            await asyncio.gather(speaker, return_exceptions=True)
    reply.finished_at = time.monotonic()


async def speak_fallback(reply: Reply, *, text: str, tier: int, sink: SpeechSink) -> None:
    """Append the tier's fallback text to the reply and speak it after what was said."""
    reply.fallback_tier = tier
    chunk = ReplyChunk(index=len(reply.chunks), text=text, is_fallback=True)
    reply.chunks.append(chunk)
    await sink.speak(chunk)


async def _speak_in_order(queue: asyncio.Queue[object], sink: SpeechSink) -> None:
    while (chunk := await queue.get()) is not _END:
        await sink.speak(chunk)  # type: ignore[arg-type]


def _enqueue(reply: Reply, queue: asyncio.Queue[object], texts: list[str]) -> None:
    for text in texts:
        chunk = ReplyChunk(index=len(reply.chunks), text=text)
        reply.chunks.append(chunk)
        if reply.first_chunk_at is None:
            reply.first_chunk_at = time.monotonic()
        queue.put_nowait(chunk)


@dataclass(slots=True)
class _Reading:
    """What one reply's reader needs; one per reply, never shared."""

    reply: Reply
    provider: ChatProvider
    messages: Sequence[dict[str, str]]
    params: ModelParams
    config: LLMConfig
    chunker: SemanticChunker
    queue: asyncio.Queue[object]
    call_id: str


def _schedule_hold_message(reading: _Reading) -> asyncio.TimerHandle | None:
    """Once per reply: if no token has come ``hold_message_after`` seconds into reading
    (a slow model, a retry's wait), the caller hears ``hold_message`` rather than silence.
    It is a chunk of the reply like any other (spoken in order, stored), never a token."""
    config, reply = reading.config, reading.reply
    if not config.hold_message or config.hold_message_after <= 0:
        return None

    def say_hold() -> None:
        if reply.first_token_at is None and not reply.chunks:
            chunk = ReplyChunk(index=0, text=config.hold_message, is_hold=True)
            reply.chunks.append(chunk)
            reading.queue.put_nowait(chunk)
            logger.info("call=%s first token late: holding", reading.call_id)

    return asyncio.get_running_loop().call_later(config.hold_message_after, say_hold)


async def _read_with_retries(reading: _Reading) -> None:
    hold = _schedule_hold_message(reading)
    try:
        await _read_attempts(reading)
    finally:
        if hold is not None:
            hold.cancel()


async def _read_attempts(reading: _Reading) -> None:
    reply, config = reading.reply, reading.config
    attempt = 0
    while True:
        try:
            await _read_stream(reading)
            return
        except ProviderError as error:
            retry = reply.first_token_at is None and error.retryable and attempt < config.max_retries
            logger.warning(
                "call=%s model failure kind=%s status=%s retry=%s: %s",
                reading.call_id,
                error.kind.value,
                error.status_code,
                retry,
                error.message,
            )
            if not retry:
                reply.error = error
                return
            delays = config.retry_delays or (0.0,)
            delay = delays[min(attempt, len(delays) - 1)]
            if error.retry_after is not None:
                # Honour the server, but a caller on the line waits a few seconds at most.
                delay = min(max(delay, error.retry_after), max(delay, config.retry_after_max))
            attempt += 1
            reply.retries = attempt
            await asyncio.sleep(delay)


async def _read_stream(reading: _Reading) -> None:
    """One attempt. Enforces the first-token, stall and whole-stream timeouts."""
    reply, config, chunker, queue = reading.reply, reading.config, reading.chunker, reading.queue
    loop = asyncio.get_running_loop()
    attempt_start = loop.time()
    stream_deadline = attempt_start + config.streaming_timeout
    stream = reading.provider.stream_chat(
        messages=reading.messages, params=reading.params, call_id=reading.call_id
    )
    waiting_for = "first token"
    try:
        async with asyncio.timeout_at(
            min(attempt_start + config.request_timeout, stream_deadline)
        ) as deadline:
            async for delta in stream:
                if delta.prompt_tokens is not None:
                    reply.prompt_tokens = delta.prompt_tokens
                    reply.completion_tokens = delta.completion_tokens
                if not delta.text:
                    continue
                if reply.first_token_at is None:
                    reply.first_token_at = time.monotonic()
                    waiting_for = "next token"
                reply.raw_parts.append(delta.text)
                finished = chunker.feed(delta.text)
                if finished:
                    _enqueue(reply, queue, finished)
                deadline.reschedule(min(loop.time() + config.stall_timeout, stream_deadline))
    except TimeoutError:
        now = loop.time()
        if now >= stream_deadline - 0.001:
            message = f"the stream took longer than {config.streaming_timeout:g}s"
        elif waiting_for == "first token":
            message = f"no first token within {config.request_timeout:g}s"
        else:
            message = f"the stream stalled: no token for {config.stall_timeout:g}s"
        raise ProviderError(ErrorKind.TIMEOUT, message) from None
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
