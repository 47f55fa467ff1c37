"""The original spec's per-token chunking loop, transcribed as a benchmark baseline only.

Kept with its defects on purpose (a split on the raw marker, a blind forced flush): it is
what our chunker is compared against, never used by the product.
"""

from __future__ import annotations

BREAK_MARKER = "||BREAK||"
MAX_BUFFER_SIZE = 400


class SpecChunker:
    def __init__(self) -> None:
        self.buffer = ""

    def feed(self, token: str) -> list[str]:
        out: list[str] = []
        self.buffer += token
        if BREAK_MARKER in self.buffer:
            parts = [p.strip() for p in self.buffer.split(BREAK_MARKER)]
            parts = [p for p in parts if p]
            out.extend(parts[:-1])
            self.buffer = parts[-1] if parts else ""
        if len(self.buffer) > MAX_BUFFER_SIZE:
            out.append(self.buffer)
            self.buffer = ""
        return out

    def flush(self) -> list[str]:
        rest, self.buffer = self.buffer.strip(), ""
        return [rest] if rest else []
