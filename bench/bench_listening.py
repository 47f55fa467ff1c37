"""Listening benchmarks (issue 9): recognition accuracy, transcription latency, VAD CPU and
end-of-speech detection, all on speech synthesized in-process (Piper + eSpeak NG).

    .venv/bin/python bench/bench_listening.py [--quick]
    .venv/bin/python bench/bench_listening.py --only callers [--callers 1,10,20,40] [--cpus 0,1]

Prints tables and writes ``bench/results/listening-<time>.json``. Single-threaded figures
(one transcription at a time, ``intra_threads=1``), so they are per core. Record ``uptime``
next to them: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import statistics
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stt.local_whisper import LocalWhisperTranscriber  # noqa: E402
from stt.turn_detection import TurnConfig, TurnDetector, TurnEnded  # noqa: E402
from stt.vad import silero_factory  # noqa: E402
from tests.speech_samples import at_rate, espeak_pcm, noise, piper_pcm, silence  # noqa: E402

SENTENCES = [
    "Hello, I would like to hear about your pricing.",
    "Can you call me back tomorrow afternoon?",
    "We already use a different vendor for that.",
    "Our contract ends in March, so the timing could work.",
    "How long does the setup usually take?",
    "I am not the right person to talk to about this.",
    "Please send me the details by email.",
    "Does it integrate with our customer database?",
    "We have about fifty people on the sales team.",
    "That sounds interesting, tell me more.",
    "What kind of support do you offer?",
    "I need to check with my manager first.",
    "Is there a free trial available?",
    "Sorry, I did not catch that, could you repeat it?",
    "We tried something similar last year and it did not work.",
    "The budget for this quarter is already spent.",
    "Can I get a discount if we sign for two years?",
    "Who else in our industry is using your product?",
    "Let me think about it and get back to you.",
    "Yes, next Tuesday morning works for me.",
    "How secure is the data you store for us?",
    "I would rather not share that information right now.",
    "Thank you for calling, have a nice day.",
    "What happens if we want to cancel later?",
]

NUMBER_WORDS = {"2": "two", "50": "fifty", "3": "three", "1": "one", "10": "ten", "12": "twelve"}


def normalise(text: str) -> list[str]:
    text = text.lower().replace("-", " ")
    text = re.sub(r"[^a-z0-9' ]", " ", text)
    out = []
    for word in text.split():
        out.append(NUMBER_WORDS.get(word, word))
    # Contractions count as the words they stand for (Whisper writes "I'm" for "I am").
    expanded = " ".join(out)
    for short, full in {"i'm": "i am", "didn't": "did not", "don't": "do not", "it's": "it is"}.items():
        expanded = re.sub(rf"\b{short}\b", full, expanded)
    return expanded.split()


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        previous, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (r != h))
    return row[-1]


def transcribe(transcriber: LocalWhisperTranscriber, pcm: bytes, rate: int) -> tuple[str, float, float]:
    """(text, wall seconds, process CPU seconds): CPU time is what a busy machine does not
    inflate, so both are reported."""
    started, cpu = time.perf_counter(), time.process_time()
    text = asyncio.run(transcriber.transcribe(pcm, sample_rate=rate, language="en", call_id="bench"))
    return text, time.perf_counter() - started, time.process_time() - cpu


def bench_wer(transcriber: LocalWhisperTranscriber, sentences: list[str]) -> dict:
    voices = {
        "piper joe": piper_pcm,
        "espeak en-us": lambda s: espeak_pcm(s, "en-us"),
        "espeak en-us+f3": lambda s: espeak_pcm(s, "en-us+f3"),
    }
    result = {}
    for voice, synth in voices.items():
        errors = words = 0
        mistakes = []
        for sentence in sentences:
            pcm, rate = synth(sentence)
            text, _, _ = transcribe(transcriber, pcm, rate)
            ref, hyp = normalise(sentence), normalise(text)
            distance = edit_distance(ref, hyp)
            errors += distance
            words += len(ref)
            if distance:
                mistakes.append({"said": sentence, "heard": text})
        result[voice] = {
            "wer": errors / words,
            "words": words,
            "sentences": len(sentences),
            "mistakes": mistakes,
        }
    return result


def bench_latency(transcriber: LocalWhisperTranscriber, repeats: int) -> dict:
    base = [piper_pcm(s) for s in SENTENCES[:8]]
    rate = base[0][1]
    rows = {}
    for seconds in (1, 2, 4, 8):
        # Whole sentences up to the target length, cut at it.
        pcm = b""
        i = 0
        while len(pcm) < 2 * rate * seconds:
            pcm += base[i % len(base)][0] + silence(150, rate)
            i += 1
        pcm = pcm[: 2 * rate * seconds]
        runs = [transcribe(transcriber, pcm, rate) for _ in range(repeats)]
        rows[seconds] = {
            "wall_ms": statistics.median(r[1] for r in runs) * 1000,
            "cpu_ms": statistics.median(r[2] for r in runs) * 1000,
        }
    return rows


def bench_vad_cpu(seconds: int) -> dict:
    factory = silero_factory()
    speech = b"".join(at_rate(piper_pcm(s), 16000) + silence(300) for s in SENTENCES[:6])
    cases = {
        "silence 16 kHz": (silence(seconds * 1000), 16000),
        "silence 48 kHz": (silence(seconds * 1000, 48000), 48000),
        "speech 16 kHz": ((speech * (seconds * 32000 // len(speech) + 1))[: seconds * 32000], 16000),
    }
    out = {}
    for name, (pcm, rate) in cases.items():
        detector = TurnDetector(vad=factory(), config=TurnConfig())
        chunk = 2 * rate // 50  # 20 ms chunks, as a browser sends
        started = time.process_time()
        for i in range(0, len(pcm), chunk):
            detector.feed(pcm[i : i + chunk], rate)
        cpu = time.process_time() - started
        out[name] = {"cpu_ms_per_call_second": cpu * 1000 / seconds, "percent_of_a_core": cpu / seconds * 100}
    return out


def bench_end_of_speech(count: int, silences: list[int], smart: bool = False) -> dict:
    """Turns made of two phrases with a hesitation between them (100-450 ms, as people pause
    mid-thought), then 3 s of silence, over a quiet room's noise floor. A good setting ends
    each turn once (no cut at the hesitation) and soon after the last word."""
    rng = random.Random(7)
    factory = silero_factory()
    phrases = [s.rstrip(".?!") for s in SENTENCES]
    cases = []
    for n in range(count):
        first, second = rng.sample(phrases, 2)
        pause = rng.choice([100, 200, 300, 350, 400, 450])
        voice = piper_pcm if n % 2 == 0 else espeak_pcm
        a, b = at_rate(voice(first), 16000), at_rate(voice(second.lower()), 16000)
        pcm = silence(500) + a + silence(pause) + b
        truth_end = len(pcm) // 32
        pcm += silence(3000)  # room for Smart Turn's longer wait
        floor = noise(len(pcm) // 32 + 1, level=0.003, seed=n)[: len(pcm)]  # ~ -50 dBFS room noise
        mixed = np.frombuffer(pcm, "<i2").astype(np.int32) + np.frombuffer(floor, "<i2")
        mixed = mixed.clip(-32768, 32767).astype("<i2").tobytes()
        cases.append((mixed, truth_end, pause))
    table = {}
    model = None
    if smart:
        from stt.smart_turn import shared_smart_turn

        model = shared_smart_turn()
    for end_silence in silences:
        config = TurnConfig(end_silence_ms=end_silence, pause_ms=min(128, end_silence))
        cuts = misses = 0
        delays = []
        cut_pauses = []
        held = 0
        for pcm, truth_end, pause in cases:
            detector = TurnDetector(vad=factory(), config=config, end_of_turn=model)
            ended = []
            for i in range(0, len(pcm), 640):
                ended += [e for e in detector.feed(pcm[i : i + 640], 16000) if isinstance(e, TurnEnded)]
            held += detector.smart_holds
            if not ended:
                misses += 1
                continue
            if len(ended) > 1:
                cuts += 1
                cut_pauses.append(pause)
            delays.append(ended[-1].at_ms - truth_end)
        table[end_silence] = {
            "turns": len(cases),
            "false_cuts": cuts,
            "missed_ends": misses,
            "cut_at_pauses_ms": sorted(cut_pauses),
            "end_delay_ms_p50": statistics.median(delays) if delays else None,
            "end_delay_ms_max": max(delays) if delays else None,
            "smart_turn_holds": held,
        }
    return table


# ---------------------------------------------------------------- hands-free callers (issue 11)
BROWSER_RATE = 48000
BROWSER_CHUNK = 4096  # samples per chunk, as the console's audio worklet sends (85 ms at 48 kHz)


def caller_script(seed: int, seconds: float) -> tuple[bytes, list[int]]:
    """One hands-free caller's 48 kHz audio: room noise (-60 dBFS) with a sentence every ~5 s
    (the capacity load model's turn rate: ~2 s of speech, then 3 s ±20 % of silence).
    Returns (pcm, the end of each sentence in ms)."""
    rng = random.Random(seed)
    sentences = [at_rate(piper_pcm(s), BROWSER_RATE) for s in SENTENCES[:8]]
    parts, ends, at = [], [], 0
    while at < seconds * 1000:
        gap = int(3000 * rng.uniform(0.8, 1.2))
        speech = rng.choice(sentences)
        parts += [silence(gap, BROWSER_RATE), speech]
        at += gap + len(speech) * 1000 // (2 * BROWSER_RATE)
        ends.append(at)
    pcm = b"".join(parts) + silence(1500, BROWSER_RATE)
    floor = noise(len(pcm) // 96 + 1, BROWSER_RATE, level=0.001, seed=seed)[: len(pcm)]
    mixed = np.frombuffer(pcm, "<i2").astype(np.int32) + np.frombuffer(floor, "<i2")
    return mixed.clip(-32768, 32767).astype("<i2").tobytes(), ends


def listening_unit_costs(transcriber: LocalWhisperTranscriber, seconds: int) -> dict:
    """Single-threaded CPU of the two listening costs on a caller's real mix: Silero VAD +
    turn detection per second of caller audio (48 kHz browser chunks, soxr resampling to
    16 kHz included), and one Whisper tiny.en transcription per turn."""
    pcm, _ = caller_script(1, seconds)
    detector = TurnDetector(vad=silero_factory()(), config=TurnConfig())
    chunk = 2 * BROWSER_CHUNK
    turns: list[bytes] = []
    started = time.process_time()
    for i in range(0, len(pcm), chunk):
        turns += [
            e.audio for e in detector.feed(pcm[i : i + chunk], BROWSER_RATE) if isinstance(e, TurnEnded)
        ]
    vad_cpu = time.process_time() - started
    audio_seconds = len(pcm) / (2 * BROWSER_RATE)
    whisper_cpu, speech_seconds = [], 0.0
    for audio in turns:
        _, _, cpu = transcribe(transcriber, audio, 16000)
        whisper_cpu.append(cpu)
        speech_seconds += len(audio) / 32000
    return {
        "caller_audio_seconds": round(audio_seconds, 1),
        "turns": len(turns),
        "vad_turn_cpu_ms_per_caller_second": round(1000 * vad_cpu / audio_seconds, 2),
        "whisper_cpu_ms_per_turn_p50": round(1000 * statistics.median(whisper_cpu), 1)
        if whisper_cpu
        else None,
        "whisper_cpu_ms_per_turn_mean": round(1000 * statistics.mean(whisper_cpu), 1)
        if whisper_cpu
        else None,
        "turn_audio_seconds_mean": round(speech_seconds / max(1, len(turns)), 2),
        "whisper_cpu_ms_per_caller_second": round(1000 * sum(whisper_cpu) / audio_seconds, 2),
    }


async def callers_level(transcriber: LocalWhisperTranscriber, callers: int, seconds: float) -> dict:
    """``callers`` hands-free callers at once in this process, each fed in real time in
    browser chunks through the call's real listener (``calls.listening.Listener``: Silero
    VAD, turn detection, speculative transcription) sharing one Whisper pool, as the
    callers of one server process do. Measured per turn: from the caller's last word to the
    transcript in hand, and from the end of turn to it; how late chunks were fed (real time
    kept?); the process's CPU."""
    from calls.listening import Listener

    class Port:
        async def speech_started(self, at_ms: int) -> None: ...
        async def speech_stopped(self, at_ms: int) -> None: ...
        async def transcript_partial(self, text: str) -> None: ...
        async def speech_error(self, *args) -> None: ...

    rows: list[dict] = []
    lateness: list[float] = []

    class Host:
        def __init__(self, n: int, started: float) -> None:
            self.port, self.session_id, self.language = Port(), f"bench-{n}", "en"
            self.started = started
            self.pending: set[asyncio.Task] = set()

        async def caller_confirmed_speech(self, onset_ms: int) -> None: ...

        async def caller_turn_ended(self, turn) -> None:
            ended = time.perf_counter()

            async def finish() -> None:
                try:
                    if turn.transcript is not None:
                        text = await turn.transcript
                    else:
                        text = await transcriber.transcribe(
                            turn.audio, sample_rate=16000, language="en", call_id=self.session_id
                        )
                except Exception as error:  # counted, never hidden
                    text = f"<error {type(error).__name__}>"
                done = time.perf_counter()
                rows.append(
                    {
                        "after_last_word_ms": (done - (self.started + turn.speech_end_ms / 1000)) * 1000,
                        "after_turn_end_ms": (done - ended) * 1000,
                        "reused": turn.reused_speculation,
                        "heard": bool(text.strip()) and not text.startswith("<error"),
                    }
                )

            task = asyncio.get_running_loop().create_task(finish())
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)

    scripts = [caller_script(100 + n, seconds) for n in range(callers)]  # made before timing

    async def caller(n: int) -> tuple[int, float]:
        pcm, ends = scripts[n]
        await asyncio.sleep(n * 5.0 / max(1, callers))  # spread the callers' turns over ~5 s
        started = time.perf_counter()
        host = Host(n, started)
        listener = Listener(host=host, transcriber=transcriber, speculative=True)
        chunk = 2 * BROWSER_CHUNK
        for offset in range(0, len(pcm), chunk):
            due = started + (offset + chunk) / (2 * BROWSER_RATE)  # a chunk leaves once recorded
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            lateness.append(max(0.0, time.perf_counter() - due) * 1000)
            listener.feed(pcm[offset : offset + chunk], BROWSER_RATE)
        await asyncio.sleep(1.0)
        if host.pending:
            await asyncio.wait(host.pending, timeout=30)
        await listener.close()
        return len(ends), len(pcm) / (2 * BROWSER_RATE)

    # How long each transcription ran once it had a pool thread (slow under CPU contention)
    # and how many ran (speculative ones cancelled before they started never run).
    decode_ms: list[float] = []
    original = transcriber._transcribe_blocking

    def timed(*args):
        started = time.perf_counter()
        try:
            return original(*args)
        finally:
            decode_ms.append((time.perf_counter() - started) * 1000)

    transcriber._transcribe_blocking = timed
    import psutil

    def thread_cpu() -> tuple[float, float]:
        """(the event loop's thread, every other thread: the Whisper pool, onnxruntime)."""
        main = threading.get_native_id()
        loop = rest = 0.0
        for thread in psutil.Process().threads():
            if thread.id == main:
                loop += thread.user_time + thread.system_time
            else:
                rest += thread.user_time + thread.system_time
        return loop, rest

    threads_before = thread_cpu()
    cpu, wall = time.process_time(), time.perf_counter()
    try:
        results = await asyncio.gather(*(caller(n) for n in range(callers)))
    finally:
        del transcriber._transcribe_blocking  # back to the class's method
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    threads_after = thread_cpu()
    expected = sum(r[0] for r in results)
    after_word = [r["after_last_word_ms"] for r in rows]
    after_end = [r["after_turn_end_ms"] for r in rows]

    def p(values: list[float], q: float) -> float | None:
        return round(float(np.percentile(values, q)), 1) if values else None

    return {
        "callers": callers,
        "turns_spoken": expected,
        "turns_transcribed": sum(r["heard"] for r in rows),
        "speculative_reused": sum(r["reused"] for r in rows),
        "transcript_after_last_word_ms": {"p50": p(after_word, 50), "p95": p(after_word, 95)},
        "transcript_after_turn_end_ms": {"p50": p(after_end, 50), "p95": p(after_end, 95)},
        "feed_late_ms": {"p95": p(lateness, 95), "max": p(lateness, 100)},
        "transcriptions_run": len(decode_ms),
        "transcription_wall_ms": {"p50": p(decode_ms, 50), "p95": p(decode_ms, 95)},
        "process_cpu_cores": round(cpu / wall, 2),
        "event_loop_thread_cores": round((threads_after[0] - threads_before[0]) / wall, 2),
        "other_threads_cores": round((threads_after[1] - threads_before[1]) / wall, 2),
        "process_cpu_ms_per_caller_second": round(1000 * cpu / sum(r[1] for r in results), 2),
        "load_average": os.getloadavg(),
    }


