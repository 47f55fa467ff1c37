"""Preemptive generation: ask the model before the caller's turn is final.

When the caller pauses, the listener transcribes what they said so far (speculative
transcription). If they then stay silent, that transcript becomes their turn, and the model
request the turn is about to make is already known. ``PrefetchingProvider`` starts that
request at once and holds its stream (nothing is spoken, no tool runs: it only reads
tokens); when the turn makes exactly the same request, it gets the held stream, already
some hundreds of milliseconds in. If the caller goes on, or the request differs (the
context changed meanwhile), the held stream is closed and the turn asks the model as usual.

The cost: a discarded start is one model request that nobody hears (its prompt tokens are
billed by a paid API). ``LLM_PREEMPTIVE_GENERATION`` turns it off.

One per call (it holds that call's pending request): never shared between calls.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from llm.config import ModelParams
from llm.providers import ChatDelta, ChatProvider

logger = logging.getLogger(__name__)

_END = object()


@dataclass(slots=True)
class PrefetchCounts:
    started: int = 0
    used: int = 0
    discarded: int = 0


class _Held:
    """A started request: its deltas (or its error) queued as they arrive."""

    def __init__(self, key: tuple[Any, ...], stream: AsyncIterator[ChatDelta]) -> None:
        self.key = key
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._pump(stream))

    async def _pump(self, stream: AsyncIterator[ChatDelta]) -> None:
        try:
            async for delta in stream:
                self.queue.put_nowait(delta)
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # the turn sees the provider's error where it happened
            self.queue.put_nowait(error)
            return
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
        self.queue.put_nowait(_END)

    async def replay(self) -> AsyncIterator[ChatDelta]:
        try:
            while True:
                item = await self.queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.task.cancel()  # the turn stopped reading (barge-in, error): stop the request


def _key(messages: Sequence[dict[str, Any]], params: ModelParams, offered: dict[str, Any]) -> tuple[Any, ...]:
    return (list(messages), params, offered)


class PrefetchingProvider:
    """A ``ChatProvider`` that can start one request ahead of the turn that will make it."""

    def __init__(self, provider: ChatProvider) -> None:
        self.provider = provider
        self.name = provider.name
        self.counts = PrefetchCounts()
        self._held: _Held | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.provider, name)  # the wrapped provider's other attributes

    def start(
        self, *, messages: Sequence[dict[str, Any]], params: ModelParams, call_id: str, **offered: Any
    ) -> None:
        """Start the request a turn would make with these arguments; hold its stream."""
        self.discard()
        stream = self.provider.stream_chat(messages=messages, params=params, call_id=call_id, **offered)
        self._held = _Held(_key(messages, params, offered), stream)
        self.counts.started += 1
        logger.debug("call=%s preemptive request started", call_id)

    def discard(self) -> None:
        """The caller went on (or the turn asked for something else): close the held request."""
        if self._held is not None:
            self._held.task.cancel()
            self._held = None
            self.counts.discarded += 1

    @property
    def holding(self) -> bool:
        return self._held is not None

    def stream_chat(
        self, *, messages: Sequence[dict[str, Any]], params: ModelParams, call_id: str, **offered: Any
    ) -> AsyncIterator[ChatDelta]:
        held, self._held = self._held, None
        if held is not None and held.key == _key(messages, params, offered):
            self.counts.used += 1
            logger.debug("call=%s the turn took the preemptive request", call_id)
            return held.replay()
        if held is not None:
            held.task.cancel()
            self.counts.discarded += 1
        return self.provider.stream_chat(messages=messages, params=params, call_id=call_id, **offered)
