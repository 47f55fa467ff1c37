"""Voice to voice (issue 9): the caller's last speech sample -> the agent's first audio frame,
hands-free, with the offline defaults (Silero VAD, Whisper tiny.en, demo responder, Piper).

    .venv/bin/python bench/bench_voice_to_voice.py [--turns 20] [--callers 1,2,3,4,6] [--quick]

In-process ``CallSession``s (no socket: what is measured is the server's work), each fed
like a browser: 48 kHz PCM in 4096-sample chunks, **paced in real time**, the speech made
by Piper on the fly. A chunk leaves when its last sample is "captured", so the measure
includes the browser's chunk buffering. For each turn:

    voice to voice = first response audio frame - (stream start + last speech sample / rate)

broken down into end-of-turn decision (``speech.stopped``), transcription (``transcript.user``)
and model + first speech. Runs:

1. one caller, ``--turns`` turns, with speculative transcription and without;
2. K callers talking at once (each ``--capacity-turns`` turns): K until the p95 doubles;
3. CPU of silent listening: ``--silent-calls`` calls streaming room noise (-60 dBFS).

Prints a Markdown summary and writes ``bench/results/voice-to-voice-<time>.json``. The
machine is shared: ``uptime`` is recorded next to the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "STT_ENGINE", "TTS_ENGINE", "DEEPGRAM_API_KEY"):
    os.environ.pop(name, None)  # the offline defaults, whatever the shell has

from bench.django_setup import setup_django  # noqa: E402

setup_django()

import numpy as np  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

from calls.engines import get_engines  # noqa: E402
from calls.listening import vad_factory  # noqa: E402
from calls.session import CallSession, Request  # noqa: E402
from tests.speech_samples import at_rate, piper_pcm  # noqa: E402

RATE = 48000
CHUNK_SAMPLES = 4096
CHUNK_BYTES = 2 * CHUNK_SAMPLES
CHUNK_SECONDS = CHUNK_SAMPLES / RATE
SENTENCES = [
    "How much does it cost for a small team?",
    "Who is this calling, please?",
    "We already use another vendor for outreach.",
    "Can you send me more information by email?",
    "What kind of results do your customers see?",
    "Our contract ends in March, so the timing could work.",
    "How long does it take to set up?",
    "Does it work with our calendar?",
    "I am not sure we have the budget this year.",
    "Tell me more about how the calls sound.",
    "Who else in our industry uses it?",
    "Could we start with a trial?",
    "What happens if a prospect asks something unusual?",
    "We book most meetings by phone today.",
    "Is there a contract or can we pay monthly?",
    "How do you handle data privacy?",
    "I would need to talk to my manager first.",
    "Can it speak other languages?",
    "What does a typical week look like with it?",
    "That sounds interesting, go on.",
]


class BenchPort:
    """A ``CallPort`` that timestamps what the call says (no playback: never still playing)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, float, Any]] = []
        self.first_audio: dict[str, float] = {}
        self.changed = asyncio.Event()

    def _note(self, kind: str, value: Any = None) -> None:
        self.events.append((kind, time.monotonic(), value))
        self.changed.set()

    async def response_start(self, utterance_id: str) -> None:
        self._note("start", utterance_id)

    async def response_text(self, utterance_id: str, index: int, text: str) -> None:
        pass

    async def response_audio(self, utterance_id: str, pcm: bytes, sample_rate: int) -> None:
        if utterance_id not in self.first_audio:
            self.first_audio[utterance_id] = time.monotonic()
            self._note("audio", utterance_id)

    async def response_complete(self, utterance_id: str, metrics: dict[str, Any]) -> None:
        self._note("complete", utterance_id)

    async def response_stop(self, utterance_id: str) -> None:
        self._note("stop", utterance_id)

    async def transcript_user(self, text: str, message_id: str) -> None:
        self._note("user", text)

    async def request_error(self, request: Request | None, message: str) -> None:
        self._note("error", message)

    async def speech_error(self, error_type: str, message: str, retryable: bool) -> None:
        self._note("error", message)

    async def call_ended(self, reason: str, message: str | None) -> None:
        pass

    async def close(self, code: int) -> None:
        pass

    async def speech_started(self, at_ms: int) -> None:
        self._note("speech_started", at_ms)

    async def speech_stopped(self, at_ms: int) -> None:
        self._note("speech_stopped", at_ms)

    async def transcript_partial(self, text: str) -> None:
        pass

    def played_seconds(self, utterance_id: str) -> float:
        return 0.0

    def may_be_playing(self, utterance_id: str) -> bool:
        return False

    def last(self, kind: str, after: float) -> tuple[float, Any] | None:
        for event_kind, at, value in reversed(self.events):
            if event_kind == kind and at >= after:
                return at, value
        return None

    async def wait_for(self, kind: str, after: float, timeout: float) -> tuple[float, Any] | None:
        deadline = time.monotonic() + timeout
        while (found := self.last(kind, after)) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except TimeoutError:
                return None
        return found


