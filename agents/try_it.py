"""One message through the real streaming pipeline with a given prompt version."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from django.conf import settings

from agents.models import PromptVersion
from agents.selectors import llm_config_for_version
from llm.metrics import LLMServiceMetrics
from llm.session import Conversation
from llm.turn import Reply, ReplyChunk


class _ChunkCollector:
    """A speech sink for text only: each chunk is handed on the moment it is ready."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.queue: asyncio.Queue[dict | None] = asyncio.Queue()

    async def speak(self, chunk: ReplyChunk) -> None:
        chunk.audio_sent = True
        elapsed = round((time.monotonic() - self.started) * 1000, 1)
        self.queue.put_nowait(
            {"index": chunk.index, "text": chunk.text, "ms": elapsed, "fallback": chunk.is_fallback}
        )


async def try_prompt(*, version: PromptVersion, message: str, prospect: dict[str, str]) -> AsyncIterator[str]:
    """Newline-delimited JSON: one line per chunk as it arrives, then a summary line."""
    from calls.engines import get_engines

    config = llm_config_for_version(base=settings.VANTUM_LLM, version=version)
    conversation = Conversation(
        call_id=f"try-v{version.number}",
        provider=get_engines().chat,
        config=config,
        metrics=LLMServiceMetrics(),
    )
    conversation.update_prospect(prospect)
    reply = Reply(started_at=time.monotonic())
    sink = _ChunkCollector(reply.started_at)

    async def run() -> None:
        try:
            await conversation.respond(message, sink=sink, reply=reply)
        finally:
            sink.queue.put_nowait(None)

    task = asyncio.create_task(run())
    try:
        while (item := await sink.queue.get()) is not None:
            yield json.dumps(item) + "\n"
        await task
        yield (
            json.dumps(
                {
                    "done": True,
                    "firstTokenMs": reply.elapsed_ms(reply.first_token_at),
                    "firstChunkMs": reply.elapsed_ms(reply.first_chunk_at),
                    "totalMs": reply.elapsed_ms(reply.finished_at),
                    "error": reply.error.kind.value if reply.error else None,
                    "fallbackTier": reply.fallback_tier,
                }
            )
            + "\n"
        )
    finally:
        task.cancel()