def run_callers(report: dict, *, levels: list[int], seconds: float, cpus: str, factor: float) -> None:
    """Listening cost per hands-free caller, and how many one process holds on ``cpus``."""
    from bench.django_setup import setup_django

    setup_django()  # the call's listener reads its settings (VAD engine, turn detection)
    if cpus:
        os.sched_setaffinity(0, sorted(int(c) for c in cpus.split(",")))
    if os.geteuid() == 0:
        # On a machine shared with other work: take the cores as a server of its own would
        # (the load average is still recorded per level).
        os.setpriority(os.PRIO_PROCESS, 0, -5)
    cores = len(os.sched_getaffinity(0))
    transcriber = LocalWhisperTranscriber(model="tiny.en", max_concurrent=1, window_seconds=10.0)
    units = listening_unit_costs(transcriber, 60)
    transcriber.close()
    print(
        f"\n== listening cost per hands-free caller (one thread): Silero VAD + turn detection "
        f"{units['vad_turn_cpu_ms_per_caller_second']} ms CPU per second of caller audio; Whisper tiny.en "
        f"{units['whisper_cpu_ms_per_turn_p50']} ms CPU per turn "
        f"(p50, {units['turn_audio_seconds_mean']} s turns)"
        f" = {units['whisper_cpu_ms_per_caller_second']} ms per caller-second at a turn every ~5 s"
    )
    # The server's pool: STT_MAX_CONCURRENT defaults to the cores the process may use.
    transcriber = LocalWhisperTranscriber(model="tiny.en", max_concurrent=cores, window_seconds=10.0)
    print(
        f"\n== hands-free callers at once, one process on {cores} cores (real listener, speculative on, "
        f"Whisper pool of {cores}); holds: every turn transcribed, chunks fed in time, "
        f"p95 ≤ {factor}× one caller's"
    )
    print(
        "| callers | turns | transcribed | after last word p50 / p95 (ms) | after end of turn p50 / p95 (ms)"
        " | transcriptions run | one transcription, wall p50 / p95 (ms) | feed late p95 (ms)"
        " | process CPU (cores) | CPU per caller-second (ms) | event loop / other threads (cores) | load |\n"
        + "|---" * 12
        + "|"
    )
    out, reference, holds = [], None, None
    for callers in levels:
        row = asyncio.run(callers_level(transcriber, callers, seconds))
        p95 = row["transcript_after_last_word_ms"]["p95"]
        reference = reference or p95
        late = row["feed_late_ms"]["p95"] or 0.0
        row["meets_goal"] = bool(
            p95
            and row["turns_transcribed"] >= row["turns_spoken"]
            and late <= 100
            and p95 <= factor * reference
        )
        out.append(row)
        print(
            f"| {callers} | {row['turns_spoken']} | {row['turns_transcribed']} | "
            f"{row['transcript_after_last_word_ms']['p50']} / {p95} | "
            f"{row['transcript_after_turn_end_ms']['p50']} / {row['transcript_after_turn_end_ms']['p95']} | "
            f"{row['transcriptions_run']} | {row['transcription_wall_ms']['p50']} / "
            f"{row['transcription_wall_ms']['p95']} | {late} | {row['process_cpu_cores']} | "
            f"{row['process_cpu_ms_per_caller_second']} | {row['event_loop_thread_cores']} / "
            f"{row['other_threads_cores']} | "
            f"{row['load_average'][0]:.1f} |",
            flush=True,
        )
        if not row["meets_goal"]:
            break
        holds = callers
    transcriber.close()
    print(f"one process holds {holds} hands-free callers on {cores} cores by this rule")
    report["callers"] = {"cores": cores, "unit_costs": units, "levels": out, "holds": holds, "factor": factor}


