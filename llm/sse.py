"""Server-sent events parsed incrementally from raw bytes, and their JSON payloads.

A pure module (no Django, no SDK, no I/O): ``SSEDecoder.feed`` takes whatever a network
read returned and gives back the events it completed, so the caller decides how to read
the body and what to do with each event. It follows the WHATWG event-stream rules the
OpenAI SDK follows: lines end with LF, CRLF or CR (a CRLF split across two reads is one
line ending), a line starting with ``:`` is a comment (keep-alive), ``data:`` lines of one
event are joined with LF, one space after the colon is dropped, a blank line dispatches
the event, and an event without data is not dispatched. An unfinished event when the body
ends is discarded, as the standard says.

Why not the SDK's ``AsyncStream``: it builds a pydantic object per streamed chunk, which
cost ~25x more CPU per token than this decoder plus ``orjson`` (docs/BENCHMARKS.md).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson

# A line or an event this large is not a chat stream: stop before it eats the memory.
MAX_EVENT_BYTES = 8 * 1024 * 1024
DONE = b"[DONE]"


class SSEError(ValueError):
    """The body is not a well-formed event stream (or an event is not the JSON it should be)."""


class ServerSentEvent(NamedTuple):
    event: str | None  # the ``event:`` field, None when absent
    data: bytes  # the ``data:`` lines joined with LF, undecoded


class SSEDecoder:
    """Feed it the body's bytes in any split; it returns each event once it is complete.

    One decoder per stream. ``feed`` never raises for a partial line or event (those wait
    for the next read); it raises ``SSEError`` only when a line or event grows beyond
    ``max_event_bytes``.
    """

    __slots__ = ("_data", "_data_size", "_event", "_max", "_pending", "_started")

    def __init__(self, *, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._pending = b""  # the start of a line whose end has not arrived yet
        self._data: list[bytes] = []
        self._data_size = 0
        self._event: str | None = None
        self._started = False
        self._max = max_event_bytes

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """The events completed by ``chunk`` (often exactly one), in order."""
        if not self._started:
            if not chunk:
                return []
            self._started = True
            if chunk.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark opens the stream
                chunk = chunk[3:]
        if self._pending:
            chunk = self._pending + chunk
        if b"\r" in chunk:
            # A trailing CR may be the first half of a CRLF: keep it until the next read.
            held = chunk.endswith(b"\r")
            if held:
                chunk = chunk[:-1]
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            lines = chunk.split(b"\n")
            self._pending = lines.pop() + b"\r" if held else lines.pop()
        else:
            lines = chunk.split(b"\n")
            self._pending = lines.pop()
        if len(self._pending) > self._max:
            raise SSEError(f"an event-stream line is longer than {self._max} bytes")
        return self._lines(lines) if lines else []

    def finish(self) -> list[ServerSentEvent]:
        """At the end of the body: a last line without its line ending still counts; an event
        that never got its blank line is dropped."""
        pending, self._pending = self._pending, b""
        events = self._lines(pending.rstrip(b"\r").split(b"\n")) if pending else []
        self._data, self._data_size, self._event = [], 0, None
        return events

    def _lines(self, lines: list[bytes]) -> list[ServerSentEvent]:
        events: list[ServerSentEvent] = []
        for line in lines:
            if not line:
                if self._data:
                    data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
                    events.append(ServerSentEvent(self._event, data))
                    self._data, self._data_size = [], 0
                self._event = None
                continue
            if line[0] == 0x3A:  # ":" a comment, e.g. a keep-alive
                continue
            name, _, value = line.partition(b":")
            if value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                self._data.append(value)
                self._data_size += len(value)
                if self._data_size > self._max:
                    raise SSEError(f"an event-stream event is longer than {self._max} bytes")
            elif name == b"event":
                self._event = value.decode("utf-8", "replace")
            # "id", "retry" and unknown fields mean nothing to a chat stream.
        return events


def is_done(event: ServerSentEvent) -> bool:
    """OpenAI's end-of-stream sentinel ``data: [DONE]`` (compared as the SDK does)."""
    return event.data.startswith(DONE)


def json_object(event: ServerSentEvent) -> dict[str, Any]:
    """The event's data as a JSON object; ``SSEError`` when it is not one."""
    try:
        payload = orjson.loads(event.data)
    except orjson.JSONDecodeError as error:
        raise SSEError(f"an event's data is not JSON ({error}): {event.data[:80]!r}") from None
    if type(payload) is not dict:
        raise SSEError(f"an event's data is not a JSON object: {event.data[:80]!r}")
    return payload


def stream_error(payload: dict[str, Any]) -> tuple[str, object] | None:
    """For the ``{"error": {...}}`` event a server sends when it fails mid-stream:
    (message, the error body); None for any other payload. Same rule as the SDK's."""
    error = payload.get("error")
    if not error:
        return None
    message = error.get("message") if isinstance(error, dict) else None
    if not message or not isinstance(message, str):
        message = "An error occurred during streaming"
    return message, error
