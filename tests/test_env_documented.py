"""Every environment variable the code reads is documented in .env.example."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READ_PATTERNS = (
    re.compile(r"""\benv_(?:str|int|float|bool|list)\(\s*["']([A-Z][A-Z0-9_]*)["']"""),
    re.compile(r"""\b_ms\(\s*["']([A-Z][A-Z0-9_]*)["']"""),
    re.compile(r"""os\.environ(?:\.get)?[\[(]\s*["']([A-Z][A-Z0-9_]*)["']"""),
    re.compile(r"""os\.getenv\(\s*["']([A-Z][A-Z0-9_]*)["']"""),
)
# Set by tooling, not by operators.
NOT_CONFIGURATION = {"DJANGO_SETTINGS_MODULE", "CI"}


def _names_read_by_code() -> set[str]:
    names: set[str] = set()
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).parts
        if parts[0] in {".venv", "tests", "bench", "node_modules"}:
            continue
        text = path.read_text(encoding="utf-8")
        for pattern in READ_PATTERNS:
            names.update(pattern.findall(text))
    return names - NOT_CONFIGURATION


def _names_documented() -> set[str]:
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))


def test_every_variable_read_is_documented():
    undocumented = _names_read_by_code() - _names_documented()
    assert undocumented == set()


def test_no_documented_variable_is_unused():
    unused = _names_documented() - _names_read_by_code()
    assert unused == set()


def test_the_spec_variables_are_read():
    from tests.test_config import SPEC_VARIABLES

    assert set(SPEC_VARIABLES) - _names_read_by_code() == set()
