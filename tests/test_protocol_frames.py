"""Server frames: the pre-built audio-frame envelope and the event ids (calls/protocol.py)."""

from __future__ import annotations

import time
import uuid

import msgpack
import pytest

from calls import protocol


def _generic_chunk(event_id: str, session_id: str, utterance_id: str, audio: bytes, rate: int) -> bytes:
    # The encoder every other frame uses (and audio frames used before the envelope).
    payload = {"audio": audio, "utteranceId": utterance_id, "sampleRate": rate}
    return protocol._frame(protocol.RESPONSE_CHUNK, event_id, session_id, payload)


@pytest.mark.parametrize("size", [0, 1, 255, 256, 4800, 65535, 65536, 200_000])
@pytest.mark.parametrize("rate", [8000, 16000, 24000, 48000])
def test_the_prebuilt_audio_frame_is_byte_for_byte_the_generic_one(size, rate):
    audio = bytes(range(256)) * (size // 256) + bytes(size % 256)
    event_id = protocol.new_id()
    for session_id, utterance_id in [("s-1", "u-1"), ("é" * 40, "x" * 300), ("", "")]:
        built = protocol._response_chunk(event_id, session_id, utterance_id, audio, rate)
        assert built == _generic_chunk(event_id, session_id, utterance_id, audio, rate)


def test_an_audio_frame_decodes_to_the_protocols_fields():
    frame = protocol.encode_response_chunk("session-9", "utterance-3", b"\x01\x02" * 2400, 24000)
    decoded = msgpack.unpackb(frame, raw=False)
    event_id = decoded.pop("eventId")
    assert decoded == {
        "eventType": "voicechat.response.chunk",
        "sessionId": "session-9",
        "payload": {"audio": b"\x01\x02" * 2400, "utteranceId": "utterance-3", "sampleRate": 24000},
    }
    assert list(msgpack.unpackb(frame, raw=False)) == ["eventType", "eventId", "sessionId", "payload"]
    assert uuid.UUID(event_id).version == 7


def test_event_ids_are_uuid7_strictly_increasing_and_never_ahead_of_the_clock():
    ids = [protocol.new_id() for _ in range(20_000)]  # a burst: many per millisecond
    now_ms = time.time_ns() // 1_000_000
    parsed = [uuid.UUID(i) for i in ids]
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in parsed)
    assert [str(u) for u in parsed] == ids  # canonical lower-case form
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    # The burst did not push the timestamp ahead of the clock (uuid6 added 1 ms per id).
    assert (parsed[-1].int >> 80) <= now_ms
    # The random part really varies.
    assert len({u.int & ((1 << 62) - 1) for u in parsed}) == len(ids)
