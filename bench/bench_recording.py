"""Recording cost: feeding frames on the call's event loop, and rendering the stereo WAV at
hang-up (in a worker thread). ``python bench/bench_recording.py --minutes 10``"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from calls.recording import CallRecording  # no Django needed for feeding and rendering


def one_call(minutes: float) -> tuple[float, float, int]:
    """A call of ``minutes``: caller frames of 100 ms at 16 kHz in real time, the agent
    talking half the time in 100 ms frames at 22.05 kHz. Returns (feed µs per frame,
    render seconds, WAV bytes)."""
    now = [0.0]
    recording = CallRecording(session_id=uuid.uuid4(), rate=16000, clock=lambda: now[0])
    rng = np.random.default_rng(1)
    caller = (rng.standard_normal(1600) * 3000).astype("<i2").tobytes()
    agent = (rng.standard_normal(2205) * 3000).astype("<i2").tobytes()
    frames = int(minutes * 600)
    fed = 0
    started = time.perf_counter()
    for n in range(frames):
        now[0] += 0.1
        recording.add_caller(caller, 16000)
        fed += 1
        if (n // 50) % 2:  # the agent speaks in 5-second turns
            recording.add_agent(agent, 22050)
            fed += 1
    feed = (time.perf_counter() - started) / fed * 1e6
    started = time.perf_counter()
    data, _ = recording.render()
    return feed, time.perf_counter() - started, len(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    runs = [one_call(args.minutes) for _ in range(args.repeat)]
    load = os.getloadavg()[0]
    print(
        f"{args.minutes:g}-minute call, {args.repeat} runs (load {load:.1f}): "
        f"feed {statistics.median(r[0] for r in runs):.1f} µs/frame, "
        f"render {statistics.median(r[1] for r in runs) * 1000:.0f} ms (median), "
        f"WAV {runs[0][2] / 1e6:.1f} MB"
    )


if __name__ == "__main__":
    main()
