"""The streaming turn: model tokens -> semantic chunks -> speech, progressively.

Two tasks per reply: a *reader* pulls tokens from the model and feeds the chunker, and a
*speaker* hands finished chunks to the speech sink one at a time. Speaking chunk N never
stops the reading of tokens for chunk N+1, yet chunks reach speech strictly in order.

The caller owns a ``Reply`` and passes it in, so when the turn is cancelled (barge-in,
hang-up) the caller still knows exactly which chunks reached the caller.

Tools (``llm.tools``): when the model calls tools, its text before the call is flushed to
speech at once (the caller hears "let me book that" while the tool runs), the tools run,
and a follow-up request carries the assistant's ``tool_calls`` and the ``tool`` results.
The follow-up's text goes through the same chunker, queue and sink: one reply, one
utterance. Rounds are bounded by ``LLMConfig.max_tool_rounds``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from llm.chunking import SemanticChunker
from llm.config import LLMConfig, ModelParams
from llm.providers import ChatProvider, ErrorKind, ProviderError
from llm.tools import DEFAULT_GOODBYE, ToolCall, ToolCallAssembler, ToolContext, ToolRegistry

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class ReplyChunk:
    """One semantic chunk. The speech sink sets ``audio_sent`` once the caller got audio
    of it and ``failed`` when synthesis failed (the text was then shown but not heard).
    ``unheard`` marks audio that was sent but dropped before it played (a barge-in cut the
    reply while the caller's side still buffered it)."""

    index: int
    text: str
    is_fallback: bool = False
    audio_sent: bool = False
    failed: bool = False
    is_hold: bool = False  # the "one moment" said while the first token was late
    unheard: bool = False

    @property
    def heard(self) -> bool:
        return self.audio_sent and not self.unheard


@dataclass(slots=True)
class ToolRound:
    """One round of tool calls: the calls, and ``end_chunk``, how many of the reply's chunks
    had been written when the model called them (the text that came with the calls)."""

    end_chunk: int
    calls: list[ToolCall]


AGENT_ENDED = "agent_ended"


@dataclass(frozen=True, slots=True)
class EndCall:
    """The reply asks for the call to end once it has been spoken.

    ``by`` is ``"tool"`` (the model called ``end_call``; the tool stored the outcome) or
    ``"fallback"`` (the tier 3 graceful exit).
    """

    by: str
    reason: str = AGENT_ENDED


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
    tool_rounds: list[ToolRound] = field(default_factory=list)
    end_call: EndCall | None = None
    tools_refused: bool = False  # the server rejected the request with tools (see _Rounds)

    @property
    def tool_calls(self) -> list[ToolCall]:
        return [call for tool_round in self.tool_rounds for call in tool_round.calls]

    def context_messages(self) -> list[dict[str, Any]]:
        """The reply as chat messages for the next turns' context.

        Each tool round becomes an assistant message with its ``tool_calls`` (its content:
        what the caller heard of the text that came with them) and one ``tool`` message per
        call; then what the caller heard after the last round. Every call has its result,
        so the history stays a valid request even after a barge-in.
        """
        messages: list[dict[str, Any]] = []
        start = 0
        for tool_round in self.tool_rounds:
            said = _said(self.chunks[start : tool_round.end_chunk])
            calls = [call.request_entry() for call in tool_round.calls]
            messages.append({"role": "assistant", "content": said or None, "tool_calls": calls})
            messages.extend(call.result_message() for call in tool_round.calls)
            start = tool_round.end_chunk
        said = _said(self.chunks[start:])
        if said:
            messages.append({"role": "assistant", "content": said})
        return messages

    @property
    def raw_text(self) -> str:
        return "".join(self.raw_parts)

    @property
    def said_text(self) -> str:
        """What the caller heard: the chunks whose audio went out and was not cut before it
        played, in order."""
        return _said(self.chunks)

    def keep_heard(self, heard: set[int]) -> None:
        """A barge-in cut this reply: of the chunks whose audio went out, only those in
        ``heard`` (indexes) reached the caller's ear; the rest was dropped unplayed."""
        for chunk in self.chunks:
            if chunk.audio_sent and chunk.index not in heard:
                chunk.unheard = True

    def elapsed_ms(self, moment: float | None) -> float | None:
        return None if moment is None else round((moment - self.started_at) * 1000.0, 3)


def _said(chunks: Sequence[ReplyChunk]) -> str:
    return " ".join(c.text for c in chunks if c.heard)


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
    tools: ToolRegistry | None = None,
) -> None:
    """Stream one model reply into ``sink``. Failures land in ``reply.error``, not raised.

    Retries (``config.max_retries``) happen only before the first token: once speech has
    begun, a failure keeps what was said and the caller speaks a fallback.

    With ``tools``, their schemas go with the request and tool calls run between rounds
    (see the module docstring). Cancelled while a tool runs (barge-in, hang-up), speech
    stops at once, then the tool is let finish (bounded by its timeout) so that
    ``reply.tool_rounds`` says what really happened (a booking is not half made).
    """
    chunker = chunker or SemanticChunker()
    reply.started_at = reply.started_at or time.monotonic()
    queue: asyncio.Queue[object] = asyncio.Queue()
    speaker = asyncio.create_task(_speak_in_order(queue, sink), name=f"speaker-{call_id}")
    running: list[asyncio.Task[None]] = []  # the tool run in progress, if any
    try:
        rounds = _Rounds(reply, provider, messages, params, config, chunker, queue, call_id, tools, running)
        await rounds.run()
        reply.stream_ended_at = time.monotonic()
        if reply.error is None:
            # The model ended the call without a word of goodbye: say one.
            if rounds.goodbye_from >= 0 and not _has_words(reply.chunks[rounds.goodbye_from :]):
                _enqueue(reply, queue, [DEFAULT_GOODBYE])
            if all(chunk.is_hold for chunk in reply.chunks):
                reply.error = ProviderError(ErrorKind.UNKNOWN, "the model returned an empty completion")
        queue.put_nowait(_END)
        await speaker
    finally:
        if not speaker.done():
            speaker.cancel()
            await asyncio.gather(speaker, return_exceptions=True)
        if running and not running[0].done():
            await asyncio.wait(running)
        # Cut while a tool ran (barge-in): an end_call that went through has stored its
        # outcome and the model was told the call ends, so the call layer must end it.
        last_round = reply.tool_rounds[-1].calls if reply.tool_rounds else []
        if reply.end_call is None and any(c.result and c.result.ends_call for c in last_round):
            reply.end_call = EndCall(by="tool")
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
class _Rounds:
    """The model rounds of one reply: a request, then while the model calls tools, run them
    and ask again with their results (at most ``config.max_tool_rounds`` times)."""

    reply: Reply
    provider: ChatProvider
    messages: Sequence[dict[str, Any]]
    params: ModelParams
    config: LLMConfig
    chunker: SemanticChunker
    queue: asyncio.Queue[object]
    call_id: str
    tools: ToolRegistry | None
    running: list[asyncio.Task[None]]
    goodbye_from: int = -1  # chunks written when end_call ran (-1: not asked to end)

    async def run(self) -> None:
        reply, config = self.reply, self.config
        history = list(self.messages)
        offered = self.tools if self.tools else None
        for number in itertools.count():
            last = number >= config.max_tool_rounds or reply.end_call is not None
            reading = _Reading(
                reply, self.provider, history, self.params, config, self.chunker, self.queue, self.call_id
            )
            if offered is not None:
                reading.tools = offered.schemas()
                reading.tool_choice = "none" if last else None
            round_start = len(reply.chunks)
            used = (reply.prompt_tokens, reply.completion_tokens)
            if number:
                reply.prompt_tokens = reply.completion_tokens = None
            await _read_with_retries(reading)
            if number:  # the usage of every round counts
                reply.prompt_tokens = _add(used[0], reply.prompt_tokens)
                reply.completion_tokens = _add(used[1], reply.completion_tokens)
            if reply.error is not None:
                if number == 0 and reading.tools and self._tools_refused(round_start):
                    offered = None
                    continue
                return
            # Flushed now, not at the end: the caller hears "let me check" while the tool runs.
            _enqueue(reply, self.queue, self.chunker.flush())
            calls = reading.tool_calls.calls(id_prefix=f"call_{number}")
            if not calls:
                return
            if offered is None or last:
                names = ", ".join(call.name for call in calls)
                logger.warning(
                    "call=%s tool calls ignored (round %d: tools not offered or no more rounds): %s",
                    self.call_id,
                    number,
                    names,
                )
                return
            tool_round = ToolRound(end_chunk=len(reply.chunks), calls=calls)
            reply.tool_rounds.append(tool_round)
            task = asyncio.create_task(_run_tool_calls(calls, offered, ToolContext(call_id=self.call_id)))
            self.running[:] = [task]
            await asyncio.shield(task)
            self.running.clear()
            if reply.end_call is None and any(call.result and call.result.ends_call for call in calls):
                reply.end_call = EndCall(by="tool")
                if _has_words(reply.chunks[round_start:]):
                    return  # the goodbye came with the end_call: nothing more to say
                self.goodbye_from = len(reply.chunks)
            said = " ".join(c.text for c in reply.chunks[round_start:] if not c.is_hold)
            entries = [call.request_entry() for call in calls]
            history.append({"role": "assistant", "content": said or None, "tool_calls": entries})
            history.extend(call.result_message() for call in calls)

    def _tools_refused(self, round_start: int) -> bool:
        """A self-hosted server without function calling answers a request with ``tools``
        with a 400: the reply is asked again without them (and ``reply.tools_refused`` tells
        the conversation to stop offering them), rather than every turn failing."""
        reply = self.reply
        if reply.error is None or reply.error.kind is not ErrorKind.INVALID_REQUEST:
            return False
        if _has_words(reply.chunks[round_start:]):
            return False
        logger.warning(
            "call=%s the model server refused the request with tools (%s); answering without tools",
            self.call_id,
            reply.error.message,
        )
        reply.error = None
        reply.tools_refused = True
        return True


