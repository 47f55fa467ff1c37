"""The semantic chunker: a streamed model reply -> speakable chunks, while it streams.

Pure Python, no Django. One ``SemanticChunker`` per reply stream (never shared between
calls); ``flush()`` ends a response and readies it for the next.

How cuts are decided
--------------------
1. ``||BREAK||`` markers are authoritative: any case, up to four spaces around each part
   (``|| break ||``), split across any number of tokens. A chunk is emitted the moment
   the marker's last character arrives. Only the shortest suffix that could still become
   a marker is held back; at the end of a response a dangling ``||BRE`` is dropped.
2. Limits: no chunk exceeds ``max_chunk_words`` / ``max_chunk_chars``. When pending text
   outgrows them, the cut goes at the last sentence end that fits, else the last clause
   break (``,`` ``;`` ``:`` dash), else the last space. Cuts never fall inside a word,
   number, URL or e-mail (they contain no space), after an abbreviation (``Dr.``,
   ``e.g.``), an initial (``J.``) or a ``?``/``!``/``...`` that lower-case text continues.
   A single word longer than ``max_chunk_chars`` (a long URL) is emitted whole: cutting
   it would speak nonsense.
3. Before the first marker of a response, a finished sentence of at least
   ``min_chunk_words`` words is emitted at once (``fallback_mode="sentence"``): a model
   that ignores the marker instruction still starts speaking early. Once a marker has
   been seen, only markers and limits cut. At the end of a response without markers the
   rest is split at sentence ends, short sentences merged into the next.
4. Chunks are trimmed; empty and punctuation-only chunks are dropped.
5. Every decision depends on the text alone, never on where tokens split it: each cut is
   taken at the first *content position* where it becomes decidable, so feeding a reply
   in one piece or character by character gives the same chunks.

Work per token is amortised O(1): text is scanned once as it arrives; the rare limit
cut looks only at a window bounded by the limits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

BREAK_MARKER = "||BREAK||"
FALLBACK_MODES = ("sentence", "complete")
MAX_MARKER_SPACES = 4

_TERMINATORS = ".!?…"
_CLOSERS = "\"'”’)]}»"
_TERMINATOR_RUN = re.compile(r"[.!?…]+[\"'”’)\]}»]*")
_WORD_BEFORE = re.compile(r"(\S+)\Z")
# Abbreviations after which a sentence never ends.
_NEVER_END = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "mt",
        "vs",
        "e.g",
        "i.e",
        "cf",
        "fig",
        "approx",
        "no",
        "nos",
        "dept",
        "est",
        "ft",
        "lt",
        "col",
        "gen",
        "gov",
        "sgt",
        "rev",
    ]
)
# Abbreviations that end a sentence only when a capitalised word follows.
_END_IF_CAPITAL = frozenset(
    [
        "etc",
        "a.m",
        "p.m",
        "u.s",
        "u.k",
        "inc",
        "ltd",
        "co",
        "corp",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
    ]
)
_DASHES = ("-", "–", "—")
_SPEAKABLE = re.compile(r"[^\W_]")


@dataclass(frozen=True, slots=True)
class _MarkerPatterns:
    full: re.Pattern[str]
    partial: re.Pattern[str]


def _marker_patterns(marker: str) -> _MarkerPatterns:
    """A tolerant regex for ``marker`` and one matching any unfinished prefix of it.

    Each run of the marker's punctuation and its word may be separated by up to
    ``MAX_MARKER_SPACES`` whitespace characters; letters match in any case.
    """
    parts = re.findall(r"[^\W_]+|\S", marker)
    if not parts:
        raise ValueError("break_marker: must contain at least one visible character")
    gap = rf"\s{{0,{MAX_MARKER_SPACES}}}"
    pieces: list[str] = []
    for n, part in enumerate(parts):
        if n:
            pieces.append(gap)
        pieces.extend(re.escape(ch) for ch in part)
    full = re.compile("".join(pieces), re.IGNORECASE)
    # Any proper prefix: p0(?:p1(?:p2...)?)?  -- the last piece would complete the marker.
    partial = ""
    for piece in reversed(pieces[:-1]):
        partial = f"{piece}(?:{partial})?" if partial else piece
    return _MarkerPatterns(full, re.compile(partial + r"\Z", re.IGNORECASE))


def _is_speakable(text: str) -> bool:
    return bool(_SPEAKABLE.search(text))


class SemanticChunker:
    """Turns a token stream into chunks. See the module docstring for the rules."""

    def __init__(
        self,
        *,
        break_marker: str = BREAK_MARKER,
        min_chunk_words: int = 5,
        max_chunk_words: int = 50,
        max_chunk_chars: int = 300,
        max_buffer_size: int = 400,
        fallback_mode: str = "sentence",
    ) -> None:
        if not break_marker or not break_marker.strip():
            raise ValueError("break_marker: must not be empty")
        if min_chunk_words < 1:
            raise ValueError("min_chunk_words: must be at least 1")
        if max_chunk_words < min_chunk_words:
            raise ValueError("max_chunk_words: must be at least min_chunk_words")
        if max_chunk_chars < 20:
            raise ValueError("max_chunk_chars: must be at least 20")
        if max_buffer_size < max_chunk_chars:
            raise ValueError("max_buffer_size: must be at least max_chunk_chars")
        if fallback_mode not in FALLBACK_MODES:
            raise ValueError(f"fallback_mode: must be one of {', '.join(FALLBACK_MODES)}")
        self.break_marker = break_marker
        self.min_chunk_words = min_chunk_words
        self.max_chunk_words = max_chunk_words
        self.max_chunk_chars = max_chunk_chars
        # A marker-less buffer is bounded by the chunk limits already, which are stricter;
        # ``max_buffer_size`` stays as the spec's safety valve on the held text.
        self.max_buffer_size = max_buffer_size
        self.fallback_mode = fallback_mode
        self._markers = _marker_patterns(break_marker)
        self._marker_start = re.compile(re.escape(break_marker[0]))
        self._reset()

    # ------------------------------------------------------------------ public
    @property
    def saw_marker(self) -> bool:
        """Whether the current response has had a marker so far."""
        return self._saw_marker

    def feed(self, token: str) -> list[str]:
        """Add streamed text; returns the chunks it finished, in order."""
        out: list[str] = []
        if not token:
            return out
        text = self._hold + token if self._hold else token
        self._hold = ""
        if not self._marker_start.search(text):
            self._append(text, out)
            return out
        position = 0
        for match in self._markers.full.finditer(text):
            self._append(text[position : match.start()], out)
            self._cut_at_marker(out)
            position = match.end()
        rest = text[position:]
        held_from = self._partial_marker_start(rest)
        if held_from is not None:
            self._hold = rest[held_from:]
            rest = rest[:held_from]
        self._append(rest, out)
        return out

    def flush(self) -> list[str]:
        """End of the response: the remaining chunks. The chunker is then ready for a new one."""
        out: list[str] = []
        hold = self._hold
        self._hold = ""
        if hold and not self._is_marker_remnant(hold):
            self._append(hold, out)
        self._settle(out, at_end=True)
        self._emit(self._pending, out)
        self._reset()
        return out

    # ------------------------------------------------------------------ state
    def _reset(self) -> None:
        self._pending = ""  # settled text of the chunk being built
        self._hold = ""  # a suffix that may still become a marker
        self._words = 0  # words in _pending
        self._scan = 0  # where the search for sentence ends resumes in _pending
        self._saw_marker = False

    def _append(self, text: str, out: list[str]) -> None:
        if not text:
            return
        if not self._pending:
            text = text.lstrip()
            if not text:
                return
            self._words = 0
            self._scan = 0
        added = len(text.split())
        if added and not text[0].isspace() and self._pending and not self._pending[-1].isspace():
            added -= 1  # the token continues the last word
        self._pending += text
        self._words += added
        self._settle(out, at_end=False)

    def _cut_at_marker(self, out: list[str]) -> None:
        self._saw_marker = True
        self._settle(out, at_end=True)
        self._emit(self._pending, out)
        self._pending = ""
        self._words = 0
        self._scan = 0

    def _partial_marker_start(self, text: str) -> int | None:
        """Index of the earliest suffix of ``text`` that is an unfinished marker."""
        window = len(self.break_marker) + 4 * MAX_MARKER_SPACES
        start = max(0, len(text) - window)
        first = self.break_marker[0]
        index = text.find(first, start)
        while index != -1:
            if self._markers.partial.match(text, index):
                return index
            index = text.find(first, index + 1)
        return None

    def _is_marker_remnant(self, hold: str) -> bool:
        """A truncated marker at the very end: drop it unless it is a lone first character."""
        return len(hold.strip()) > 1

    # ------------------------------------------------------------------ cutting
    def _settle(self, out: list[str], *, at_end: bool) -> None:
        """Take every cut that is decidable in ``_pending``, earliest content position first.

        ``at_end``: nothing more will be appended to ``_pending`` (end of response, or a
        marker follows), so the end of the text is a decision point too.
        """
        sentences = self.fallback_mode == "sentence" and not self._saw_marker
        while self._pending:
            over_limit = self._exceeds_limits()
            sentence_cut = self._next_sentence_cut(at_end) if sentences else None
            if sentence_cut is not None and (not over_limit or sentence_cut <= self._fit_length()):
                self._take(sentence_cut, out)
                continue
            if over_limit:
                cut = self._limit_cut(at_end)
                if cut is None:
                    return
                self._take(cut, out)
                continue
            return

    def _take(self, cut: int, out: list[str]) -> None:
        head, rest = self._pending[:cut], self._pending[cut:].lstrip()
        self._emit(head, out)
        self._pending = rest
        self._words = len(rest.split())
        self._scan = 0

    def _emit(self, text: str, out: list[str]) -> None:
        text = text.strip()
        if text and _is_speakable(text):
            out.append(text)

    def _exceeds_limits(self) -> bool:
        return self._words > self.max_chunk_words or len(self._pending.rstrip()) > self.max_chunk_chars

    def _fit_length(self) -> int:
        """Length of the longest prefix of ``_pending`` within both limits."""
        text = self._pending
        limit = min(len(text), self.max_chunk_chars)
        if self._words > self.max_chunk_words:
            # End of the last allowed word: the start of word max+1, minus its spaces.
            for count, match in enumerate(re.finditer(r"\S+", text), start=1):
                if count == self.max_chunk_words + 1:
                    limit = min(limit, match.start())
                    break
        return limit

    def _next_sentence_cut(self, at_end: bool) -> int | None:
        """The first decided sentence end with at least ``min_chunk_words`` words before it."""
        text = self._pending
        for match in _TERMINATOR_RUN.finditer(text, self._scan):
            end = match.end()
            verdict = self._sentence_ends_at(text, match.start(), end, at_end)
            if verdict is None:  # needs text that has not arrived
                self._scan = match.start()
                return None
            if verdict and len(text[:end].split()) >= self.min_chunk_words:
                return end
        self._scan = max(0, len(text) - 1)
        return None

    def _sentence_ends_at(self, text: str, start: int, end: int, at_end: bool) -> bool | None:
        """Whether a terminator run text[start:end] ends a sentence; None when undecidable yet."""
        following = _next_visible(text, end)
        if following is None:
            if end < len(text) or at_end:
                return True if at_end else None
            return None
        if following == end:  # no space after: 3.50, vantum.ai, "?!" mid-token
            return False
        next_char = text[following]
        run = text[start:end].rstrip(_CLOSERS)
        if next_char.islower():
            return False  # "Really? yes", "approx. ten", "etc. and"
        if run.endswith(".") and not run.endswith("..."):
            word = _WORD_BEFORE.search(text, 0, start)
            stem = word.group(1).lstrip("\"'“‘([{").rstrip(".").lower() if word else ""
            if stem in _NEVER_END:
                return False
            if len(stem) == 1 and stem.isalpha():
                return False  # an initial: J. R. Martinez
            if stem in _END_IF_CAPITAL:
                return next_char.isupper()
        return (
            next_char.isupper() or next_char.isdigit() or next_char in "\"'“‘([{¿¡" or not next_char.isalpha()
        )

    def _limit_cut(self, at_end: bool) -> int | None:
        """Where to cut pending text that outgrew a limit (None: wait for more text)."""
        text = self._pending
        fit = self._fit_length()
        window = text[: fit + 1]
        best_sentence = best_clause = best_space = fallback_space = None
        for match in _TERMINATOR_RUN.finditer(window):
            end = match.end()
            if end <= fit and end < len(window) and self._sentence_ends_at(window, match.start(), end, False):
                best_sentence = end
        if best_sentence is not None:
            return best_sentence
        for index in range(1, min(fit, len(window) - 1) + 1):
            if not window[index].isspace() or window[index - 1].isspace():
                continue
            previous = window[index - 1]
            if previous in ",;:" or (
                window[index - 1] in _DASHES and index >= 2 and window[index - 2].isspace()
            ):
                best_clause = index
            if self._space_cut_allowed(window, index):
                best_space = index
            fallback_space = index
        for cut in (best_clause, best_space, fallback_space):
            if cut is not None and text[:cut].strip():
                return cut
        # One word longer than the limit: emit it whole once it has ended.
        end_of_word = re.search(r"\s", text)
        if end_of_word is not None:
            return end_of_word.start()
        return len(text) if at_end else None

    @staticmethod
    def _space_cut_allowed(window: str, index: int) -> bool:
        """No cut after an abbreviation or initial, nor after ?/!/... that lower-case continues."""
        word = _WORD_BEFORE.search(window, 0, index)
        if word is None:
            return True
        previous_word = word.group(1)
        following = _next_visible(window, index)
        lower_next = following is not None and window[following].islower()
        stem = previous_word.rstrip(_CLOSERS)
        if stem.endswith(tuple(_TERMINATORS)):
            bare = stem.rstrip(_TERMINATORS).lstrip("\"'“‘([{").lower()
            if lower_next or bare in _NEVER_END or (len(bare) == 1 and bare.isalpha()):
                return False
        return True


def _next_visible(text: str, index: int) -> int | None:
    """Index of the first non-space character at or after ``index``, or None."""
    length = len(text)
    while index < length:
        if not text[index].isspace():
            return index
        index += 1
    return None
