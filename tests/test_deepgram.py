"""Deepgram live transcription: the real client against a loopback fake at the WebSocket layer."""

from __future__ import annotations

import asyncio

import pytest

from stt.base import StreamingTranscriber, TranscriptionError
from stt.deepgram import MESSAGES, DeepgramTranscriber
from stt.fake_deepgram import FakeDeepgram
from tests.speech_samples import silence

SENTENCE = "I would like to know more about your pricing for teams."
WORD_BYTES = 2 * 16000 * 200 // 1000  # the fake reveals a word per 200 ms of 16 kHz audio


def client(fake: FakeDeepgram, **kwargs) -> DeepgramTranscriber:
    return DeepgramTranscriber(
        api_key=kwargs.pop("api_key", fake.api_key), url=fake.url, timeout=2.0, **kwargs
    )


async def test_a_turn_streams_audio_shows_partial_words_and_returns_the_final_words():
    async with FakeDeepgram(transcripts=[SENTENCE]) as fake:
        transcriber = client(fake)
        assert isinstance(transcriber, StreamingTranscriber)
        partials: list[str] = []
        stream = await transcriber.open(
            sample_rate=16000, language="en", call_id="c1", on_partial=partials.append
        )
        audio = silence(2000)  # ten words' worth for the fake
        for start in range(0, len(audio), 640):
            await stream.feed(audio[start : start + 640])
        await asyncio.sleep(0.2)  # let interim results arrive before the turn ends
        text = await stream.finish()
        assert text == SENTENCE
        session = fake.sessions[0]
        assert session.audio_bytes == len(audio)  # every byte reached the server
        assert session.params["encoding"] == "linear16"
        assert session.params["sample_rate"] == "16000"
        assert session.params["endpointing"] == "false"  # our VAD ends turns
        assert session.params["interim_results"] == "true"
        assert session.controls == ["Finalize", "CloseStream"]
        # Interim words grew while the caller spoke, and never went backwards.
        assert partials[0] == "I"
        assert partials[-1] == SENTENCE
        assert all(SENTENCE.startswith(partial) for partial in partials)
        assert [len(p) for p in partials] == sorted({len(p) for p in partials})
        assert len(partials) >= 5


async def test_finish_returns_words_that_only_finalize_flushed():
    async with FakeDeepgram(transcripts=["Yes please."], words_every_ms=10_000) as fake:
        stream = await client(fake).open(sample_rate=8000, language=None, call_id="c2")
        await stream.feed(silence(300, 8000))
        assert await stream.finish() == "Yes please."
        assert fake.sessions[0].params["sample_rate"] == "8000"
        assert fake.sessions[0].params["language"] == "en"
        final = [m for m in fake.sessions[0].sent if m["type"] == "Results"][-1]
        assert final["from_finalize"] is True and final["is_final"] is True


async def test_odd_byte_counts_are_carried_to_the_next_chunk():
    async with FakeDeepgram() as fake:
        stream = await client(fake).open(sample_rate=16000, language="en", call_id="c3")
        for _ in range(10):
            await stream.feed(b"\x01" * 333)
        await stream.finish()
        assert fake.sessions[0].audio_bytes == 3330  # 3330 is even: nothing lost, nothing split


async def test_a_wrong_key_is_a_clear_auth_error():
    async with FakeDeepgram() as fake:
        with pytest.raises(TranscriptionError) as caught:
            await client(fake, api_key="wrong").open(sample_rate=16000, language="en", call_id="c4")
        assert str(caught.value) == MESSAGES["auth"]
        assert fake.refused == [401]
        assert fake.sessions == []


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("bad_audio", MESSAGES["rejected"]),
        ("drop", MESSAGES["failed"]),
        ("error_message", MESSAGES["failed"]),
    ],
)
async def test_a_stream_closed_by_the_server_fails_the_turn_clearly(fault, message):
    async with FakeDeepgram(fault=fault) as fake:
        stream = await client(fake).open(sample_rate=16000, language="en", call_id="c5")
        await stream.feed(silence(100))
        with pytest.raises(TranscriptionError) as caught:
            for _ in range(50):  # the close arrives asynchronously: a later feed or finish sees it
                await stream.feed(silence(20))
                await asyncio.sleep(0.01)
            await stream.finish()
        assert str(caught.value) == message


async def test_a_server_that_never_finalizes_times_out():
    async with FakeDeepgram(fault="silent") as fake:
        transcriber = DeepgramTranscriber(api_key=fake.api_key, url=fake.url, timeout=0.3)
        stream = await transcriber.open(sample_rate=16000, language="en", call_id="c6")
        await stream.feed(silence(100))
        with pytest.raises(TranscriptionError) as caught:
            await stream.finish()
        assert str(caught.value) == MESSAGES["timeout"]


async def test_an_unreachable_server_is_a_network_error():
    async with FakeDeepgram() as fake:
        url = fake.url
    with pytest.raises(TranscriptionError) as caught:
        await DeepgramTranscriber(api_key="k", url=url, timeout=1.0).open(
            sample_rate=16000, language="en", call_id="c7"
        )
    assert str(caught.value) == MESSAGES["network"]


async def test_abort_drops_the_stream_without_finalizing():
    async with FakeDeepgram() as fake:
        stream = await client(fake).open(sample_rate=16000, language="en", call_id="c8")
        await stream.feed(silence(200))
        await stream.abort()
        await asyncio.sleep(0.1)
        assert "Finalize" not in fake.sessions[0].controls
        with pytest.raises(TranscriptionError):
            await stream.feed(silence(20))


async def test_the_batch_protocol_sends_the_whole_utterance_through_one_stream():
    async with FakeDeepgram(transcripts=["Call me tomorrow."]) as fake:
        transcriber = client(fake)
        pcm = silence(1000, 48000)
        text = await transcriber.transcribe(pcm, sample_rate=48000, language="en", call_id="c9")
        assert text == "Call me tomorrow."
        assert fake.sessions[0].audio_bytes == len(pcm)
        with pytest.raises(TranscriptionError):
            await transcriber.transcribe(b"", sample_rate=16000, language="en", call_id="c9")


async def test_keepalive_is_sent_while_the_caller_is_quiet():
    async with FakeDeepgram() as fake:
        stream = await client(fake, keepalive_seconds=0.2).open(
            sample_rate=16000, language="en", call_id="c10"
        )
        await asyncio.sleep(0.6)
        await stream.finish()
        assert fake.sessions[0].keepalives >= 1
