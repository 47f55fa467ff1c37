"""A synthetic engine: a quiet tone as long as the text would take to say. NOT speech.

For tests and capacity benchmarks, where a real engine's CPU would be the bottleneck.
"""

from __future__ import annotations

import array
import asyncio
import math
from collections.abc import AsyncIterator

from tts.base import Voice

SAMPLE_RATE = 16000
MS_PER_CHARACTER = 60  # ~ speaking pace: 15 characters a second
BLOCK_MS = 200


def _tone_block(ms: int) -> bytes:
    count = SAMPLE_RATE * ms // 1000
    return array.array(
        "h", (int(1500 * math.sin(2 * math.pi * 440 * n / SAMPLE_RATE)) for n in range(count))
    ).tobytes()


_BLOCK = _tone_block(BLOCK_MS)


class ToneEngine:
    name = "tone"

    def __init__(self, *, ms_per_character: int = MS_PER_CHARACTER) -> None:
        self.ms_per_character = ms_per_character

    def voices(self) -> list[Voice]:
        return [Voice("tone", "Test tone (not speech)")]

    def resolve_voice(self, voice_id: str | None) -> str:
        return "tone"

    def sample_rate(self, voice_id: str) -> int:
        return SAMPLE_RATE

    async def synthesize(self, text: str, *, voice_id: str) -> AsyncIterator[bytes]:
        remaining = len(text) * self.ms_per_character * SAMPLE_RATE // 1000 * 2
        while remaining > 0:
            block = _BLOCK[: min(remaining, len(_BLOCK))]
            remaining -= len(block)
            yield block
            await asyncio.sleep(0)  # let other calls run between blocks
