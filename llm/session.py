"""One call's conversation: context, FIFO turn queue, failure tiers; and the registry
that expires idle or over-long calls.

State is per call (one ``Conversation`` per call), never shared between calls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from llm.chunking import SemanticChunker
from llm.config import LLMConfig
from llm.context import ContextMessage, ConversationContext
from llm.metrics import LLMServiceMetrics
from llm.prefetch import PrefetchingProvider
from llm.prompts import PROSPECT_MAX_FIELDS, build_system_prompt, clean_prospect_value
from llm.providers import ChatProvider
from llm.tools import DEFAULT_GOODBYE, ToolRegistry
from llm.turn import EndCall, Reply, SpeechSink, speak_fallback, stream_reply

logger = logging.getLogger(__name__)


class QueueFullError(Exception):
    """A turn arrived while ``LLM_MAX_QUEUE_SIZE`` turns were already waiting."""


class Conversation:
    """The LLM side of one call.

    ``respond`` runs one turn at a time; turns that arrive while one runs wait in FIFO
    order (``asyncio.Lock`` wakes waiters first come, first served). Cancelling a waiting
    or running ``respond`` (barge-in) leaves the context coherent: the user's words and
    only what the caller actually heard of the reply (and every tool call of it with its
    result). ``tools`` are offered to the model when ``config.tools_enabled``; a reply that
    should end the call carries ``reply.end_call`` and the call layer ends the call once
    the reply has been spoken.
    """

    def __init__(
        self,
        *,
        call_id: str,
        provider: ChatProvider,
        config: LLMConfig,
        metrics: LLMServiceMetrics,
        chunker_factory: Callable[[], SemanticChunker] = SemanticChunker,
        tools: ToolRegistry | None = None,
    ) -> None:
        self.call_id = call_id
        self.provider = provider
        self.config = config
        self.metrics = metrics
        self.chunker_factory = chunker_factory
        self.tools = tools if tools and config.tools_enabled else None
        self.context = ConversationContext(
            max_messages=config.max_messages, max_context_tokens=config.max_context_tokens
        )
        self.prospect: dict[str, str] = {}
        self.failure_count = 0
        self.created_at = time.monotonic()
        self.last_activity_at = self.created_at
        self._turn_lock = asyncio.Lock()
        self._waiting = 0
        # The newest reply and its context entries: a barge-in may still shorten it.
        self._last_reply: tuple[Reply, list[ContextMessage]] | None = None

    @property
    def busy(self) -> bool:
        return self._turn_lock.locked()

    @property
    def queued_turns(self) -> int:
        return self._waiting

    def update_prospect(self, prospect: Mapping[str, Any]) -> None:
        """Used by the system prompt from the next turn on. The caller sends it: values are
        cleaned and bounded (``clean_prospect_value``), and so is the number of fields."""
        for key, value in prospect.items():
            if value is None or not isinstance(key, str):
                continue
            if key not in self.prospect and len(self.prospect) >= PROSPECT_MAX_FIELDS:
                continue
            self.prospect[clean_prospect_value(key)[:40] or "_"] = clean_prospect_value(value)

    def system_prompt(self) -> str:
        return build_system_prompt(self.config.system_prompt, self.prospect)

    def check_queue(self) -> None:
        """Raise ``QueueFullError`` when a new turn would overflow ``LLM_MAX_QUEUE_SIZE``."""
        limit = self.config.max_queue_size
        if self.busy and limit and self._waiting >= limit:
            raise QueueFullError(
                f"Too many turns waiting: {self._waiting} already queued (LLM_MAX_QUEUE_SIZE={limit})"
            )

    async def respond(
        self,
        user_text: str,
        *,
        sink: SpeechSink,
        reply: Reply | None = None,
        on_start: Callable[[], None] | None = None,
    ) -> Reply:
        """Answer one user turn, speaking the reply into ``sink`` as it streams.

        Raises ``QueueFullError`` at once when the queue is full; nothing is recorded then.
        ``on_start`` runs when the turn leaves the queue and the reply begins.
        """
        self.check_queue()
        reply = reply or Reply()
        self.metrics.total_requests += 1
        self._waiting += 1
        try:
            await self._turn_lock.acquire()
        finally:
            self._waiting -= 1
        try:
            if on_start is not None:
                on_start()
            await self._run_turn(user_text, sink, reply)
        finally:
            self._turn_lock.release()
        return reply

    async def _run_turn(self, user_text: str, sink: SpeechSink, reply: Reply) -> None:
        self.last_activity_at = time.monotonic()
        # The caller may date the turn from when the user's words became final (after STT).
        reply.started_at = reply.started_at or time.monotonic()
        self.context.add_user(user_text, timestamp=time.time())
        messages = self.context.request_messages(self.system_prompt())
        try:
            await stream_reply(
                reply,
                provider=self.provider,
                messages=messages,
                params=self.config.params,
                config=self.config,
                sink=sink,
                call_id=self.call_id,
                chunker=self.chunker_factory(),
                tools=self.tools,
            )
            if reply.tools_refused:
                self.tools = None  # this server has no function calling: stop offering it
            if reply.error is None:
                self.failure_count = 0
                self.metrics.record_success((time.monotonic() - reply.started_at) * 1000.0)
            else:
                self.failure_count += 1
                tier = min(self.failure_count, 3)
                self.metrics.record_failure(kind=reply.error.kind.value, tier=tier)
                log = logger.error if tier == 3 else logger.warning
                log("call=%s tier %d fallback after %s failure", self.call_id, tier, reply.error.kind.value)
                text = self.config.fallback_for_tier(tier)
                if reply.end_call is not None:
                    # The model had already ended the call (end_call ran); its goodbye failed.
                    # "Can you repeat that?" before hanging up would be absurd: say goodbye.
                    text = DEFAULT_GOODBYE
                elif tier == 3 and self.config.tier3_ends_call:
                    reply.end_call = EndCall(by="fallback")
                await speak_fallback(reply, text=text, tier=tier, sink=sink)
        except asyncio.CancelledError:
            reply.interrupted = True
            raise
        finally:
            reply.finished_at = time.monotonic()
            self.last_activity_at = reply.finished_at
            self.add_spoken(reply)

    def prefetch(self, user_text: str) -> bool:
        """Start the model request a turn ``user_text`` would make now, held until that
        turn takes it (``llm.prefetch``). Only while no turn runs or waits (the context
        would change first) and when the provider can hold one. Returns whether it started."""
        if not isinstance(self.provider, PrefetchingProvider) or self.busy or self._waiting:
            return False
        offered: dict[str, Any] = {}
        if self.tools:  # what the first round of ``stream_reply`` offers
            offered = {
                "tools": self.tools.schemas(),
                "tool_choice": "none" if self.config.max_tool_rounds <= 0 else None,
            }
        self.provider.start(
            messages=self.context.request_messages_after(user_text, self.system_prompt()),
            params=self.config.params,
            call_id=self.call_id,
            **offered,
        )
        return True

    def discard_prefetch(self) -> None:
        if isinstance(self.provider, PrefetchingProvider):
            self.provider.discard()

    def add_spoken(self, reply: Reply) -> None:
        """Put what the caller heard of ``reply`` into the context (a model reply, or words
        the call said on its own, such as an outbound call's opener)."""
        self._last_reply = (reply, self.context.add_reply(reply.context_messages(), timestamp=time.time()))

    def revise_reply(self, reply: Reply) -> None:
        """``reply`` was cut after it entered the context (``Reply.keep_heard``): the model
        keeps only what the caller heard of it. A no-op for any other reply."""
        if self._last_reply is None or self._last_reply[0] is not reply:
            return
        entries = self.context.replace_reply(
            self._last_reply[1], reply.context_messages(), timestamp=time.time()
        )
        self._last_reply = (reply, entries)


ExpireCallback = Callable[[str, str], Awaitable[None]]


class SessionRegistry:
    """The calls of this process, for idle / maximum-duration cleanup and metrics.

    ``sweep`` runs every ``LLM_CLEANUP_INTERVAL``; an expired call's callback receives the
    end reason (``idle_timeout`` or ``max_duration``) and ends the call.
    """

    def __init__(self, *, config: LLMConfig, metrics: LLMServiceMetrics) -> None:
        self.config = config
        self.metrics = metrics
        self._sessions: dict[str, tuple[Conversation, ExpireCallback]] = {}
        self._sweeper: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, call_id: str) -> bool:
        return call_id in self._sessions

    def register(self, conversation: Conversation, on_expire: ExpireCallback) -> None:
        self._sessions[conversation.call_id] = (conversation, on_expire)
        self.metrics.session_opened()
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever(), name="llm-sweeper")

    def unregister(self, call_id: str) -> None:
        if self._sessions.pop(call_id, None) is not None:
            self.metrics.session_closed()
        if not self._sessions and self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def expired(self, now: float | None = None) -> list[tuple[str, str]]:
        """(call id, reason) for every call past the idle or maximum-duration limit.

        A call with a turn in progress is never idle.
        """
        now = time.monotonic() if now is None else now
        found = []
        for call_id, (conversation, _) in self._sessions.items():
            idle_for = now - conversation.last_activity_at
            if now - conversation.created_at >= self.config.session_max_duration:
                found.append((call_id, "max_duration"))
            elif not conversation.busy and idle_for >= self.config.session_idle_timeout:
                found.append((call_id, "idle_timeout"))
        return found

    async def sweep(self, now: float | None = None) -> list[tuple[str, str]]:
        found = self.expired(now)
        for call_id, reason in found:
            entry = self._sessions.get(call_id)
            if entry is None:
                continue
            logger.info("call=%s expired: %s", call_id, reason)
            try:
                await entry[1](call_id, reason)
            except Exception:
                logger.exception("call=%s expiry callback failed", call_id)
            self.unregister(call_id)
        return found

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.cleanup_interval)
            await self.sweep()
