"""Phone path cost: μ-law + resampling CPU per second of call, and the calls one core holds.

    .venv/bin/python -m bench.bench_phone

Measures the per-call audio work the Twilio path adds to a browser call: caller audio
μ-law 8 kHz -> PCM 16 kHz (every 20 ms), agent audio PCM 22.05 kHz (Piper) -> μ-law 8 kHz
in 20 ms frames, base64 + JSON for every frame both ways. Pure CPU, no network.
"""

from __future__ import annotations

import base64
import json
import time

import numpy as np

from telephony.audio import PhoneInbound, PhoneOutbound, ulaw_encode
from telephony.twilio_protocol import build_media, parse_message


def main(seconds: float = 60.0) -> None:
    rate_in = 22050
    t = np.arange(int(seconds * 8000)) / 8000
    caller = ulaw_encode((6000 * np.sin(2 * np.pi * 220 * t)).astype("<i2").tobytes())
    agent = (
        (6000 * np.sin(2 * np.pi * 180 * np.arange(int(seconds * rate_in)) / rate_in)).astype("<i2").tobytes()
    )
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
    block = rate_in * 2 // 10  # the engine hands over ~100 ms blocks
    started = time.process_time()
    for i in range(0, len(agent), block):
        for frame in outbound.feed(agent[i : i + block]):
            build_media("MZ0", frame)
    for frame in outbound.flush():
        build_media("MZ0", frame)
    outbound_cpu = time.process_time() - started

    per_call_second = (inbound_cpu + outbound_cpu) / seconds
    print(f"audio simulated: {seconds:.0f} s each way")
    in_ms, out_ms = inbound_cpu / seconds * 1000, outbound_cpu / seconds * 1000
    print(f"caller side (JSON+base64 parse, μ-law decode, 8->16 kHz): {in_ms:.3f} ms CPU per call-second")
    print(f"agent side (22.05->8 kHz, μ-law, 20 ms frames, JSON+base64): {out_ms:.3f} ms CPU per call-second")
    share = per_call_second * 100
    print(f"total: {per_call_second * 1000:.3f} ms CPU per call-second = {share:.2f} % of a core per call")
    print(f"calls one core could convert (audio work only, both sides talking): {1 / per_call_second:.0f}")


if __name__ == "__main__":
    main()
