"""What function calling costs the streaming turn, through the real SDK on the HTTP fake.

1. Per token: the whole path (adapter, turn, chunker) on the same 2,000-token text reply,
   with no tools and with the call's three tool schemas offered (tool support must not tax
   the token loop).
2. One tool round: a reply that calls a no-op tool and then speaks a follow-up, against the
   follow-up alone: the added time is our machinery (assembling the call, running it,
   building the second request, a second SDK request), since the fake model answers at once.

Interleaved runs, medians; the machine's load average is printed (other processes share it).

    .venv/bin/python bench/bench_tool_round.py
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_chunker import build_reply
from llm.config import LLMConfig
from llm.fake_openai import FakeOpenAI, FakeReply, FakeToolCall
from llm.metrics import LLMServiceMetrics
from llm.openai_adapter import OpenAIChatProvider
from llm.session import Conversation
from llm.tools import Tool, ToolRegistry
from llm.turn import ReplyChunk

FOLLOW_UP = "You're all set for Tuesday at ten. ||BREAK|| Anything else I can help with?"
ARGUMENTS = {"start": "2030-01-08T10:00", "duration_minutes": 30, "attendee_email": "ana@example.com"}


class NullSink:
    async def speak(self, chunk: ReplyChunk) -> None:
        chunk.audio_sent = True


async def _noop(context, **arguments) -> dict:
    return {"booked": "Tuesday 8 January 2030 at 10:00"}


def _registry() -> ToolRegistry:
    schema = {
        "type": "object",
        "properties": {
            "start": {"type": "string"},
            "duration_minutes": {"type": "integer", "minimum": 15, "maximum": 240},
            "attendee_email": {"type": "string"},
        },
        "required": ["start", "duration_minutes"],
    }
    return ToolRegistry(
        [
            Tool("book_meeting", "Book a meeting.", schema, _noop),
            Tool("schedule_callback", "Schedule a callback.", schema, _noop),
            Tool("end_call", "End the call.", schema, _noop),
        ]
    )


async def _respond(replies: list[FakeReply], tools: ToolRegistry | None) -> float:
    fake = FakeOpenAI(keep_log=False)
    fake.script(*replies)
    provider = OpenAIChatProvider(api_key="k", http_client=fake.http_client())
    conversation = Conversation(
        call_id="bench", provider=provider, config=LLMConfig(), metrics=LLMServiceMetrics(), tools=tools
    )
    started = time.perf_counter()
    reply = await conversation.respond("Tuesday at ten", sink=NullSink())
    elapsed = time.perf_counter() - started
    assert reply.error is None, reply.error
    return elapsed


async def main() -> None:
    tokens = build_reply(2000)
    per_token: dict[str, list[float]] = {"no tools": [], "3 tools offered": []}
    for _ in range(7):
        per_token["no tools"].append(await _respond([FakeReply(tokens=tokens)], None))
        per_token["3 tools offered"].append(await _respond([FakeReply(tokens=tokens)], _registry()))
    print(f"load average {os.getloadavg()[0]:.2f}")
    print("| whole path, 2,000-token text reply (median of 7) | µs per token |")
    print("|---|---|")
    for name, runs in per_token.items():
        print(f"| {name} | {statistics.median(runs) / len(tokens) * 1e6:.1f} |")

    rounds: dict[str, list[float]] = {"follow-up alone": [], "tool call + follow-up": []}
    call = FakeToolCall("book_meeting", ARGUMENTS, piece=4)
    for _ in range(30):
        rounds["follow-up alone"].append(await _respond([FakeReply(text=FOLLOW_UP)], _registry()))
        rounds["tool call + follow-up"].append(
            await _respond([FakeReply(tool_calls=[call]), FakeReply(text=FOLLOW_UP)], _registry())
        )
    medians = {name: statistics.median(runs) * 1000 for name, runs in rounds.items()}
    print(f"load average {os.getloadavg()[0]:.2f}")
    print("| one reply, model answering at once (median of 30) | ms |")
    print("|---|---|")
    for name, value in medians.items():
        print(f"| {name} | {value:.2f} |")
    added = medians["tool call + follow-up"] - medians["follow-up alone"]
    print(f"| **one tool round adds** | **{added:.2f}** |")


if __name__ == "__main__":
    asyncio.run(main())