def _has_words(chunks: Sequence[ReplyChunk]) -> bool:
    """Whether the model said something in these chunks (a hold message is not the model's)."""
    return any(not chunk.is_hold for chunk in chunks)


def _add(a: int | None, b: int | None) -> int | None:
    return b if a is None else a + (b or 0)


async def _run_tool_calls(calls: list[ToolCall], tools: ToolRegistry, context: ToolContext) -> None:
    # One after another, in the model's order: a second booking sees the first.
    for call in calls:
        call.result = await tools.run(name=call.name, arguments=call.arguments, context=context)
        logger.info("call=%s tool %s ok=%s", context.call_id, call.name, call.result.ok)


@dataclass(slots=True)
class _Reading:
    """What one reply's reader needs; one per reply, never shared."""

    reply: Reply
    provider: ChatProvider
    messages: Sequence[dict[str, Any]]
    params: ModelParams
    config: LLMConfig
    chunker: SemanticChunker
    queue: asyncio.Queue[object]
    call_id: str
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | None = None
    tool_calls: ToolCallAssembler = field(default_factory=ToolCallAssembler)


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
    offered: dict[str, Any] = {}
    if reading.tools:
        offered = {"tools": reading.tools, "tool_choice": reading.tool_choice}
    reading.tool_calls.reset()  # a retried attempt starts its tool calls over
    stream = reading.provider.stream_chat(
        messages=reading.messages, params=reading.params, call_id=reading.call_id, **offered
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
                if delta.tool_calls:
                    reading.tool_calls.feed(delta.tool_calls)
                    waiting_for = "next token"
                    deadline.reschedule(min(loop.time() + config.stall_timeout, stream_deadline))
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
