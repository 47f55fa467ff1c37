"""Speech to text: utterance audio helpers and the OpenAI-compatible transcriber."""

from __future__ import annotations

import array
import io
import struct
import wave

import pytest

from llm.fake_openai import FakeOpenAI, FakeReply, Fault
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


def _riff_header(wav_bytes: bytes) -> tuple[bytes, bytes, int, int, int, int]:
    """(RIFF, WAVE, format tag, channels, sample rate, bits per sample), read by hand."""
    return (
        wav_bytes[0:4],
        wav_bytes[8:12],
        struct.unpack_from("<H", wav_bytes, 20)[0],
        struct.unpack_from("<H", wav_bytes, 22)[0],
        struct.unpack_from("<I", wav_bytes, 24)[0],
        struct.unpack_from("<H", wav_bytes, 34)[0],
    )


async def test_the_uploaded_file_is_a_16_khz_mono_pcm_wav_whatever_the_input_rate():
    fake = FakeOpenAI()
    transcriber = OpenAITranscriber(api_key="sk", http_client=fake.http_client())
    await transcriber.transcribe(speech_pcm(0.5, 8000), sample_rate=8000, language=None, call_id="c")
    record = fake.requests[0]
    assert record["form"] == {"model": "gpt-4o-mini-transcribe"}  # no language hint sent
    filename, content_type, wav_bytes = record["files"]["file"]
    assert (filename, content_type) == ("utterance.wav", "audio/wav")
    assert _riff_header(wav_bytes) == (b"RIFF", b"WAVE", 1, 1, 16000, 16)
    assert len(wav_bytes) == 44 + 8000 * 2  # header + half a second at 16 kHz
    assert record["url"] == "https://api.openai.com/v1/audio/transcriptions"
    assert record["timeout"]["read"] == 15.0


async def test_a_self_hosted_server_gets_the_request_and_a_placeholder_key():
    fake = FakeOpenAI().script(FakeReply(text="hallo"), endpoint="transcriptions")
    transcriber = OpenAITranscriber(
        api_key="",
        base_url="http://whisper:9000/v1",
        model="large-v3",
        timeout=3,
        http_client=fake.http_client(),
    )
    assert transcriber.name == "openai-compatible"
    text = await transcriber.transcribe(speech_pcm(0.2), sample_rate=16000, language="de", call_id="c")
    assert text == "hallo"
    record = fake.requests[0]
    assert record["url"] == "http://whisper:9000/v1/audio/transcriptions"
    assert record["headers"]["authorization"] == "Bearer not-needed"
    assert record["form"] == {"model": "large-v3", "language": "de"}


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (Fault.AUTH, "Speech-to-text is not available (the server rejected our credentials)."),
        (Fault.PERMISSION_DENIED, "Speech-to-text is not available (the server rejected our credentials)."),
        (Fault.RATE_LIMIT, "Speech-to-text is busy right now. Please try again, or type."),
        (Fault.TIMEOUT, "Speech-to-text took too long. Please try again, or type."),
        (Fault.HANG, "Speech-to-text took too long. Please try again, or type."),
        (Fault.CONNECTION, "Speech-to-text could not be reached. Please try again, or type."),
        (Fault.BAD_REQUEST, "Speech-to-text could not use that recording. Please try again, or type."),
        (Fault.SERVER_ERROR, "Speech-to-text failed for that recording. Please try again, or type."),
        (Fault.UNAVAILABLE, "Speech-to-text failed for that recording. Please try again, or type."),
    ],
)
async def test_each_transcription_fault_becomes_a_clear_caller_message(fault, message):
    fake = FakeOpenAI().fail(fault, endpoint="transcriptions")
    transcriber = OpenAITranscriber(api_key="sk", timeout=0.2, http_client=fake.http_client())
    with pytest.raises(TranscriptionError) as raised:
        await transcriber.transcribe(speech_pcm(0.2), sample_rate=16000, language=None, call_id="c")
    assert str(raised.value) == message
    assert len(fake.requests) == 1  # no SDK retries


async def test_nothing_recorded_is_refused_without_a_request():
    fake = FakeOpenAI()
    transcriber = OpenAITranscriber(api_key="sk", http_client=fake.http_client())
    with pytest.raises(TranscriptionError, match="Nothing was recorded"):
        await transcriber.transcribe(b"\x01", sample_rate=16000, language=None, call_id="c")
    assert fake.requests == []


def test_resampling_edge_cases():
    assert resample_pcm16(b"", 48000, 16000) == b""
    assert resample_pcm16(b"\x01\x00\x02\x00\x03", 16000, 16000) == b"\x01\x00\x02\x00"  # odd byte dropped
    assert len(resample_pcm16(bytes(2 * 441), 44100, 16000)) == 2 * 160
    assert len(resample_pcm16(bytes(2 * 3), 8000, 48000)) == 2 * 18
    with pytest.raises(ValueError, match="from_rate"):
        resample_pcm16(b"\x00\x00", 0, 16000)


def test_linear_interpolation_keeps_a_ramp_a_ramp():
    ramp = array.array("h", range(0, 1000, 10)).tobytes()  # 100 samples
    up = array.array("h", resample_pcm16(ramp, 8000, 16000))
    assert len(up) == 200
    assert list(up[:5]) == [0, 5, 10, 15, 20]
    down = array.array("h", resample_pcm16(ramp, 16000, 8000))
    assert list(down[:5]) == [0, 20, 40, 60, 80]


def test_rms_of_known_signals():
    assert pcm16_rms(array.array("h", [1000, -1000] * 50).tobytes()) == 1000.0
    assert pcm16_rms(array.array("h", [3000] * 10).tobytes() + b"\x7f") == 3000.0  # odd byte ignored
    assert is_silent(array.array("h", [150, -150] * 100).tobytes(), 200)
    assert not is_silent(array.array("h", [250, -250] * 100).tobytes(), 200)
