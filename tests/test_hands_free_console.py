"""The console page chooses hands-free by default, and says before anyone presses a button
when there is no speech-to-text engine."""

from __future__ import annotations

import re

import pytest

from tests.support import BeepEngine, CannedTranscriber, Script, ScriptedProvider

pytestmark = [pytest.mark.django_db]


def _tag(html: str, testid: str) -> str:
    match = re.search(rf'<[^>]*data-testid="{testid}"[^>]*>', html, re.S)
    assert match, testid
    return match.group(0)


def test_with_speech_to_text_the_console_is_hands_free_by_default(client, use_engines):
    use_engines(chat=ScriptedProvider([Script()]), speech=BeepEngine(), transcriber=CannedTranscriber("hi"))
    html = client.get("/").content.decode()
    assert "checked" in _tag(html, "mode-hands-free")
    assert "checked" not in _tag(html, "mode-hold")
    assert "disabled" not in _tag(html, "mode")
    assert 'data-testid="no-stt"' not in html
    assert "<dd>canned</dd>" in html


def test_without_speech_to_text_the_microphone_controls_say_so_before_anyone_presses(client, use_engines):
    engines = use_engines(chat=ScriptedProvider([Script()]), speech=BeepEngine())
    engines.transcriber = None  # STT_ENGINE=none
    html = client.get("/").content.decode()
    assert "disabled" in _tag(html, "mode")
    assert "disabled" in _tag(html, "talk")
    assert "Speech to text is not configured on this server" in _tag(html, "talk")
    notice = re.search(r'data-testid="no-stt">([^<]*)<', html).group(1)
    assert notice == (
        "Speech to text is not configured on this server: the microphone is off and turns are typed."
    )