def print_eos(rows: list[tuple[str, dict]]) -> None:
    print(
        f"{'silence ms':>10} {'false cuts':>10} {'missed':>7} {'end delay p50':>14} {'max':>6} {'held':>5}"
        "  cut at pauses"
    )
    for setting, row in rows:
        print(
            f"{setting:>10} {row['false_cuts']:>10} {row['missed_ends']:>7} {row['end_delay_ms_p50']:>14}"
            f" {row['end_delay_ms_max']:>6} {row['smart_turn_holds']:>5}  {row['cut_at_pauses_ms']}"
        )


def run_stt(report: dict, *, quick: bool, repeats: int) -> None:
    sentences = SENTENCES[:8] if quick else SENTENCES
    engines = {}
    for label, model, window in (
        ("tiny.en, 10 s window (default)", "tiny.en", 10.0),
        ("tiny.en, 30 s window", "tiny.en", 30.0),
        ("base, 10 s window", "base", 10.0),
        ("base, 30 s window", "base", 30.0),
    ):
        started = time.perf_counter()
        transcriber = LocalWhisperTranscriber(model=model, max_concurrent=1, window_seconds=window)
        load_s = time.perf_counter() - started
        print(f"\n== {label}: loaded in {load_s:.2f} s")
        wer = bench_wer(transcriber, sentences)
        for voice, row in wer.items():
            print(f"  WER {voice:>16}: {row['wer'] * 100:5.1f} % ({row['words']} words)")
            for mistake in row["mistakes"]:
                print(f"      said {mistake['said']!r} heard {mistake['heard']!r}")
        latency = bench_latency(transcriber, repeats)
        print(
            "  latency by utterance length, median wall ms (CPU ms): "
            + ", ".join(f"{s} s: {r['wall_ms']:.0f} ({r['cpu_ms']:.0f})" for s, r in latency.items())
        )
        engines[label] = {"load_seconds": load_s, "wer": wer, "latency_ms": latency}
        transcriber.close()
    report["engines"] = engines


