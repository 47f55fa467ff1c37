"""What the speech engine is given: text as a caller should hear it. Pure.

Models write markdown and emoji now and then; read aloud, ``**`` or a bullet dash is
noise. The transcript keeps the text as written; only speech gets the cleaned text.
"""

from __future__ import annotations

import re
import unicodedata

_LINK = re.compile(r"\[([^\]]*)\]\((?:[^)\s]+)\)")
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_CODE = re.compile(r"`+([^`]*)`+")
_TAG = re.compile(r"</?[A-Za-z][^<>]{0,200}>")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s*", re.MULTILINE)
_QUOTE = re.compile(r"^\s{0,3}>\s?", re.MULTILINE)
_BULLET = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)])\s+", re.MULTILINE)
_EMPHASIS = re.compile(r"(\*\*|__|\*|_|~~)(?=\S)(.+?)(?<=\S)\1")
_RULE = re.compile(r"^\s*(?:[-*_]\s*){3,}$", re.MULTILINE)
_PIPES = re.compile(r"\|\|+")
_SPACES = re.compile(r"[ \t\u00a0]+")
_SPEAKABLE = re.compile(r"[^\W_]", re.UNICODE)


def _is_pictograph(char: str) -> bool:
    if char in "\u200d\ufe0f\ufe0e\u20e3":  # joiners and variation selectors of emoji
        return True
    code = ord(char)
    if 0x1F000 <= code <= 0x1FAFF or 0x2600 <= code <= 0x27BF or 0x1F1E6 <= code <= 0x1F1FF:
        return True
    return unicodedata.category(char) == "So"


def clean_for_speech(text: str) -> str:
    """Text without markdown, markup, emoji or marker pipes; "" when nothing is speakable."""
    text = _IMAGE.sub(r"\1", text)
    text = _LINK.sub(r"\1", text)
    text = _CODE.sub(r"\1", text)
    text = _TAG.sub(" ", text)
    text = _RULE.sub(" ", text)
    text = _HEADING.sub("", text)
    text = _QUOTE.sub("", text)
    text = _BULLET.sub("", text)
    for _ in range(2):  # nested emphasis: ***x*** or **_x_**
        text = _EMPHASIS.sub(r"\2", text)
    text = _PIPES.sub(" ", text)
    text = "".join(" " if _is_pictograph(c) else c for c in text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.splitlines()]
    text = " ".join(line for line in lines if line)
    return text if _SPEAKABLE.search(text) else ""
