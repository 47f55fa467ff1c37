"""The phone path: μ-law cost, voice-to-voice latency, concurrent phone calls per process.

    .venv/bin/python -m bench.bench_phone [--turns 5] [--calls 1,10,25] [--skip-latency]

1. Conversion cost (pure CPU): caller audio as Twilio sends it (JSON + base64, μ-law
   decode, 8 -> 16 kHz) and agent audio from Piper's 22.05 kHz to μ-law 8 kHz in 20 ms
   ``media`` messages.
2. Voice-to-voice with the offline defaults (demo responder, local Whisper, Piper voice):
   the Twilio simulator (``telephony/testing.py``) speaks a Piper-synthesized question as
   μ-law 8 kHz in real time, then silence, and times the end of the question's audio to
   the first ``media`` frame of the answer. Includes the end-of-turn silence.
   ``--engine-rates``: agent audio from a 24 kHz engine (Cartesia's default output) against
   the same engine asked for 8 kHz (``for_rate(8000)``, what a phone call uses now), per
   second of speech: the conversion alone (soxr + μ-law), and with the Cartesia messages
   decoded (JSON + base64) and Twilio's ``media`` messages built; plus μ-law passthrough
   (``pcm_mulaw``, not built) for comparison. Pin it: ``taskset -c 0,1``.
3. Concurrent phone calls in one process: N simulated calls ask at once (tone voice, fake
   recogniser, demo responder), time to first answer audio and process CPU. The simulator
   runs in the same process, so these figures include Twilio's side too (pessimistic).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TOKEN = "bench-auth-token"
BASE = "https://voice.example.com"


def conversion_cost(seconds: float = 60.0) -> dict[str, float]:
    import numpy as np

    from telephony.audio import PhoneInbound, PhoneOutbound, ulaw_encode
    from telephony.twilio_protocol import build_media, parse_message

    rate_in = 22050
    t = np.arange(int(seconds * 8000)) / 8000
    caller = ulaw_encode((6000 * np.sin(2 * np.pi * 220 * t)).astype("<i2").tobytes())
    n = np.arange(int(seconds * rate_in))
    agent = (6000 * np.sin(2 * np.pi * 180 * n / rate_in)).astype("<i2").tobytes()
    frames_in = [
        json.dumps({"event": "media", "media": {"payload": base64.b64encode(caller[i : i + 160]).decode()}})
        for i in range(0, len(caller), 160)
    ]
    inbound = PhoneInbound(16000)
    started = time.process_time()
    for text in frames_in:
        inbound.feed(parse_message(text).payload)
    inbound_cpu = time.process_time() - started
    outbound = PhoneOutbound(rate_in)
    block = rate_in * 2 // 10  # engines hand over ~100 ms blocks
    started = time.process_time()
    for i in range(0, len(agent), block):
        for frame in outbound.feed(agent[i : i + block]):
            build_media("MZ0", frame)
    for frame in outbound.flush():
        build_media("MZ0", frame)
    outbound_cpu = time.process_time() - started
    return {
        "caller_ms_per_s": inbound_cpu / seconds * 1000,
        "agent_ms_per_s": outbound_cpu / seconds * 1000,
        "total_ms_per_s": (inbound_cpu + outbound_cpu) / seconds * 1000,
    }


def engine_rate_cost(seconds: float = 60.0, repeats: int = 7) -> dict[str, dict[str, float]]:
    """CPU per second of agent speech, best of ``repeats``, for three ways to the phone:
    ``24k`` (24 kHz PCM: resample + encode), ``8k`` (8 kHz PCM: encode only, no resampler)
    and ``ulaw`` (Cartesia's μ-law cut into frames as is; the design not taken)."""
    import numpy as np

    from telephony.audio import PhoneOutbound, ulaw_encode
    from telephony.twilio_protocol import build_media

    def speech(rate: int) -> bytes:
        n = np.arange(int(seconds * rate))
        wave = 6000 * np.sin(2 * np.pi * 180 * n / rate) + 2000 * np.sin(2 * np.pi * 1250 * n / rate)
        return wave.astype("<i2").tobytes()

    def messages(audio: bytes, bytes_per_second: int) -> list[str]:
        block = bytes_per_second // 10  # Cartesia sends ~100 ms chunks
        return [
            json.dumps(
                {"type": "chunk", "data": base64.b64encode(audio[i : i + block]).decode(), "done": False}
            )
            for i in range(0, len(audio), block)
        ]

    def decoded(message: str) -> bytes:
        return base64.b64decode(json.loads(message)["data"])

    def pcm_path(rate: int, wire: list[str], *, full: bool) -> float:
        """``full``: from Cartesia's messages to Twilio's; else the conversion alone."""
        items: list = wire if full else [decoded(m) for m in wire]
        started = time.process_time()
        outbound = PhoneOutbound(rate)
        for item in items:
            frames = outbound.feed(decoded(item) if full else item)
            for frame in frames if full else ():
                build_media("MZ0", frame)
        tail = outbound.flush()
        for frame in tail if full else ():
            build_media("MZ0", frame)
        return time.process_time() - started

    def ulaw_path(wire: list[str], *, full: bool) -> float:
        items: list = wire if full else [decoded(m) for m in wire]
        started = time.process_time()
        pending = bytearray()
        for item in items:
            pending += decoded(item) if full else item
            whole = len(pending) - len(pending) % 160
            frames = [bytes(pending[i : i + 160]) for i in range(0, whole, 160)]
            del pending[:whole]
            for frame in frames if full else ():
                build_media("MZ0", frame)
        return time.process_time() - started

    pcm24, pcm8 = speech(24000), speech(8000)
    wires = {
        "24k": messages(pcm24, 48000),
        "8k": messages(pcm8, 16000),
        "ulaw": messages(ulaw_encode(pcm8), 8000),
    }
    runs = {
        "24k": lambda full: pcm_path(24000, wires["24k"], full=full),
        "8k": lambda full: pcm_path(8000, wires["8k"], full=full),
        "ulaw": lambda full: ulaw_path(wires["ulaw"], full=full),
    }
    result = {}
    for name, run in runs.items():
        conversion = min(run(False) for _ in range(repeats))
        total = min(run(True) for _ in range(repeats))
        result[name] = {
            "conversion_ms_per_s": conversion / seconds * 1000,
            "total_ms_per_s": total / seconds * 1000,
            "cartesia_kb_per_s": sum(len(m) for m in wires[name]) / seconds / 1000,
        }
    return result


def first_frame_after_ms(rate: int) -> int:
    """Engine audio (ms, fed in 10 ms blocks) before ``PhoneOutbound`` gives out the reply's
    first 20 ms frame: the resampler's filter holds audio back; 8 kHz has none."""
    import numpy as np

    from telephony.audio import PhoneOutbound

    n = np.arange(rate)
    pcm = (6000 * np.sin(2 * np.pi * 180 * n / rate)).astype("<i2").tobytes()
    outbound, block = PhoneOutbound(rate), rate * 2 // 100
    for fed, start in enumerate(range(0, len(pcm), block), start=1):
        if outbound.feed(pcm[start : start + block]):
            return fed * 10
    return -1


def print_engine_rate_cost() -> None:
    labels = {
        "24k": "24 kHz PCM (resample + μ-law)",
        "8k": "8 kHz PCM (μ-law only)       ",
        "ulaw": "8 kHz μ-law passthrough      ",
    }
    for name, row in engine_rate_cost().items():
        print(
            f"agent audio from {labels[name]}: "
            f"conversion {row['conversion_ms_per_s']:.3f} ms CPU/s of speech, "
            f"with Cartesia + Twilio messages {row['total_ms_per_s']:.3f} ms; "
            f"Cartesia sends {row['cartesia_kb_per_s']:.1f} kB/s"
        )
    print(
        "first 20 ms phone frame after "
        + ", ".join(f"{first_frame_after_ms(rate)} ms of {rate} Hz audio" for rate in (24000, 22050, 8000))
    )


async def _question_frames(text: str) -> list[bytes]:
    from calls.engines import get_engines
    from telephony.testing import speech_ulaw_frames

    speech = get_engines().speech
    voice = speech.resolve_voice(None)
    pcm = b"".join([block async for block in speech.synthesize(text, voice_id=voice)])
    return speech_ulaw_frames(pcm, speech.sample_rate(voice))


async def _one_call(twilio, call_sid: str, question: list[bytes], turns: int) -> list[float]:
    from telephony.testing import SILENCE_FRAME

    _, stream = await twilio.answer(call_sid=call_sid)
    _, leg = await twilio.open_stream(stream, call_sid=call_sid, speed=1.0)
    await leg.start(stream.parameters)
    await leg.silence(1.0, realtime=True)  # "hello?" comes a moment after the line opens
    latencies = []
    for _ in range(turns):
        with contextlib.suppress(TimeoutError):  # the previous answer has played to its end
            await leg.until_quiet(quiet=1.5, timeout=60, need_media=False)
        if leg.closed_code is not None:
            break
        media_before = len(leg.events("media"))
        await leg.say(question, realtime=True)
        spoke_at = time.monotonic()
        # Silence in real time until the answer's first frame arrives, as a phone line does.
        deadline = spoke_at + 20
        while len(leg.events("media")) == media_before and time.monotonic() < deadline:
            await leg.say([SILENCE_FRAME], realtime=True)
        if len(leg.events("media")) == media_before:
            latencies.append(float("nan"))
            continue
        latencies.append(leg.first_media_after(media_before) - spoke_at)
    await leg.stop()
    await leg.until_closed()
    await leg.hang_up()
    return latencies


async def latency(turns: int) -> list[float]:
    from telephony.testing import TwilioSimulator

    question = await _question_frames("Hi, who is this?")
    twilio = TwilioSimulator(auth_token=TOKEN, public_base=BASE)
    return await _one_call(twilio, "CA" + "1" * 32, question, turns)


async def concurrent(calls: int) -> dict[str, float]:
    from telephony.testing import TwilioSimulator, caller_speech

    twilio = TwilioSimulator(auth_token=TOKEN, public_base=BASE)
    question = caller_speech(1.0)
    cpu, wall = time.process_time(), time.monotonic()
    results = await asyncio.gather(
        *(_one_call(twilio, f"CA{calls:04d}{n:028d}", question, 1) for n in range(calls)),
        return_exceptions=True,
    )
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    errors = sorted({repr(r)[:160] for r in results if not isinstance(r, list)})
    if errors:
        print("  failures:", *errors, sep="\n    ")
    values = [v for r in results if isinstance(r, list) for v in r if v == v]
    failed = sum(1 for r in results if not isinstance(r, list)) + sum(
        1 for r in results if isinstance(r, list) for v in r if v != v
    )
    values.sort()
    return {
        "calls": calls,
        "answered": len(values),
        "failed": failed,
        "p50_s": statistics.median(values) if values else float("nan"),
        "p95_s": values[min(len(values) - 1, round(0.95 * (len(values) - 1)))] if values else float("nan"),
        "cpu_share": cpu / wall,
    }


def _django(tts: str, stt: str) -> None:
    os.environ.update(
        {
            "TWILIO_ACCOUNT_SID": "ACbench",
            "TWILIO_AUTH_TOKEN": TOKEN,
            "TWILIO_PUBLIC_BASE_URL": BASE,
            "TTS_ENGINE": tts,
            "STT_ENGINE": stt,
            "DJANGO_ALLOWED_HOSTS": "testserver,voice.example.com,localhost",
        }
    )
    from bench.django_setup import setup_django

    setup_django()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--calls", default="1,10,25")
    parser.add_argument("--concurrent-only", action="store_true")
    parser.add_argument("--engine-rates", action="store_true", help="only the 24 vs 8 kHz engine cost")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f} on {len(os.sched_getaffinity(0))} usable cores")
    if args.engine_rates:
        print_engine_rate_cost()
        print(f"load average after: {os.getloadavg()[0]:.1f}")
        return
    cost = conversion_cost()
    print(
        f"conversion: caller {cost['caller_ms_per_s']:.3f} + agent {cost['agent_ms_per_s']:.3f} = "
        f"{cost['total_ms_per_s']:.3f} ms CPU per call-second "
        f"({cost['total_ms_per_s'] / 10:.2f} % of a core per call)"
    )
    print_engine_rate_cost()
    if args.concurrent_only:
        os.environ["VAD_ENGINE"] = "energy"  # the callers' "speech" is a square wave
        _django("tone", "fake")
    else:
        _django("piper", "local")
        values = asyncio.run(latency(args.turns))
        print(
            "voice-to-voice (end of question -> first answer frame), offline defaults: "
            + ", ".join(f"{v:.2f}" for v in values)
            + f" s; median {statistics.median(values):.2f} s"
        )
        # The concurrency runs use the tone voice and the fake recogniser: engines are built
        # again from these settings.
        from django.conf import settings

        from calls import engines

        settings.TTS_ENGINE, settings.STT_ENGINE = "tone", "fake"
        settings.VAD_ENGINE = "energy"  # the callers' "speech" is a square wave
        engines._engines = None
    for calls in [int(c) for c in args.calls.split(",") if c]:
        row = asyncio.run(concurrent(calls))
        print(
            f"{row['calls']:>3} concurrent calls: answered {row['answered']}, failed {row['failed']}, "
            f"first answer p50 {row['p50_s']:.2f} s p95 {row['p95_s']:.2f} s, "
            f"process CPU {row['cpu_share'] * 100:.0f} % of a core"
        )
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
