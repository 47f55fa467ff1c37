"""Barge-in: the caller types while the agent speaks -> ``response.stop`` on the socket.

    python bench/bench_barge_in.py [--engine piper] [--repeats 10]

In-process (the real consumer, the real SDK on the HTTP-level fake, a real engine): a long
reply is streaming and being synthesized; the caller's ``text.input`` is sent right after
the first audio frame; measured until the ``response.stop`` frame leaves the consumer.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.django_setup import setup_django  # noqa: E402

setup_django()

from django.core.management import call_command  # noqa: E402

from calls import engines  # noqa: E402
from llm.fake_openai import FakeOpenAI, FakeReply  # noqa: E402
from llm.openai_adapter import OpenAIChatProvider  # noqa: E402
from tests.calls_helpers import Caller  # noqa: E402
from tts.registry import build_engine  # noqa: E402

LONG = " ".join(["Here is one more thing worth knowing about how our customers use Vantum. ||BREAK||"] * 12)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", default="piper")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    await asyncio.to_thread(call_command, "migrate", verbosity=0)
    speech = build_engine(args.engine)
    if hasattr(speech, "warm_up"):
        await asyncio.to_thread(speech.warm_up)
    fake = FakeOpenAI(default=FakeReply(text="Okay, sure."), keep_log=False)
    stops = []
    with engines.override_engines(
        chat=OpenAIChatProvider(api_key="k", http_client=fake.http_client()), speech=speech
    ):
        caller = Caller()
        await caller.connect()
        for _ in range(args.repeats):
            fake.script(FakeReply(text=LONG, first_token_delay=0.05, token_delay=0.02))
            await caller.send("voicechat.text.input", {"text": "Tell me everything"})
            while (await caller.receive(timeout=30))["eventType"] != "voicechat.response.chunk":
                pass
            sent = time.monotonic()
            await caller.send("voicechat.text.input", {"text": "Stop, please"})
            while (await caller.receive(timeout=30))["eventType"] != "voicechat.response.stop":
                pass
            stops.append((time.monotonic() - sent) * 1000)
            while (await caller.receive(timeout=30))["eventType"] != "voicechat.response.complete":
                pass
        await caller.hang_up()
    ordered = sorted(stops)
    print(f"| {args.engine} | {statistics.median(stops):.1f} | {ordered[-1]:.1f} | {len(stops)} |")


if __name__ == "__main__":
    asyncio.run(main())
