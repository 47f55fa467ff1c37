"""Microseconds per token: our SemanticChunker against the spec's loop.

    python bench/bench_chunker.py

A long realistic sales reply (markers every 1-3 sentences, some marker-less stretches),
split like GPT streams it (1-4 visible characters with their leading spaces).
"""

from __future__ import annotations

import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.spec_chunker import SpecChunker
from llm.chunking import SemanticChunker
from llm.fake_openai import split_like_gpt

SENTENCES = [
    "Thanks for taking the time to chat with me today.",
    "I noticed your team has grown quite a bit this year, which is exciting.",
    "Many sales leaders tell us their reps spend hours on manual prospecting.",
    "Vantum books qualified meetings straight into your calendar, e.g. with Dr. Lee's team at 3.50 p.m.",
    "Would it help if I walked you through how that works for a team of your size?",
    "Pricing starts at $1,200 a year, and most customers see it pay off within a quarter!",
    "Does that sound like something worth fifteen minutes next week?",
]


def build_reply(tokens_wanted: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    parts: list[str] = []
    while True:
        group = rng.randint(1, 3)
        parts.extend(rng.choice(SENTENCES) for _ in range(group))
        parts.append("||BREAK||" if rng.random() > 0.15 else "")
        tokens = split_like_gpt(" ".join(parts))
        if len(tokens) >= tokens_wanted:
            return tokens[:tokens_wanted]


def per_token_us(make, tokens: list[str], repeats: int = 7) -> float:
    runs = []
    for _ in range(repeats):
        chunker = make()
        started = time.perf_counter_ns()
        for token in tokens:
            chunker.feed(token)
        chunker.flush()
        runs.append((time.perf_counter_ns() - started) / 1000 / len(tokens))
    return statistics.median(runs)


def main() -> dict:
    tokens = build_reply(5000)
    ours = per_token_us(SemanticChunker, tokens)
    spec = per_token_us(SpecChunker, tokens)
    result = {
        "benchmark": "chunker",
        "tokens": len(tokens),
        "ours_us_per_token": round(ours, 3),
        "spec_us_per_token": round(spec, 3),
        "python": platform.python_version(),
        "machine": f"{platform.machine()} x{__import__('os').cpu_count()}",
    }
    print("| chunker | µs per token (median of 7) |")
    print("|---|---|")
    print(f"| SemanticChunker (ours) | {ours:.2f} |")
    print(f"| spec's loop (baseline, buggy) | {spec:.2f} |")
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "chunker.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
