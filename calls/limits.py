"""Per-client limits: one caller must not hurt the others.

- ``client_address``: the caller's address (``vantum.client_address``: a forwarding header
  is believed only from a trusted proxy).
- ``AddressSlots``: calls at once per client address (``VANTUM_MAX_CALLS_PER_ADDRESS``).
- ``TurnRate``: turns a minute per call (``VANTUM_MAX_TURNS_PER_MINUTE``).
- ``BufferBudget``: bytes of caller audio buffered at once by the whole process
  (``VANTUM_MAX_AUDIO_BUFFER_BYTES``).
- ``FrameBudget``: frames and bytes a second per call, checked before any decoding, so a
  flooder's frames are dropped for the price of a subtraction; a call that stays far over
  budget is closed.

Pure bookkeeping (no I/O), one instance per process or per call, used from the event loop.
"""

from __future__ import annotations

import time
from collections import deque

from django.conf import settings

from vantum.client_address import client_address

UNKNOWN_ADDRESS = ""  # what client_address gives for a peer it cannot name (unix socket)

__all__ = ["AddressSlots", "BufferBudget", "FrameBudget", "TurnRate", "client_address"]


class AddressSlots:
    """Calls at once per client address; ``limit`` 0 means no limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._counts: dict[str, int] = {}

    def acquire(self, address: str) -> bool:
        count = self._counts.get(address, 0)
        if self.limit and count >= self.limit:
            return False
        self._counts[address] = count + 1
        return True

    def release(self, address: str) -> None:
        count = self._counts.get(address, 0) - 1
        if count > 0:
            self._counts[address] = count
        else:
            self._counts.pop(address, None)

    def count(self, address: str) -> int:
        return self._counts.get(address, 0)


class TurnRate:
    """At most ``per_minute`` turns in any 60 s window; 0 means no limit."""

    def __init__(self, per_minute: int, *, clock=time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._times: deque[float] | None = None  # made at the first turn (memory of idle calls)

    def allow(self) -> bool:
        if not self.per_minute:
            return True
        if self._times is None:
            self._times = deque()
        now = self.clock()
        while self._times and now - self._times[0] >= 60.0:
            self._times.popleft()
        if len(self._times) >= self.per_minute:
            return False
        self._times.append(now)
        return True

    def retry_after(self) -> float:
        """Seconds until the next turn would be allowed."""
        if not self._times or len(self._times) < self.per_minute:
            return 0.0
        return max(0.0, 60.0 - (self.clock() - self._times[0]))


class BufferBudget:
    """Bytes buffered at once across the process (caller audio waiting for transcription);
    ``limit`` 0 means no limit. A call reserves before it buffers and releases when done."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def reserve(self, nbytes: int) -> bool:
        if self.limit and self.used + nbytes > self.limit:
            return False
        self.used += nbytes
        return True

    def release(self, nbytes: int) -> None:
        self.used = max(0, self.used - nbytes)


class FrameBudget:
    """Token buckets of frames and bytes a second (bursts of two seconds' worth).

    ``allow(size)`` is a few arithmetic operations: call it before decoding a frame. After
    ``close_after`` seconds spent mostly over budget, ``abusive`` turns True and the caller
    should close the connection (policy violation) rather than keep paying for it.
    """

    def __init__(
        self,
        *,
        frames_per_second: int,
        bytes_per_second: int,
        close_after: float = 10.0,
        clock=time.monotonic,
    ) -> None:
        self.frame_rate = float(frames_per_second)
        self.byte_rate = float(bytes_per_second)
        self.clock = clock
        self.frames = 2.0 * self.frame_rate
        self.bytes = 2.0 * self.byte_rate
        self.updated = clock()
        self.close_after = close_after
        self.over_since: float | None = None
        self.dropped = 0

    def allow(self, size: int) -> bool:
        now = self.clock()
        elapsed = now - self.updated
        self.updated = now
        self.frames = min(2.0 * self.frame_rate, self.frames + elapsed * self.frame_rate)
        self.bytes = min(2.0 * self.byte_rate, self.bytes + elapsed * self.byte_rate)
        if self.frames >= 1.0 and self.bytes >= size:
            self.frames -= 1.0
            self.bytes -= size
            if self.over_since is not None and self.frames >= self.frame_rate:
                self.over_since = None  # back under budget for a second's worth
            return True
        self.dropped += 1
        if self.over_since is None:
            self.over_since = now
        return False

    @property
    def abusive(self) -> bool:
        return self.over_since is not None and self.clock() - self.over_since >= self.close_after


# ---------------------------------------------------------------- this process's instances

_address_slots: AddressSlots | None = None
_audio_buffer: BufferBudget | None = None


def address_slots() -> AddressSlots:
    """Calls per client address in this process (limit read from settings each time)."""
    global _address_slots
    if _address_slots is None:
        _address_slots = AddressSlots(settings.VANTUM_MAX_CALLS_PER_ADDRESS)
    _address_slots.limit = settings.VANTUM_MAX_CALLS_PER_ADDRESS
    return _address_slots


def audio_buffer() -> BufferBudget:
    """Caller audio buffered by all calls of this process."""
    global _audio_buffer
    if _audio_buffer is None:
        _audio_buffer = BufferBudget(settings.VANTUM_MAX_AUDIO_BUFFER_BYTES)
    _audio_buffer.limit = settings.VANTUM_MAX_AUDIO_BUFFER_BYTES
    return _audio_buffer
