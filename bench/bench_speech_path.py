"""From the model's first marker to the first audio frame on the socket, per local engine.

    python bench/bench_speech_path.py [--turns 15]

Runs the real call consumer in-process (the ASGI application, channels' communicator as
the socket), the real OpenAI SDK on the HTTP-level fake, and each local speech engine.
For every turn: the moment the fake emitted the token completing the first marker, and
the moment the first ``response.chunk`` frame left the consumer. Also each engine's own
time to first audio and real-time factor on typical chunk lengths.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
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

REPLY = (
    "Thanks for asking, happy to explain. ||BREAK|| Vantum books qualified meetings into your calendar "
    "while your team focuses on closing. ||BREAK|| Would a short demo next week help?"
)
CHUNKS = {
    "5 words": "Thanks for asking, happy to explain.",
    "15 words": "Vantum books qualified meetings into your calendar while your team focuses on closing.",
    "40 words": " ".join(
        ["Vantum books qualified meetings into your calendar while your team focuses on closing."] * 3
    )
    + " That is the short version of it.",
}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def marker_to_audio(engine_name: str, turns: int) -> dict:
    fake = FakeOpenAI()
    marker_end = next(
        i for i, t in enumerate(FakeReply(text=REPLY).token_list()) if t.endswith("|") and "|" in t
    )
    tokens = FakeReply(text=REPLY).token_list()
    # The token that completes the first marker: the first whose prefix contains the whole marker.
    marker_end = next(i for i in range(len(tokens)) if "||BREAK||" in "".join(tokens[: i + 1]))
    speech = build_engine(engine_name)
    if hasattr(speech, "warm_up"):
        speech.warm_up()
    gaps, ttfa = [], []
    with engines.override_engines(
        chat=OpenAIChatProvider(api_key="sk", http_client=fake.http_client()), speech=speech
    ):
        caller = Caller()
        await caller.connect()
        for _ in range(turns):
            fake.script(FakeReply(text=REPLY, first_token_delay=0.2, token_delay=0.02))
            emitted_before = len(fake.emitted)
            await caller.send("voicechat.text.input", {"text": "Tell me about Vantum"})
            first_audio = None
            while True:
                event = await caller.receive(timeout=30)
                if event["eventType"] == "voicechat.response.chunk" and first_audio is None:
                    first_audio = time.monotonic()
                if event["eventType"] == "voicechat.response.complete":
                    break
            marker_at = fake.emitted[emitted_before + marker_end].at
            gaps.append((first_audio - marker_at) * 1000)
            started = time.monotonic()
            async for _block in speech.synthesize(CHUNKS["5 words"], voice_id=speech.resolve_voice(None)):
                ttfa.append((time.monotonic() - started) * 1000)
                break
            await asyncio.sleep(0.3)
        await caller.hang_up()
    return {
        "engine": engine_name,
        "marker_to_first_audio_ms_p50": round(statistics.median(gaps), 1),
        "marker_to_first_audio_ms_p95": round(pct(gaps, 0.95), 1),
        "engine_ttfa_ms_p50": round(statistics.median(ttfa), 1),
        "added_by_server_ms_p50": round(statistics.median(gaps) - statistics.median(ttfa), 1),
    }


async def real_time_factor(engine_name: str) -> dict:
    speech = build_engine(engine_name)
    if hasattr(speech, "warm_up"):
        speech.warm_up()
    voice = speech.resolve_voice(None)
    rate = speech.sample_rate(voice)
    out = {}
    for label, text in CHUNKS.items():
        rtfs = []
        for _ in range(5):
            started = time.perf_counter()
            audio = b"".join([b async for b in speech.synthesize(text, voice_id=voice)])
            rtfs.append((time.perf_counter() - started) / (len(audio) / 2 / rate))
        out[label] = round(statistics.median(rtfs), 4)
    return out


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=15)
    parser.add_argument("--engines", default="piper,espeak,tone")
    args = parser.parse_args()
    await asyncio.to_thread(call_command, "migrate", verbosity=0)
    results = []
    for name in args.engines.split(","):
        row = await marker_to_audio(name, args.turns)
        row["rtf"] = await real_time_factor(name)
        results.append(row)
    print(
        "| engine | marker → first audio p50 / p95 (ms) | engine's own TTFA p50 (ms) "
        "| added by the server p50 (ms) | RTF 5 / 15 / 40 words |"
    )
    print("|---|---|---|---|---|")
    for r in results:
        rtf = " / ".join(f"{v:.3f}" for v in r["rtf"].values())
        print(
            f"| {r['engine']} | {r['marker_to_first_audio_ms_p50']} / {r['marker_to_first_audio_ms_p95']} | "
            f"{r['engine_ttfa_ms_p50']} | {r['added_by_server_ms_p50']} | {rtf} |"
        )
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "speech_path.json").write_text(
        json.dumps({"python": platform.python_version(), "turns": args.turns, "results": results}, indent=2)
    )


if __name__ == "__main__":
    asyncio.run(main())
