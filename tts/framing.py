"""Cut synthesized PCM into frames for the socket. Pure."""

from __future__ import annotations

from collections.abc import Iterator


class PcmFramer:
    """Frames of whole s16le samples, each at most ``frame_ms`` and ``max_frame_bytes``.

    Engines deliver blocks of any size, sometimes with an odd byte count; an odd trailing
    byte is carried into the next block and never sent (half a sample would shift every
    later sample by one byte and turn the rest of the reply into noise). Frames go out as
    soon as a block arrives, so the first audio is not held back for a whole block.
    """

    def __init__(self, sample_rate: int, frame_ms: int, max_frame_bytes: int) -> None:
        if sample_rate <= 0 or frame_ms <= 0 or max_frame_bytes < 2:
            raise ValueError("sample_rate, frame_ms and max_frame_bytes must be positive")
        frame_bytes = sample_rate * frame_ms // 1000 * 2
        self.frame_bytes = max(2, min(frame_bytes, max_frame_bytes - max_frame_bytes % 2))
        self._carry = b""

    def feed(self, block: bytes) -> Iterator[bytes]:
        data = self._carry + block if self._carry else block
        usable = len(data) - len(data) % 2
        self._carry = data[usable:]
        step = self.frame_bytes
        for start in range(0, usable, step):
            yield data[start : min(start + step, usable)]

    def flush(self) -> Iterator[bytes]:
        """End of the chunk: a lone odd byte left over is dropped."""
        self._carry = b""
        return iter(())