async def stream_realtime(session: CallSession, pcm: bytes) -> float:
    """Send ``pcm`` like a microphone: each chunk when its last sample exists. Returns the
    wall time of the first sample."""
    start = time.monotonic()
    for index, offset in enumerate(range(0, len(pcm), CHUNK_BYTES)):
        due = start + (index + 1) * CHUNK_SECONDS
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        session.audio_chunk(pcm[offset : offset + CHUNK_BYTES])
    return start


def room_noise(seconds: float, seed: int) -> bytes:
    generator = np.random.default_rng(seed)
    samples = generator.normal(0.0, 0.001, int(seconds * RATE))  # -60 dBFS
    return np.clip(samples * 32768.0, -32768, 32767).astype("<i2").tobytes()


async def one_turn(session: CallSession, port: BenchPort, sentence: str) -> dict[str, float] | None:
    lead = room_noise(0.3, seed=len(sentence))
    speech = at_rate(piper_pcm(sentence), RATE)
    tail = room_noise(1.2, seed=len(sentence) + 1)
    begin = time.monotonic()
    start = await stream_realtime(session, lead + speech + tail)
    last_speech = start + (len(lead) + len(speech)) / 2 / RATE
    audio = await port.wait_for("audio", begin, timeout=30)
    complete = await port.wait_for("complete", begin, timeout=60)
    stopped = port.last("speech_stopped", begin)
    user = port.last("user", begin)
    if audio is None or complete is None or stopped is None or user is None:
        return None
    return {
        "voice_to_voice_ms": (audio[0] - last_speech) * 1000,
        "end_of_turn_ms": (stopped[0] - last_speech) * 1000,
        "transcription_ms": (user[0] - stopped[0]) * 1000,
        "model_and_speech_ms": (audio[0] - user[0]) * 1000,
    }


async def new_call() -> tuple[CallSession, BenchPort]:
    port = BenchPort()
    session = CallSession(port=port, transport="bench")
    await session.start()
    await session.update(request=Request("voicechat.session.update"), turn_detection="server")
    await session.audio_start(
        request=Request("voicechat.audio.start"), sample_rate=RATE, voice_id=None, language=None
    )
    return session, port


def summary(turns: list[dict[str, float]]) -> dict[str, float]:
    def pct(key: str, q: float) -> float:
        values = sorted(t[key] for t in turns)
        return round(values[min(len(values) - 1, int(q * len(values)))], 1)

    out: dict[str, float] = {"turns": len(turns)}
    for key in ("voice_to_voice_ms", "end_of_turn_ms", "transcription_ms", "model_and_speech_ms"):
        out[f"{key}_p50"] = round(statistics.median(t[key] for t in turns), 1)
        out[f"{key}_p95"] = pct(key, 0.95)
    return out


async def latency_run(turns: int, speculative: bool, preemptive: bool) -> dict[str, Any]:
    settings.STT_SPECULATIVE = speculative
    settings.VANTUM_LLM = dataclasses.replace(settings.VANTUM_LLM, preemptive_generation=preemptive)
    session, port = await new_call()
    results = []
    for n in range(turns):
        result = await one_turn(session, port, SENTENCES[n % len(SENTENCES)])
        if result is not None:
            results.append(result)
    reused = session.listener.speculations_reused
    counts = getattr(session.conversation.provider, "counts", None)
    await session.hangup()
    return {
        "speculative": speculative,
        "preemptive": preemptive,
        "preemptive_used": counts.used if counts else 0,
        "preemptive_discarded": counts.discarded if counts else 0,
        "failed": turns - len(results),
        "reused": reused,
        **summary(results),
    }


async def capacity_level(callers: int, turns: int) -> dict[str, Any]:
    settings.STT_SPECULATIVE = True

    async def caller(index: int) -> list[dict[str, float]]:
        await asyncio.sleep(random.Random(index).uniform(0, 1.5))  # not all in lock-step
        session, port = await new_call()
        done = []
        for n in range(turns):
            result = await one_turn(session, port, SENTENCES[(index * 7 + n) % len(SENTENCES)])
            if result is not None:
                done.append(result)
        await session.hangup()
        return done

    cpu = time.process_time()
    wall = time.monotonic()
    per_caller = await asyncio.gather(*(caller(i) for i in range(callers)))
    results = [r for rs in per_caller for r in rs]
    cpu_share = (time.process_time() - cpu) / (time.monotonic() - wall)
    return {
        "callers": callers,
        "failed": callers * turns - len(results),
        "cpu_cores": round(cpu_share, 2),
        **summary(results),
    }


