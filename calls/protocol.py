"""The call protocol codec (../shared/PROTOCOL.md). Pure: msgpack, uuid6 and stdlib only.

Decoding validates one client frame into a ``ClientEvent`` or raises ``ProtocolError``
carrying what the error event needs; encoders build the server's frames as bytes.
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass
from typing import Any

import msgpack

# Client -> server
AUDIO_START = "voicechat.audio.start"
AUDIO_CHUNK = "voicechat.audio.chunk"
AUDIO_END = "voicechat.audio.end"
TEXT_INPUT = "voicechat.text.input"
SESSION_UPDATE = "voicechat.session.update"
CLIENT_EVENTS = frozenset({AUDIO_START, AUDIO_CHUNK, AUDIO_END, TEXT_INPUT, SESSION_UPDATE})

# Server -> client
CONNECTION_ACK = "connection.ack"
RESPONSE_START = "voicechat.response.start"
RESPONSE_CHUNK = "voicechat.response.chunk"
RESPONSE_COMPLETE = "voicechat.response.complete"
RESPONSE_STOP = "voicechat.response.stop"
RESPONSE_TEXT = "voicechat.response.text"
TRANSCRIPT_USER = "voicechat.transcript.user"
VOICECHAT_ERROR = "voicechat.error"
CALL_ENDED = "voicechat.call.ended"
SPEECH_STARTED = "voicechat.speech.started"
SPEECH_STOPPED = "voicechat.speech.stopped"
TRANSCRIPT_PARTIAL = "voicechat.transcript.partial"
UNKNOWN_REQUEST = "error.unknown"

MIN_SAMPLING_RATE = 8000
MAX_SAMPLING_RATE = 48000
DEFAULT_SAMPLING_RATE = 16000
MAX_TEXT_CHARS = 4000
MAX_FIELD_CHARS = 200
PROSPECT_FIELDS = ("name", "company", "industry")
TURN_DETECTION_MODES = ("client", "server")


class ProtocolError(Exception):
    """A frame the server cannot use; becomes the protocol's error event."""

    def __init__(
        self, message: str, *, request_type: str = UNKNOWN_REQUEST, event_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.request_type = request_type
        self.event_id = event_id


@dataclass(frozen=True, slots=True)
class ClientEvent:
    event_type: str
    event_id: str
    session_id: str
    payload: dict[str, Any]


_last_id_ms = 0
_id_counter = 0
_id_time = ""
_random_hex = ""
_random_at = 0
_RANDOM_CHARS = 16  # the variant digit's 2 free bits + 15 hex digits: rand_b's 62 bits
_RANDOM_BATCH = 512  # ids per os.urandom call
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}
_HEX3 = [f"{n:03x}" for n in range(0x1000)]


