"""Small test doubles for the *edges* of the unit under test (never the unit itself)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from llm.config import ModelParams
from llm.providers import ChatDelta, ProviderError
from llm.turn import ReplyChunk


@dataclass
class Script:
    """One scripted model reply: tokens, an optional failure after ``fail_after`` tokens,
    and an optional event the stream waits for after ``pause_after`` tokens."""

    tokens: Sequence[str] = ()
    fail_with: ProviderError | None = None
    fail_after: int = 0
    pause_after: int | None = None
    resume: asyncio.Event | None = None
    delay: float = 0.0


@dataclass
class ScriptedProvider:
    """A ChatProvider that plays scripts in order (the last one repeats)."""

    scripts: list[Script]
    name: str = "scripted"
    requests: list[list[dict[str, str]]] = field(default_factory=list)
    offered: list[dict] = field(default_factory=list)
    emitted_at: list[float] = field(default_factory=list)

    async def stream_chat(
        self, *, messages: Sequence[dict[str, str]], params: ModelParams, call_id: str, **offered
    ) -> AsyncIterator[ChatDelta]:
        self.requests.append(list(messages))
        self.offered.append(offered)  # tools / tool_choice, when the conversation offers tools
        script = self.scripts.pop(0) if len(self.scripts) > 1 else self.scripts[0]
        for n, token in enumerate(script.tokens):
            if script.fail_with is not None and n == script.fail_after:
                raise script.fail_with
            if script.pause_after is not None and n == script.pause_after and script.resume is not None:
                await script.resume.wait()
            if script.delay:
                await asyncio.sleep(script.delay)
            self.emitted_at.append(time.monotonic())
            yield ChatDelta(text=token)
        if script.fail_with is not None and script.fail_after >= len(script.tokens):
            raise script.fail_with
        yield ChatDelta(prompt_tokens=11, completion_tokens=len(script.tokens))


@dataclass
class RecordingSink:
    """A speech sink that records what it was asked to speak and when."""

    speak_seconds: float = 0.0
    gate: asyncio.Event | None = None
    spoken: list[str] = field(default_factory=list)
    received_at: list[float] = field(default_factory=list)
    concurrent: int = 0
    max_concurrent: int = 0

    async def speak(self, chunk: ReplyChunk) -> None:
        self.received_at.append(time.monotonic())
        self.concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self.concurrent)
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.speak_seconds:
                await asyncio.sleep(self.speak_seconds)
            self.spoken.append(chunk.text)
            chunk.audio_sent = True
        finally:
            self.concurrent -= 1


def tokens_of(text: str, size: int = 4) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


class BeepEngine:
    """A speech-engine double: 16 kHz PCM, 20 ms of audio per character, in 3 blocks.

    ``fail_on`` makes synthesis of texts containing that word raise ``SpeechError``;
    ``block_delay`` spaces the blocks so a test can cut in mid-chunk.
    """

    name = "beep"

    def __init__(self, *, fail_on: str | None = None, block_delay: float = 0.0) -> None:
        self.fail_on = fail_on
        self.block_delay = block_delay
        self.spoken: list[str] = []

    def voices(self):
        from tts.base import Voice

        return [Voice("beep-a", "Beep A"), Voice("beep-b", "Beep B")]

    def resolve_voice(self, voice_id: str | None) -> str:
        return voice_id if voice_id in {"beep-a", "beep-b"} else "beep-a"

    def sample_rate(self, voice_id: str) -> int:
        return 16000

    async def synthesize(self, text: str, *, voice_id: str):
        from tts.base import SpeechError

        if self.fail_on and self.fail_on in text:
            raise SpeechError("the engine refused this text")
        self.spoken.append(text)
        audio = b"\x01\x02" * (len(text) * 320)  # 20 ms a character at 16 kHz
        # Odd block boundaries, as real engines produce: the framer must carry bytes over.
        third = len(audio) // 3 + 1
        for start in range(0, len(audio), third):
            if self.block_delay:
                await asyncio.sleep(self.block_delay)
            yield audio[start : start + third]


class CannedTranscriber:
    """A speech-to-text double that hears ``text`` in any utterance."""

    name = "canned"

    def __init__(self, text: str) -> None:
        self.text = text
        self.heard: list[tuple[int, int]] = []

    async def transcribe(self, pcm: bytes, *, sample_rate: int, language: str | None, call_id: str) -> str:
        self.heard.append((len(pcm), sample_rate))
        return self.text


def speech_pcm(seconds: float, rate: int = 16000) -> bytes:
    """A loud square wave: not silence."""
    import array

    samples = array.array("h", [(6000 if (n // 40) % 2 else -6000) for n in range(int(seconds * rate))])
    return samples.tobytes()
