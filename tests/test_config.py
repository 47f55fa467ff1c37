"""Start-up configuration: the spec's defaults, and bad values named in the error."""

import subprocess
import sys
from pathlib import Path

import pytest

from llm.config import llm_config_from_env
from vantum.env import EnvError

ROOT = Path(__file__).resolve().parent.parent
SPEC_VARIABLES = [
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_ORGANIZATION",
    "LLM_MODEL",
    "LLM_TEMPERATURE",
    "LLM_MAX_TOKENS",
    "LLM_TOP_P",
    "LLM_FREQUENCY_PENALTY",
    "LLM_PRESENCE_PENALTY",
    "LLM_REQUEST_TIMEOUT",
    "LLM_STREAMING_TIMEOUT",
    "LLM_STALL_TIMEOUT",
    "LLM_FALLBACK_TIER1",
    "LLM_FALLBACK_TIER2",
    "LLM_FALLBACK_TIER3",
    "LLM_MAX_RETRIES",
    "LLM_MAX_QUEUE_SIZE",
    "LLM_SESSION_IDLE_TIMEOUT",
    "LLM_SESSION_MAX_DURATION",
    "LLM_CLEANUP_INTERVAL",
    "LLM_MAX_MESSAGES",
    "LLM_MAX_CONTEXT_TOKENS",
    "LLM_SYSTEM_PROMPT",
]


@pytest.fixture
def clean_env(monkeypatch):
    for name in SPEC_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_defaults_are_the_specs(clean_env):
    config = llm_config_from_env()
    assert config.params.model == "gpt-4.1-2025-04-14"
    assert config.params.temperature == 0.7
    assert config.params.max_tokens == 500
    assert config.params.top_p == 1.0
    assert config.request_timeout == 8.0  # not the spec's 30 s: a hung model must not mean 30 s of silence
    assert config.streaming_timeout == 60.0
    assert config.max_retries == 0
    assert config.retry_delays == (1.0, 2.0, 4.0)
    assert config.max_queue_size == 0
    assert config.session_idle_timeout == 1800.0
    assert config.session_max_duration == 7200.0
    assert config.cleanup_interval == 300.0
    assert config.fallback_messages == (
        "I apologize, can you repeat that?",
        "I'm experiencing technical difficulties. Please hold.",
        "I apologize, I'm having connection issues. I'll have someone call you back.",
    )
    assert "||BREAK||" in config.system_prompt
    assert config.demo_mode is True


def test_values_are_read_from_the_environment(clean_env):
    clean_env.setenv("LLM_TEMPERATURE", "1.25")
    clean_env.setenv("LLM_MAX_TOKENS", "4096")
    clean_env.setenv("LLM_REQUEST_TIMEOUT", "2500")
    clean_env.setenv("LLM_FALLBACK_TIER2", "One moment please.")
    clean_env.setenv("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1")
    config = llm_config_from_env()
    assert config.params.temperature == 1.25
    assert config.params.max_tokens == 4096
    assert config.request_timeout == 2.5
    assert config.fallback_messages[1] == "One moment please."
    assert config.demo_mode is False


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("LLM_TEMPERATURE", "2.5", "LLM_TEMPERATURE: must be between 0.0 and 2.0, got 2.5"),
        ("LLM_TEMPERATURE", "-0.1", "LLM_TEMPERATURE: must be between 0.0 and 2.0, got -0.1"),
        ("LLM_TEMPERATURE", "warm", "LLM_TEMPERATURE: expected a number, got 'warm'"),
        ("LLM_MAX_TOKENS", "0", "LLM_MAX_TOKENS: must be between 1 and 4096, got 0"),
        ("LLM_MAX_TOKENS", "5000", "LLM_MAX_TOKENS: must be between 1 and 4096, got 5000"),
        ("LLM_MAX_TOKENS", "12.5", "LLM_MAX_TOKENS: expected a whole number, got '12.5'"),
        ("LLM_REQUEST_TIMEOUT", "soon", "LLM_REQUEST_TIMEOUT: expected a whole number, got 'soon'"),
        ("LLM_TOP_P", "nan", "LLM_TOP_P: expected a finite number, got 'nan'"),
        ("LLM_MAX_QUEUE_SIZE", "-1", "LLM_MAX_QUEUE_SIZE: must be at least 0, got -1"),
    ],
)
def test_invalid_values_name_the_variable(clean_env, name, value, message):
    clean_env.setenv(name, value)
    with pytest.raises(EnvError) as raised:
        llm_config_from_env()
    assert str(raised.value) == message
    assert raised.value.name == name


def test_an_invalid_value_stops_start_up_with_the_variable_named():
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "LLM_TEMPERATURE": "3"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert (
        "Invalid environment variable LLM_TEMPERATURE: must be between 0.0 and 2.0, got 3.0" in result.stderr
    )
    assert "Traceback" not in result.stderr
