"""Speech to text: utterance audio helpers and the OpenAI-compatible transcriber."""

from __future__ import annotations

import io
import wave

import pytest

from llm.fake_openai import FakeOpenAI
from stt.audio import duration_seconds, is_silent, pcm16_rms, pcm16_to_wav, resample_pcm16
from stt.base import TranscriptionError
from stt.openai_stt import OpenAITranscriber
from tests.support import speech_pcm


@pytest.mark.parametrize(
    ("source", "target", "samples"), [(48000, 16000, 16000), (8000, 16000, 16000), (44100, 16000, 16000)]
)
def test_resampling_gives_exactly_the_expected_length(source, target, samples):
    out = resample_pcm16(speech_pcm(1.0, source), source, target)
    assert len(out) == samples * 2


def test_silence_and_speech_are_told_apart():
    assert is_silent(bytes(32000), 200)
    assert not is_silent(speech_pcm(0.5), 200)
    assert pcm16_rms(b"") == 0.0
    assert duration_seconds(b"\x00" * 32001, 16000) == 1.0  # a trailing odd byte is not a sample


def test_wav_wraps_pcm_with_a_correct_header():
    with wave.open(io.BytesIO(pcm16_to_wav(speech_pcm(0.25), 16000))) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate(), wav.getnframes()) == (
            1,
            2,
            16000,
            4000,
        )


async def test_the_transcriber_sends_a_16_khz_wav_through_the_real_sdk():
    fake = FakeOpenAI(transcription_text="  I would like a demo.  ")
    transcriber = OpenAITranscriber(api_key="sk", model="whisper-1", http_client=fake.http_client())
    text = await transcriber.transcribe(speech_pcm(1.0, 48000), sample_rate=48000, language="en", call_id="c")
    assert text == "I would like a demo."
    request = fake.requests[0]
    assert request["path"] == "/v1/audio/transcriptions"
    body = request["body"]
    assert b'name="model"\r\n\r\nwhisper-1' in body
    assert b'name="language"\r\n\r\nen' in body
    wav_bytes = body[body.index(b"RIFF") :]
    with wave.open(io.BytesIO(wav_bytes)) as wav:
        assert (wav.getframerate(), wav.getnframes()) == (16000, 16000)


async def test_transcription_failures_become_clear_caller_messages():
    import httpx2

    async def refuse(request):
        return httpx2.Response(401, json={"error": {"message": "bad key", "type": "invalid_request_error"}})

    transcriber = OpenAITranscriber(
        api_key="sk", http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(refuse))
    )
    with pytest.raises(TranscriptionError) as raised:
        await transcriber.transcribe(speech_pcm(0.5), sample_rate=16000, language=None, call_id="c")
    assert str(raised.value) == "Speech-to-text is not available (the server rejected our credentials)."
