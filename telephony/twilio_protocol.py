"""Twilio Media Streams messages (bidirectional ``<Connect><Stream>``). Pure: no Django.

Twilio sends JSON text frames: ``connected``, ``start``, ``media``, ``mark``, ``dtmf``,
``stop``. We send ``media`` (base64 μ-law 8 kHz), ``mark`` (Twilio echoes it back once the
audio before it has played) and ``clear`` (drop the audio Twilio still buffers).

``parse_message`` turns one frame into a typed event or raises ``TwilioProtocolError`` with
a message naming what is wrong: bad JSON, an unknown event, a missing field, base64 garbage.
It never raises anything else, whatever the input.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

MAX_MESSAGE_CHARS = 64 * 1024  # a 20 ms media frame is ~300 characters; start is < 4 KB


class TwilioProtocolError(ValueError):
    """A frame we cannot use; ``str()`` says why (logged, never sent to the caller)."""


@dataclass(frozen=True)
class Connected:
    protocol: str
    version: str


@dataclass(frozen=True)
class Start:
    stream_sid: str
    call_sid: str
    account_sid: str
    encoding: str
    sample_rate: int
    channels: int
    tracks: tuple[str, ...]
    custom_parameters: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Media:
    stream_sid: str
    payload: bytes  # μ-law bytes, decoded from base64
    track: str
    chunk: int | None
    timestamp_ms: int | None


@dataclass(frozen=True)
class Mark:
    stream_sid: str
    name: str


@dataclass(frozen=True)
class Dtmf:
    stream_sid: str
    digit: str
    track: str


@dataclass(frozen=True)
class Stop:
    stream_sid: str
    call_sid: str


TwilioEvent = Connected | Start | Media | Mark | Dtmf | Stop

DTMF_DIGITS = frozenset("0123456789*#ABCD")


def parse_message(text: str | bytes | None) -> TwilioEvent:
    """One frame from Twilio -> its event. Raises ``TwilioProtocolError`` on any bad input."""
    if text is None:
        raise TwilioProtocolError("empty frame")
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise TwilioProtocolError("binary frame that is not UTF-8 JSON") from None
    if len(text) > MAX_MESSAGE_CHARS:
        raise TwilioProtocolError(f"frame of {len(text)} characters is over {MAX_MESSAGE_CHARS}")
    try:
        message = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise TwilioProtocolError(f"not JSON: {error}") from None
    if not isinstance(message, dict):
        raise TwilioProtocolError("a message must be a JSON object")
    event = message.get("event")
    parser = _PARSERS.get(event) if isinstance(event, str) else None
    if parser is None:
        raise TwilioProtocolError(f"unknown event {event!r}")
    return parser(message)


def _object(message: dict[str, Any], key: str) -> dict[str, Any]:
    value = message.get(key)
    if not isinstance(value, dict):
        raise TwilioProtocolError(f"{message.get('event')}: {key!r} must be an object")
    return value


def _text(obj: dict[str, Any], key: str, where: str, *, required: bool = True) -> str:
    value = obj.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise TwilioProtocolError(f"{where}: {key!r} must be a non-empty string")
    return value


def _optional_int(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _parse_connected(message: dict[str, Any]) -> Connected:
    return Connected(protocol=str(message.get("protocol", "")), version=str(message.get("version", "")))


def _parse_start(message: dict[str, Any]) -> Start:
    start = _object(message, "start")
    media_format = start.get("mediaFormat") or {}
    if not isinstance(media_format, dict):
        raise TwilioProtocolError("start: 'mediaFormat' must be an object")
    parameters = start.get("customParameters") or {}
    if not isinstance(parameters, dict):
        raise TwilioProtocolError("start: 'customParameters' must be an object")
    tracks = start.get("tracks") or ["inbound"]
    if not isinstance(tracks, list):
        raise TwilioProtocolError("start: 'tracks' must be a list")
    sample_rate = _optional_int(media_format.get("sampleRate"))
    channels = _optional_int(media_format.get("channels"))
    return Start(
        stream_sid=_text(start, "streamSid", "start")
        if "streamSid" in start
        else _text(message, "streamSid", "start"),
        call_sid=_text(start, "callSid", "start"),
        account_sid=_text(start, "accountSid", "start", required=False),
        encoding=str(media_format.get("encoding") or "audio/x-mulaw"),
        sample_rate=8000 if sample_rate is None else sample_rate,
        channels=1 if channels is None else channels,
        tracks=tuple(str(t) for t in tracks),
        custom_parameters={str(k): str(v) for k, v in parameters.items()},
    )


def _parse_media(message: dict[str, Any]) -> Media:
    media = _object(message, "media")
    payload = media.get("payload")
    if not isinstance(payload, str):
        raise TwilioProtocolError("media: 'payload' must be a base64 string")
    try:
        audio = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise TwilioProtocolError("media: 'payload' is not valid base64") from None
    return Media(
        stream_sid=str(message.get("streamSid", "")),
        payload=audio,
        track=str(media.get("track") or "inbound"),
        chunk=_optional_int(media.get("chunk")),
        timestamp_ms=_optional_int(media.get("timestamp")),
    )


def _parse_mark(message: dict[str, Any]) -> Mark:
    mark = _object(message, "mark")
    return Mark(stream_sid=str(message.get("streamSid", "")), name=_text(mark, "name", "mark"))


def _parse_dtmf(message: dict[str, Any]) -> Dtmf:
    dtmf = _object(message, "dtmf")
    digit = _text(dtmf, "digit", "dtmf")
    if digit not in DTMF_DIGITS:
        raise TwilioProtocolError(f"dtmf: {digit!r} is not a DTMF digit")
    return Dtmf(stream_sid=str(message.get("streamSid", "")), digit=digit, track=str(dtmf.get("track", "")))


def _parse_stop(message: dict[str, Any]) -> Stop:
    stop = message.get("stop") if isinstance(message.get("stop"), dict) else {}
    return Stop(stream_sid=str(message.get("streamSid", "")), call_sid=str(stop.get("callSid", "")))


_PARSERS = {
    "connected": _parse_connected,
    "start": _parse_start,
    "media": _parse_media,
    "mark": _parse_mark,
    "dtmf": _parse_dtmf,
    "stop": _parse_stop,
}


# ---------------------------------------------------------------- messages we send
def build_media(stream_sid: str, ulaw: bytes) -> str:
    """Audio for the caller: μ-law 8 kHz (whole 20 ms frames), base64 in JSON."""
    return json.dumps(
        {
            "event": "media",
            "streamSid": stream_sid,
            "media": {"payload": base64.b64encode(ulaw).decode("ascii")},
        }
    )


def build_mark(stream_sid: str, name: str) -> str:
    """Twilio echoes this mark back once everything sent before it has played."""
    return json.dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


def build_clear(stream_sid: str) -> str:
    """Drop the audio Twilio still has buffered for the caller (barge-in); pending marks
    come back at once."""
    return json.dumps({"event": "clear", "streamSid": stream_sid})