def print_speculative(report: dict) -> None:
    """What speculative transcription buys: transcribing from PauseStarted (pause_ms into
    the silence) rather than from TurnEnded, for 2 s and 4 s turns, default settings."""
    config = TurnConfig()
    end_delay = report["end_of_speech"][config.end_silence_ms]["end_delay_ms_p50"]
    pause_delay = end_delay - (config.end_silence_ms - config.pause_ms)
    default = report["engines"]["tiny.en, 10 s window (default)"]["latency_ms"]
    speculative = {}
    print("\n== transcript ready after the caller's last word (default settings), ms")
    for seconds in (2, 4):
        for kind in ("wall_ms", "cpu_ms"):
            stt = default[seconds][kind]
            naive, early = end_delay + stt, max(end_delay, pause_delay + stt)
            speculative[f"{seconds}s {kind}"] = {"after_turn_end": naive, "speculative": early}
            print(
                f"  {seconds} s turn, STT {kind}: after the end of turn {naive:.0f}, speculative {early:.0f}"
            )
    report["transcript_ready_ms"] = speculative


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer repeats and cases (a smoke run)")
    parser.add_argument(
        "--only",
        choices=["eos", "vad", "stt", "callers"],
        action="append",
        help="run only these sections (repeatable); callers is not in the default set",
    )
    parser.add_argument("--callers", default="1,5,10,20,30,40,60,80", help="callers section: levels")
    parser.add_argument(
        "--callers-seconds", type=float, default=30.0, help="callers section: audio per caller"
    )
    parser.add_argument("--cpus", default="0,1", help="callers section: cores this process may use")
    parser.add_argument("--p95-factor", type=float, default=1.5)
    args = parser.parse_args()
    sections = set(args.only or ["eos", "vad", "stt"])
    repeats = 1 if args.quick else 3
    load_before = os.getloadavg()
    report: dict = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "load_before": load_before,
    }
    count = 12 if args.quick else 40
    if "eos" in sections:
        print(f"== end of speech vs TURN_END_SILENCE_MS (Silero, {count} two-phrase turns)")
        eos = bench_end_of_speech(count, [200, 300, 400, 500, 700])
        smart = bench_end_of_speech(count, [300, 400], smart=True)
        report["end_of_speech"], report["end_of_speech_smart_turn"] = eos, smart
        print_eos(list(eos.items()) + [(f"{k}+smart", v) for k, v in smart.items()])
    if "vad" in sections:
        print("\n== VAD + turn detection CPU per call-second (20 ms chunks)")
        vad = bench_vad_cpu(20 if args.quick else 60)
        report["vad_cpu"] = vad
        for name, row in vad.items():
            print(
                f"{name:>16}: {row['cpu_ms_per_call_second']:.2f} ms CPU per s"
                f" = {row['percent_of_a_core']:.2f} % of a core"
            )
    if "stt" in sections:
        run_stt(report, quick=args.quick, repeats=repeats)
    if "callers" in sections:
        levels = [int(c) for c in args.callers.split(",")]
        if args.quick:
            levels, args.callers_seconds = levels[:2], 12.0
        run_callers(
            report, levels=levels, seconds=args.callers_seconds, cpus=args.cpus, factor=args.p95_factor
        )
    if {"eos", "stt"} <= sections:
        print_speculative(report)
    report["load_after"] = os.getloadavg()
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"listening-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nload average before {load_before}, after {report['load_after']}; wrote {path}")


if __name__ == "__main__":
    main()
