"""Properties of the chunker over generated replies: tokenization does not matter, nothing
is lost, limits hold, no marker is ever spoken."""

from __future__ import annotations

import itertools
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from llm.chunking import SemanticChunker

WORDS = [
    "hello",
    "Vantum",
    "pricing",
    "3.50",
    "1,200",
    "Dr.",
    "U.S.",
    "e.g.",
    "J.",
    "ok",
    "🎉",
    "naïve",
    "sales@vantum.ai",
    "https://vantum.ai/x",
    "A|B",
    "really",
    "Great",
    "team's",
]
ENDS = [".", "?", "!", "...", ",", ";", ":", " -", ""]
MARKERS = ["||BREAK||", "|| BREAK ||", "||break||", "||Break ||", "|| break||"]
MARKER = re.compile(r"\|\s{0,4}\|\s{0,4}b\s{0,4}r\s{0,4}e\s{0,4}a\s{0,4}k\s{0,4}\|\s{0,4}\|", re.I)
SPOKEN_MARKER = re.compile(r"\|\s*\|\s*b\s*r\s*e\s*a\s*k", re.I)

pieces = st.one_of(
    st.tuples(st.sampled_from(WORDS), st.sampled_from(ENDS)).map(lambda p: p[0] + p[1]),
    st.sampled_from(MARKERS),
)
replies = st.lists(pieces, min_size=1, max_size=60).map(" ".join)
OPTIONS = {"min_chunk_words": 2, "max_chunk_words": 9, "max_chunk_chars": 60}


def run(tokens: list[str]) -> list[str]:
    chunker = SemanticChunker(**OPTIONS)
    out = [c for token in tokens for c in chunker.feed(token)]
    return out + chunker.flush()


def split_at(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts})
    bounds = [0, *points, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def alnum(text: str) -> str:
    return "".join(ch for ch in text if ch.isalnum())


@settings(max_examples=250, deadline=None)
@given(replies, st.lists(st.integers(min_value=0, max_value=10_000), max_size=40))
def test_tokenization_does_not_matter(text, cuts):
    whole = run([text])
    assert run(list(text)) == whole
    assert run(split_at(text, cuts)) == whole


@settings(max_examples=250, deadline=None)
@given(replies)
def test_nothing_is_lost_and_no_marker_is_spoken(text):
    chunks = run([text])
    assert alnum("".join(chunks)) == alnum(MARKER.sub(" ", text))
    assert not any(SPOKEN_MARKER.search(c) for c in chunks)


@settings(max_examples=250, deadline=None)
@given(replies)
def test_chunks_are_within_limits_stripped_and_speakable(text):
    for c in run([text]):
        assert c == c.strip()
        assert any(ch.isalnum() for ch in c)
        if len(c.split()) > 1:
            assert len(c.split()) <= OPTIONS["max_chunk_words"]
            assert len(c) <= OPTIONS["max_chunk_chars"]
