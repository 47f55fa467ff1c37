"""Call recordings: both sides of the call in a stereo WAV, stored, played in admin, purged."""

from __future__ import annotations

import asyncio
import io
import math
import subprocess
import tracemalloc
import uuid
import wave
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from django.contrib.auth.models import User
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.utils import timezone

from calls import recording as recording_module
from calls import services
from calls.models import Call
from calls.recording import CallRecording, resample
from calls.session import CallSession, Request
from tests.servers import require_program
from tests.support import BeepEngine, Script, ScriptedProvider, tokens_of
from tests.test_call_session import RecordingPort


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def tone(seconds: float, rate: int, freq: float = 440.0, level: int = 8000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (level * np.sin(2 * math.pi * freq * t)).astype("<i2").tobytes()


def channels_of(wav_bytes: bytes) -> tuple[int, np.ndarray]:
    with wave.open(io.BytesIO(wav_bytes)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth()) == (2, 2)
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
        return wav.getframerate(), frames


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if len(samples) else 0.0


def test_caller_and_agent_are_placed_on_their_own_channel_at_their_time():
    clock = FakeClock()
    recording = CallRecording(session_id=uuid.uuid4(), rate=16000, clock=clock)
    # The caller speaks for one second (ten 100 ms frames at 16 kHz, arriving in real time)...
    for _ in range(10):
        clock.now += 0.1
        recording.add_caller(tone(0.1, 16000), 16000)
    # ...the agent answers at 1.5 s with 0.6 s of 24 kHz speech sent at once in two frames.
    clock.now += 0.5
    recording.add_agent(tone(0.3, 24000, 660), 24000)
    recording.add_agent(tone(0.3, 24000, 660), 24000)
    rate, frames = channels_of(recording.render()[0])
    caller, agent = frames[:, 0], frames[:, 1]
    assert rate == 16000
    assert len(frames) == pytest.approx(2.1 * 16000, abs=2)
    assert rms(caller[:16000]) > 5000 and rms(caller[16000:]) == 0
    assert rms(agent[: int(1.5 * 16000)]) == 0
    assert rms(agent[int(1.5 * 16000) + 10 : int(2.1 * 16000) - 10]) > 5000  # back to back, no gap


def test_a_barge_in_cuts_the_agent_audio_the_caller_never_heard():
    clock = FakeClock()
    recording = CallRecording(session_id=uuid.uuid4(), rate=16000, clock=clock)
    recording.add_agent(tone(2.0, 22050), 22050)  # synthesized faster than it plays
    clock.now += 0.5
    recording.agent_interrupted()
    clock.now += 0.5
    recording.add_caller(tone(0.5, 16000), 16000)
    _, frames = channels_of(recording.render()[0])
    agent = frames[:, 1]
    assert rms(agent[:7000]) > 5000
    assert rms(agent[8000:]) == 0  # nothing after the cut at 0.5 s
    assert rms(frames[8000:16000, 0]) > 5000  # the caller from 0.5 s to 1 s


def test_a_long_call_keeps_its_audio_on_disk_not_in_memory_and_records_it_exactly():
    clock = FakeClock()
    recording = CallRecording(session_id=uuid.uuid4(), rate=16000, clock=clock)
    tracemalloc.start()
    # Two minutes of a conversation: the caller talks (100 ms frames), the agent answers.
    for second in range(120):
        if second % 2 == 0:
            for _ in range(10):
                clock.now += 0.1
                recording.add_caller(tone(0.1, 16000, 440), 16000)
        else:
            recording.add_agent(tone(1.0, 24000, 660), 24000)
            clock.now += 1.0
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # 2 min of audio is ~4.8 MB: in memory only up to the spill threshold, the rest on disk.
    assert held < recording_module.MEMORY_BYTES + 1024 * 1024
    rate, frames = channels_of(recording.render()[0])
    assert len(frames) == pytest.approx(120 * rate, abs=2)
    caller, agent = frames[:, 0], frames[:, 1]
    for second in (0, 58, 118):  # the caller's seconds carry the caller, the agent's the agent
        assert rms(caller[second * rate + 100 : (second + 1) * rate - 100]) > 5000
        assert rms(agent[second * rate + 100 : (second + 1) * rate - 100]) == 0
        assert rms(agent[(second + 1) * rate + 100 : (second + 2) * rate - 100]) > 5000
    recording.discard()
    assert recording.empty


def test_resampling_keeps_duration_and_pitch():
    source = np.frombuffer(tone(1.0, 24000, 500), dtype="<i2")
    out = resample(source, 24000, 16000)
    assert len(out) == 16000
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(int(np.argmax(spectrum)) - 500) <= 1  # 1 Hz per bin over one second


def test_a_recording_stops_at_its_limit_and_the_call_goes_on():
    clock = FakeClock()
    recording = CallRecording(session_id=uuid.uuid4(), rate=8000, max_seconds=1.0, clock=clock)
    recording.add_caller(tone(0.8, 8000), 8000)
    clock.now += 2
    recording.add_caller(tone(0.8, 8000), 8000)  # beyond the limit: dropped
    _, frames = channels_of(recording.render()[0])
    assert len(frames) == pytest.approx(0.8 * 8000, abs=2)


@pytest.mark.django_db(transaction=True)
async def test_a_call_is_recorded_stored_and_linked_at_hang_up(use_engines, settings):
    settings.CALL_RECORDINGS = True
    use_engines(
        chat=ScriptedProvider([Script(tokens_of("Hi there. ||BREAK|| How can I help?"))]), speech=BeepEngine()
    )
    port = RecordingPort()
    session = CallSession(port=port)
    await session.start()
    await session.audio_start(
        request=Request("voicechat.audio.start"), sample_rate=16000, voice_id=None, language=None
    )
    for _ in range(5):
        session.audio_chunk(tone(0.1, 16000))
    await session.text_input("Hello", request=Request("voicechat.text.input", "r1"))
    await asyncio.wait_for(asyncio.gather(*session.turn_tasks), 10)
    await session.hangup()

    from channels.db import database_sync_to_async

    call = await database_sync_to_async(Call.objects.get)(session_id=session.call_uuid)
    assert call.recording.name.startswith("recordings/") and call.recording.name.endswith(".wav")
    assert call.outcome == "no_decision" and call.outcome_source == "system"
    path = Path(settings.MEDIA_ROOT) / call.recording.name
    rate, frames = channels_of(path.read_bytes())
    assert rate == settings.CALL_RECORDING_RATE
    assert rms(frames[:, 0]) > 0 and rms(frames[:, 1]) > 0  # caller and agent both present
    assert call.recording_seconds == pytest.approx(len(frames) / rate, abs=0.01)
    # sox (installed with the test servers) reads it as an ordinary two-channel WAV.
    soxi = await asyncio.to_thread(
        subprocess.run,
        [require_program("soxi", package="sox"), "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert soxi.stdout.strip() == "2"


@pytest.mark.django_db(transaction=True)
async def test_no_recording_when_the_setting_is_off(use_engines, settings):
    settings.CALL_RECORDINGS = False
    use_engines(chat=ScriptedProvider([Script(tokens_of("Hi."))]), speech=BeepEngine())
    session = CallSession(port=RecordingPort())
    await session.start()
    await session.text_input("Hello", request=Request("voicechat.text.input", "r1"))
    await asyncio.wait_for(asyncio.gather(*session.turn_tasks), 10)
    await session.hangup()
    from channels.db import database_sync_to_async

    call = await database_sync_to_async(Call.objects.get)(session_id=session.call_uuid)
    assert call.recording.name == ""
    assert not (Path(settings.MEDIA_ROOT) / "recordings").exists()


def _stored_call_with_recording(*, started_ago: timedelta) -> Call:
    session_id = uuid.uuid4()
    started = timezone.now() - started_ago
    services.call_start(session_id=session_id, started_at=started, prompt_version_id=None)
    services.call_end(session_id=session_id, reason="hangup", ended_at=started + timedelta(seconds=30))
    recording = CallRecording(session_id=session_id, rate=8000)
    recording.add_caller(tone(0.2, 8000), 8000)
    name = recording._store(recording.render()[0])
    services.call_attach_recording(session_id=session_id, name=name, seconds=0.2)
    return Call.objects.get(session_id=session_id)


@pytest.mark.django_db
def test_the_recording_plays_in_the_call_view_for_reviewers_only(client, admin_client):
    call = _stored_call_with_recording(started_ago=timedelta(minutes=5))
    html = admin_client.get(f"/admin/calls/call/{call.pk}/change/").content.decode()
    assert f'src="/admin/calls/call/{call.pk}/recording/"' in html
    response = admin_client.get(f"/admin/calls/call/{call.pk}/recording/")
    assert response.status_code == 200 and response["Content-Type"] == "audio/wav"
    assert b"".join(response.streaming_content)[:4] == b"RIFF"
    client.force_login(User.objects.create_user("plain", password="pw", is_staff=True))
    assert client.get(f"/admin/calls/call/{call.pk}/recording/").status_code == 403
    default_storage.delete(call.recording.name)
    assert admin_client.get(f"/admin/calls/call/{call.pk}/recording/").status_code == 404


@pytest.mark.django_db
def test_the_recording_answers_range_requests_so_the_player_can_seek(admin_client):
    call = _stored_call_with_recording(started_ago=timedelta(minutes=5))
    url = f"/admin/calls/call/{call.pk}/recording/"
    whole = admin_client.get(url)
    wav = b"".join(whole.streaming_content)
    size = len(wav)
    assert (whole.status_code, whole["Accept-Ranges"], size) == (200, "bytes", 44 + 2 * 2 * 1600)

    def part(header: str):
        response = admin_client.get(url, headers={"Range": header})
        body = b"".join(response.streaming_content) if response.streaming else response.content
        return response.status_code, response.get("Content-Range"), body

    assert part("bytes=0-3") == (206, f"bytes 0-3/{size}", b"RIFF")
    assert part("bytes=44-") == (206, f"bytes 44-{size - 1}/{size}", wav[44:])
    assert part("bytes=-100") == (206, f"bytes {size - 100}-{size - 1}/{size}", wav[-100:])
    assert part(f"bytes=100-{size + 500}") == (206, f"bytes 100-{size - 1}/{size}", wav[100:])
    ranged = admin_client.get(url, headers={"Range": "bytes=8-11"})
    assert (ranged["Content-Length"], ranged["Content-Type"]) == ("4", "audio/wav")
    assert b"".join(ranged.streaming_content) == b"WAVE"
    # Past the end: 416 with the size; several ranges or a malformed header: the whole file.
    assert part(f"bytes={size}-")[:2] == (416, f"bytes */{size}")
    assert part("bytes=-0")[:2] == (416, f"bytes */{size}")
    assert part("bytes=0-1,4-5") == (200, None, wav)
    assert part("bytes=abc") == (200, None, wav)
    assert part("bytes=9-3") == (200, None, wav)


@pytest.mark.django_db
def test_purge_calls_deletes_the_recording_files_too():
    old = _stored_call_with_recording(started_ago=timedelta(days=40))
    recent = _stored_call_with_recording(started_ago=timedelta(days=1))
    out = io.StringIO()
    call_command("purge_calls", "--older-than", "30", "--execute", stdout=out)
    assert "and 1 recordings" in out.getvalue()
    assert not default_storage.exists(old.recording.name)
    assert default_storage.exists(recent.recording.name)


@pytest.mark.django_db(transaction=True)
async def test_a_storage_failure_loses_the_recording_not_the_call(settings, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the media folder should be")
    settings.MEDIA_ROOT = blocker
    session_id = uuid.uuid4()
    from channels.db import database_sync_to_async

    await database_sync_to_async(services.call_start)(
        session_id=session_id, started_at=timezone.now(), prompt_version_id=None
    )
    recording = CallRecording(session_id=session_id, rate=8000)
    recording.add_caller(tone(0.2, 8000), 8000)
    assert await recording.save() is None
    call = await database_sync_to_async(Call.objects.get)(session_id=session_id)
    assert call.recording.name == "" and call.started_at is not None