def new_id() -> str:
    """A UUIDv7 string: time-ordered, as the client expects.

    Strictly increasing within the process (RFC 9562 method 1): ids of the same millisecond
    count up in ``rand_a`` from a random start below 0x800, so a busy process never runs
    its clock ahead (``uuid6.uuid7`` added a millisecond per id, minutes ahead after a
    burst); ``rand_b`` comes from the OS's random source, drawn in batches. Built as text:
    ``str(uuid7())`` was 3.1 µs of an audio frame's 4.7 µs of encoding.
    """
    global _last_id_ms, _id_counter, _id_time, _random_hex, _random_at
    at = _random_at
    if at + _RANDOM_CHARS > len(_random_hex):
        _random_hex = os.urandom(_RANDOM_CHARS * _RANDOM_BATCH // 2).hex()
        at = 0
    _random_at = at + _RANDOM_CHARS
    r = _random_hex[at : at + _RANDOM_CHARS]
    ms = time.time_ns() // 1_000_000
    if ms > _last_id_ms:
        _last_id_ms = ms
        _id_counter = int(r[-3:], 16) & 0x7FF
        _id_time = _id_prefix(ms)
    else:
        _id_counter += 1
        if _id_counter > 0xFFF:  # 2,048+ ids in one millisecond: borrow the next one
            _last_id_ms += 1
            _id_counter = 0
            _id_time = _id_prefix(_last_id_ms)
    return f"{_id_time}{_HEX3[_id_counter]}-{_VARIANT[r[0]]}{r[1:4]}-{r[4:]}"


def _id_prefix(ms: int) -> str:
    h = f"{ms & 0xFFFFFFFFFFFF:012x}"
    return f"{h[:8]}-{h[8:]}-7"


def now_ms() -> float:
    """Epoch milliseconds as a float64: an integer above 2^32 becomes a BigInt in the browser."""
    return time.time() * 1000.0


def error_event_type(request_type: str) -> str:
    """``voicechat.audio.chunk`` -> ``voicechat.audio.error``; unknown requests -> ``error.error``."""
    if request_type == UNKNOWN_REQUEST or "." not in request_type:
        return "error.error"
    return request_type.rsplit(".", 1)[0] + ".error"


def _ext_hook(code: int, data: bytes) -> Any:
    if code == 0:  # JavaScript undefined
        return None
    raise ValueError(f"unsupported MessagePack extension type {code}")


def decode_frame(data: bytes, *, max_bytes: int) -> ClientEvent:
    if len(data) > max_bytes:
        raise ProtocolError(f"Frame of {len(data)} bytes is larger than the limit of {max_bytes} bytes")
    try:
        envelope = msgpack.unpackb(data, raw=False, ext_hook=_ext_hook, strict_map_key=True)
    except Exception:
        raise ProtocolError("Frame is not valid MessagePack") from None
    if not isinstance(envelope, dict):
        raise ProtocolError("Frame must be a MessagePack map")
    event_id = envelope.get("eventId")
    event_id = event_id if isinstance(event_id, str) and event_id else new_id()
    event_type = envelope.get("eventType")
    if not isinstance(event_type, str) or not event_type:
        raise ProtocolError("Frame has no eventType", event_id=event_id)
    if event_type not in CLIENT_EVENTS:
        raise ProtocolError(f"Unknown event type: {event_type}", event_id=event_id)
    session_id = envelope.get("sessionId")
    payload = envelope.get("payload")
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise ProtocolError("payload must be a map", request_type=event_type, event_id=event_id)
    try:
        validated = _VALIDATORS[event_type](payload)
    except _Invalid as error:
        raise ProtocolError(str(error), request_type=event_type, event_id=event_id) from None
    return ClientEvent(event_type, event_id, session_id if isinstance(session_id, str) else "", validated)


class _Invalid(ValueError):
    pass


def _optional_str(payload: dict[str, Any], key: str, limit: int = MAX_FIELD_CHARS) -> str | None:
    value = payload.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Invalid(f"{key} must be a string")
    if len(value) > limit:
        raise _Invalid(f"{key} is longer than {limit} characters")
    return value


def _audio_start(payload: dict[str, Any]) -> dict[str, Any]:
    rate = payload.get("samplingRate")
    if rate is None:
        rate = DEFAULT_SAMPLING_RATE
    if (
        isinstance(rate, bool)
        or not isinstance(rate, int)
        or not MIN_SAMPLING_RATE <= rate <= MAX_SAMPLING_RATE
    ):
        raise _Invalid(f"samplingRate must be a whole number from {MIN_SAMPLING_RATE} to {MAX_SAMPLING_RATE}")
    return {
        "samplingRate": rate,
        "voiceId": _optional_str(payload, "voiceId"),
        "language": _optional_str(payload, "language", 20),
    }


def _audio_chunk(payload: dict[str, Any]) -> dict[str, Any]:
    audio = payload.get("audio")
    if not isinstance(audio, bytes):
        raise _Invalid("audio must be binary PCM (MessagePack bin)")
    muted = payload.get("isMuted")
    if muted is not None and not isinstance(muted, bool):
        raise _Invalid("isMuted must be true or false")
    return {"audio": audio, "isMuted": bool(muted)}


def _audio_end(payload: dict[str, Any]) -> dict[str, Any]:
    return {}


def _text_input(payload: dict[str, Any]) -> dict[str, Any]:
    text = payload.get("text")
    if not isinstance(text, str) or not text.strip():
        raise _Invalid("text must be a non-empty string")
    if len(text) > MAX_TEXT_CHARS:
        raise _Invalid(f"text is longer than {MAX_TEXT_CHARS} characters")
    return {"text": text}


def _session_update(payload: dict[str, Any]) -> dict[str, Any]:
    prospect = payload.get("prospect")
    cleaned: dict[str, str] | None = None
    if prospect is not None:
        if not isinstance(prospect, dict):
            raise _Invalid("prospect must be a map")
        cleaned = {}
        for key in PROSPECT_FIELDS:
            value = _optional_str(prospect, key)
            if value is not None and value.strip():  # a blank field says nothing about the prospect
                cleaned[key] = value.strip()
    turn_detection = payload.get("turnDetection")
    if turn_detection is not None and turn_detection not in TURN_DETECTION_MODES:
        raise _Invalid('turnDetection must be "client" or "server"')
    return {
        "prospect": cleaned,
        "voiceId": _optional_str(payload, "voiceId"),
        "language": _optional_str(payload, "language", 20),
        "turnDetection": turn_detection,
    }


_VALIDATORS = {
    AUDIO_START: _audio_start,
    AUDIO_CHUNK: _audio_chunk,
    AUDIO_END: _audio_end,
    TEXT_INPUT: _text_input,
    SESSION_UPDATE: _session_update,
}

_packb = msgpack.Packer(use_bin_type=True).pack  # one Packer: no per-frame set-up


def _frame(event_type: str, event_id: str, session_id: str, payload: dict[str, Any]) -> bytes:
    return _packb({"eventType": event_type, "eventId": event_id, "sessionId": session_id, "payload": payload})


def encode_ack(event_type: str, event_id: str, session_id: str) -> bytes:
    return _frame(event_type, event_id, session_id, {"success": True})


def encode_error(request_type: str, event_id: str | None, session_id: str, message: str) -> bytes:
    return _packb(
        {
            "eventType": error_event_type(request_type),
            "eventId": event_id or new_id(),
            "sessionId": session_id,
            "requestType": request_type,
            "payload": {"message": message},
        }
    )


def encode_connection_ack(session_id: str, capabilities: dict[str, Any] | None = None) -> bytes:
    """``capabilities`` (ext, ignored by the product's client): what this server can do, e.g.
    ``{"speechToText": "whisper tiny.en (local)" | None, "turnDetection": ["client", "server"]}``."""
    payload: dict[str, Any] = {"success": True}
    if capabilities is not None:
        payload["capabilities"] = capabilities
    return _frame(CONNECTION_ACK, new_id(), session_id, payload)


def encode_response_start(session_id: str, utterance_id: str) -> bytes:
    return _frame(RESPONSE_START, new_id(), session_id, {"utteranceId": utterance_id, "timestamp": now_ms()})


def encode_response_chunk(session_id: str, utterance_id: str, audio: bytes, sample_rate: int) -> bytes:
    return _response_chunk(new_id(), session_id, utterance_id, audio, sample_rate)


# An audio frame is most of what the server sends: its envelope is pre-built, so per frame
# only the event id and the audio's length are packed. The bytes are exactly those of
# ``_frame(RESPONSE_CHUNK, ...)`` (same map order), which tests/test_protocol_frames.py checks.
_CHUNK_HEAD = _packb(RESPONSE_CHUNK)


def _response_chunk(
    event_id: str, session_id: str, utterance_id: str, audio: bytes, sample_rate: int
) -> bytes:
    size = len(audio)
    if size < 0x100:
        bin_header = b"\xc4" + size.to_bytes(1, "big")
    elif size < 0x10000:
        bin_header = b"\xc5" + size.to_bytes(2, "big")
    else:
        bin_header = b"\xc6" + size.to_bytes(4, "big")
    return b"".join(
        (
            _CHUNK_PREFIX,
            _packb(event_id),
            _chunk_session_part(session_id),
            bin_header,
            audio,
            _chunk_utterance_part(utterance_id, sample_rate),
        )
    )


_CHUNK_PREFIX = b"\x84" + _packb("eventType") + _CHUNK_HEAD + _packb("eventId")


@functools.lru_cache(maxsize=4096)
def _chunk_session_part(session_id: str) -> bytes:
    # ..."sessionId": <id>, "payload": {"audio": (the bin header and audio follow)
    return _packb("sessionId") + _packb(session_id) + _packb("payload") + b"\x83" + _packb("audio")


@functools.lru_cache(maxsize=4096)
def _chunk_utterance_part(utterance_id: str, sample_rate: int) -> bytes:
    return _packb("utteranceId") + _packb(utterance_id) + _packb("sampleRate") + _packb(sample_rate)


def encode_response_text(session_id: str, utterance_id: str, index: int, text: str) -> bytes:
    return _frame(
        RESPONSE_TEXT, new_id(), session_id, {"utteranceId": utterance_id, "index": index, "text": text}
    )


def encode_response_complete(
    session_id: str, utterance_id: str, metrics: dict[str, Any] | None = None
) -> bytes:
    payload: dict[str, Any] = {"utteranceId": utterance_id}
    if metrics is not None:
        payload["metrics"] = metrics
    return _frame(RESPONSE_COMPLETE, new_id(), session_id, payload)


def encode_response_stop(session_id: str, utterance_id: str) -> bytes:
    return _frame(RESPONSE_STOP, new_id(), session_id, {"utteranceId": utterance_id, "timestamp": now_ms()})


def encode_transcript_user(session_id: str, text: str, message_id: str) -> bytes:
    return _frame(TRANSCRIPT_USER, new_id(), session_id, {"text": text, "messageId": message_id})


def encode_voicechat_error(session_id: str, error_type: str, message: str, retryable: bool) -> bytes:
    return _frame(
        VOICECHAT_ERROR,
        new_id(),
        session_id,
        {"errorType": error_type, "message": message, "retryable": retryable},
    )


def encode_call_ended(session_id: str, reason: str, message: str | None = None) -> bytes:
    payload: dict[str, Any] = {"reason": reason}
    if message:
        payload["message"] = message
    return _frame(CALL_ENDED, new_id(), session_id, payload)


def encode_speech_started(session_id: str, audio_ms: int) -> bytes:
    """ext: server turn detection heard the caller start (``audioMs``: onset in the call's
    audio time since listening began)."""
    return _frame(SPEECH_STARTED, new_id(), session_id, {"timestamp": now_ms(), "audioMs": float(audio_ms)})


def encode_speech_stopped(session_id: str, audio_ms: int) -> bytes:
    """ext: server turn detection decided the caller's turn is over."""
    return _frame(SPEECH_STOPPED, new_id(), session_id, {"timestamp": now_ms(), "audioMs": float(audio_ms)})


def encode_transcript_partial(session_id: str, text: str) -> bytes:
    """ext: interim words of the caller's turn in progress."""
    return _frame(TRANSCRIPT_PARTIAL, new_id(), session_id, {"text": text})
