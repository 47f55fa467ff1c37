"""A reply's speech through the synthesis pool: paced to the caller, frames that grow."""

from __future__ import annotations

import time

from calls.speech_out import ReplySpeaker
from llm.turn import ReplyChunk
from tts.base import Voice
from tts.pool import SynthesisPool

RATE = 16000
BLOCK_SECONDS = 0.2


class PooledEngine:
    """A local-engine stand-in: each 'sentence' is 0.2 s of audio made at once in a pool thread."""

    name = "pooled"

    def __init__(self, blocks: int, block_seconds: float = BLOCK_SECONDS) -> None:
        self.blocks = blocks
        self.block_seconds = block_seconds
        self.pool = SynthesisPool(1, name="test")
        self.made_at: list[float] = []

    def voices(self) -> list[Voice]:
        return [Voice("v", "v")]

    def resolve_voice(self, voice_id: str | None) -> str:
        return "v"

    def sample_rate(self, voice_id: str) -> int:
        return RATE

    async def synthesize(self, text: str, *, voice_id: str):
        def sentences(cancelled):
            for _ in range(self.blocks):
                self.made_at.append(time.monotonic())
                yield b"\x01\x00" * int(RATE * self.block_seconds)

        async for block in self.pool.stream(sentences):
            yield block


class RecordingPort:
    def __init__(self) -> None:
        self.frames: list[tuple[float, int]] = []  # (sent at, bytes)

    async def response_start(self, utterance_id: str) -> None:
        pass

    async def response_text(self, utterance_id: str, index: int, text: str) -> None:
        pass

    async def response_audio(self, utterance_id: str, pcm: bytes, sample_rate: int) -> None:
        self.frames.append((time.monotonic(), len(pcm)))

    async def speech_error(self, error_type: str, message: str, retryable: bool) -> None:
        raise AssertionError(message)


def _speaker(engine, port, *, lookahead: float) -> ReplySpeaker:
    return ReplySpeaker(
        call_id="c",
        utterance_id="u",
        engine=engine,
        voice_id="v",
        port=port,
        frame_ms=100,
        max_frame_bytes=1 << 20,
        max_frame_ms=500,
        lookahead=lookahead,
    )


async def test_speech_is_made_only_lookahead_ahead_of_the_caller():
    engine, port = PooledEngine(blocks=10), RecordingPort()  # 2 s of speech
    started = time.monotonic()
    await _speaker(engine, port, lookahead=0.5).speak(ReplyChunk(index=0, text="A long sentence."))
    first_audio = port.frames[0][0]
    # Each sentence was made no earlier than 0.5 s before the caller would run out of audio.
    for number, made in enumerate(engine.made_at[1:], start=1):
        assert made >= first_audio + number * BLOCK_SECONDS - 0.5 - 0.02
    # So the reply took about as long as its audio, less the lookahead (not ~0 s, as unpaced).
    assert time.monotonic() - started >= 2.0 - 0.5 - BLOCK_SECONDS
    assert sum(size for _, size in port.frames) == 10 * int(RATE * BLOCK_SECONDS) * 2


async def test_the_first_frame_is_small_and_later_frames_grow_across_chunks():
    engine, port = PooledEngine(blocks=1, block_seconds=1.0), RecordingPort()  # 1 s per chunk
    speaker = _speaker(engine, port, lookahead=30.0)
    await speaker.speak(ReplyChunk(index=0, text="One."))
    await speaker.speak(ReplyChunk(index=1, text="Two."))
    ms = [size // 32 for _, size in port.frames]
    assert ms == [100, 200, 400, 300, 500, 500]