async def silent_listening(calls: int, seconds: float) -> dict[str, Any]:
    sessions = [await new_call() for _ in range(calls)]
    noise = room_noise(seconds, seed=3)
    await asyncio.sleep(0.5)
    cpu = time.process_time()
    wall = time.monotonic()
    await asyncio.gather(*(stream_realtime(session, noise) for session, _ in sessions))
    used = time.process_time() - cpu
    elapsed = time.monotonic() - wall
    turns = sum(1 for _, port in sessions for kind, _, _ in port.events if kind == "speech_started")
    for session, _ in sessions:
        await session.hangup()
    return {
        "calls": calls,
        "seconds": round(elapsed, 1),
        "cpu_seconds": round(used, 2),
        "percent_of_a_core_per_call": round(100 * used / elapsed / calls, 2),
        "false_speech_starts": turns,
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--callers", default="1,2,3,4,6")
    parser.add_argument("--capacity-turns", type=int, default=4)
    parser.add_argument("--silent-calls", type=int, default=20)
    parser.add_argument("--silent-seconds", type=float, default=20.0)
    parser.add_argument("--quick", action="store_true", help="a smoke run: few turns, small levels")
    parser.add_argument("--end-silence-ms", type=int, help="TURN_END_SILENCE_MS for this run")
    parser.add_argument("--latency-only", action="store_true", help="skip the capacity and CPU runs")
    args = parser.parse_args()
    if args.end_silence_ms:
        settings.TURN_END_SILENCE_MS = args.end_silence_ms
    if args.quick:
        args.turns, args.callers, args.capacity_turns, args.silent_calls = 4, "1,2", 2, 4
        args.silent_seconds = 5.0
    await asyncio.to_thread(call_command, "migrate", verbosity=0)
    engines = get_engines()  # loads Whisper, Piper's voice on first use
    if hasattr(engines.speech, "warm_up"):
        await asyncio.to_thread(engines.speech.warm_up)
    vad_factory()
    for sentence in SENTENCES:
        piper_pcm(sentence)
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_before": os.getloadavg(),
        "cores": os.cpu_count(),
        "engines": {
            "chat": getattr(engines.chat, "name", "?"),
            "speech": engines.speech.name,
            "stt": engines.transcriber.name,
            "turn_end_silence_ms": settings.TURN_END_SILENCE_MS,
        },
    }
    report["latency"] = [
        await latency_run(args.turns, True, True),
        await latency_run(args.turns, True, False),
        await latency_run(args.turns, False, False),
    ]
    levels = []
    for callers in [] if args.latency_only else [int(c) for c in args.callers.split(",")]:
        levels.append(await capacity_level(callers, args.capacity_turns))
        base = levels[0]["voice_to_voice_ms_p95"]
        if levels[-1]["voice_to_voice_ms_p95"] >= 2 * base and len(levels) > 1:
            break
    report["capacity"] = levels
    if not args.latency_only:
        report["silent"] = await silent_listening(args.silent_calls, args.silent_seconds)
    report["load_after"] = os.getloadavg()
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"voice-to-voice-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(report, indent=2))
    print_markdown(report)
    print(f"\n(written to {path.relative_to(ROOT)})")


def print_markdown(report: dict[str, Any]) -> None:
    print(f"load before {report['load_before']}, after {report['load_after']}, {report['cores']} cores")
    print(
        "\n| speculative STT | preemptive model (used/dropped) | turns | voice→voice p50 | p95 | "
        "end of turn p50 | STT after it p50 | model + first audio p50 | speculations reused |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for run in report["latency"]:
        preemptive = run.get("preemptive", False)
        cells = [
            "on" if run["speculative"] else "off",
            f"on ({run['preemptive_used']}/{run['preemptive_discarded']})" if preemptive else "off",
            str(run["turns"]),
            f"{run['voice_to_voice_ms_p50']:.0f} ms",
            f"{run['voice_to_voice_ms_p95']:.0f} ms",
            f"{run['end_of_turn_ms_p50']:.0f} ms",
            f"{run['transcription_ms_p50']:.0f} ms",
            f"{run['model_and_speech_ms_p50']:.0f} ms",
            str(run["reused"]),
        ]
        print("| " + " | ".join(cells) + " |")
    print("\n| callers talking at once | turns | voice→voice p50 | p95 | STT p95 | process CPU (cores) |")
    print("|---|---|---|---|---|---|")
    for level in report["capacity"]:
        print(
            f"| {level['callers']} | {level['turns']} | {level['voice_to_voice_ms_p50']:.0f} ms "
            f"| {level['voice_to_voice_ms_p95']:.0f} ms | {level['transcription_ms_p95']:.0f} ms "
            f"| {level['cpu_cores']} |"
        )
    silent = report.get("silent")
    if silent is None:
        return
    print(
        f"\nsilent listening: {silent['calls']} calls × {silent['seconds']} s: "
        f"{silent['percent_of_a_core_per_call']} % of a core per call, "
        f"{silent['false_speech_starts']} false speech starts"
    )


if __name__ == "__main__":
    asyncio.run(main())
