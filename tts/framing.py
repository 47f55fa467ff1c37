"""Cut synthesized PCM into frames for the socket. Pure."""

from __future__ import annotations

from collections.abc import Iterator


class PcmFramer:
    """Frames of whole s16le samples, each at most ``frame_ms`` and ``max_frame_bytes``.

    Engines deliver blocks of any size, sometimes with an odd byte count; an odd trailing
    byte is carried into the next block and never sent (half a sample would shift every
    later sample by one byte and turn the rest of the reply into noise). Frames go out as
    soon as a block arrives, so the first audio is not held back for a whole block.

    Adaptive frames (``max_frame_ms`` above ``frame_ms``): the first frame is at most
    ``frame_ms``, and each later one may be twice as long as the one before, up to
    ``max_frame_ms``. The first audio leaves as early as before; later audio, which is
    synthesized ahead of playback anyway, goes in fewer, larger frames (a client that
    starts each frame only after the previous one ended hears fewer gaps, and the server
    sends fewer messages). Keep one framer per reply so the growth spans its chunks;
    ``flush`` at the end of each chunk.
    """

    def __init__(
        self, sample_rate: int, frame_ms: int, max_frame_bytes: int, *, max_frame_ms: int | None = None
    ) -> None:
        if sample_rate <= 0 or frame_ms <= 0 or max_frame_bytes < 2:
            raise ValueError("sample_rate, frame_ms and max_frame_bytes must be positive")
        if max_frame_ms is not None and max_frame_ms < frame_ms:
            raise ValueError(f"max_frame_ms ({max_frame_ms}) must be at least frame_ms ({frame_ms})")
        cap = max_frame_bytes - max_frame_bytes % 2
        self.frame_bytes = max(2, min(sample_rate * frame_ms // 1000 * 2, cap))
        largest = sample_rate * (max_frame_ms or frame_ms) // 1000 * 2
        self.max_frame_bytes = max(self.frame_bytes, min(largest, cap))
        self._carry = b""

    def feed(self, block: bytes) -> Iterator[bytes]:
        data = self._carry + block if self._carry else block
        usable = len(data) - len(data) % 2
        self._carry = data[usable:]
        start = 0
        while start < usable:
            step = self.frame_bytes
            yield data[start : min(start + step, usable)]
            start += step
            if step < self.max_frame_bytes:
                self.frame_bytes = min(2 * step, self.max_frame_bytes)

    def flush(self) -> Iterator[bytes]:
        """End of the chunk: a lone odd byte left over is dropped."""
        self._carry = b""
        return iter(())
