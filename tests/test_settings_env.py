"""Start-up settings as an operator meets them: production by default, .env files read with
the same checks as exported variables, a clean ``check --deploy`` in the documented set-up,
and `make run` / `make test` installing what each needs."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STRONG_KEY = "k" + secrets.token_urlsafe(50)
PRINT_SETTINGS = (
    "from django.conf import settings as s; "
    "print('=DEBUG', s.DEBUG); print('=TEMPERATURE', s.VANTUM_LLM.params.temperature); "
    "print('=COOKIES_SECURE', s.SESSION_COOKIE_SECURE)"
)


def manage(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``manage.py`` in a clean environment: only what the test gives (and no .env)."""
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "VANTUM_ENV_FILE": ""}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=90,
    )


def settings_seen(env: dict[str, str]) -> dict[str, str]:
    result = manage("shell", "-c", PRINT_SETTINGS, env=env)
    assert result.returncode == 0, result.stderr
    return dict(line[1:].split(" ", 1) for line in result.stdout.splitlines() if line.startswith("="))


def test_unset_debug_means_production_and_a_missing_key_is_refused():
    result = manage("check")
    assert result.returncode == 1
    assert (
        "Configuration error: Invalid environment variable DJANGO_SECRET_KEY: must be set in production"
        in (result.stderr)
    )
    assert "Traceback" not in result.stderr

    seen = settings_seen({"DJANGO_SECRET_KEY": STRONG_KEY})
    assert seen["DEBUG"] == "False"
    assert seen["COOKIES_SECURE"] == "True"


def test_a_weak_key_is_refused_in_production_but_development_runs_without_one():
    result = manage("check", env={"DJANGO_SECRET_KEY": "changeme"})
    assert result.returncode == 1
    assert "Invalid environment variable DJANGO_SECRET_KEY: too weak for production" in result.stderr

    seen = settings_seen({"DJANGO_DEBUG": "true"})
    assert seen["DEBUG"] == "True"
    assert seen["COOKIES_SECURE"] == "False"


def test_a_dotenv_file_is_read_and_exported_variables_win(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text(
        f"# comment\nexport DJANGO_SECRET_KEY='{STRONG_KEY}'\nLLM_TEMPERATURE=1.25\nDJANGO_DEBUG=true\n"
    )
    from_file = settings_seen({"VANTUM_ENV_FILE": str(env_file)})
    assert from_file == {"DEBUG": "True", "TEMPERATURE": "1.25", "COOKIES_SECURE": "False"}

    exported = settings_seen(
        {"VANTUM_ENV_FILE": str(env_file), "LLM_TEMPERATURE": "0.5", "DJANGO_DEBUG": "false"}
    )
    assert exported == {"DEBUG": "False", "TEMPERATURE": "0.5", "COOKIES_SECURE": "True"}


def test_an_invalid_value_in_the_dotenv_file_stops_start_up_naming_the_variable_and_the_file(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("DJANGO_DEBUG=true\nLLM_TEMPERATURE=hot\n")
    result = manage("check", env={"VANTUM_ENV_FILE": str(env_file)})
    assert result.returncode == 1
    assert (
        f"Configuration error: Invalid environment variable LLM_TEMPERATURE: expected a number, got 'hot' "
        f"(from {env_file})" in result.stderr
    )

    env_file.write_text("DJANGO_DEBUG=true\nthis line is not a variable\n")
    result = manage("check", env={"VANTUM_ENV_FILE": str(env_file)})
    assert result.returncode == 1
    assert f"{env_file} line 2: cannot read 'this line is not a variable'" in result.stderr

    result = manage("check", env={"VANTUM_ENV_FILE": str(tmp_path / "missing.env")})
    assert result.returncode == 1
    assert "Invalid environment variable VANTUM_ENV_FILE: no such file" in result.stderr


def test_the_documented_production_setup_passes_check_deploy():
    env = {"VANTUM_ENV_FILE": str(ROOT / "deploy" / "production.env"), "DJANGO_SECRET_KEY": STRONG_KEY}
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout

    # The same without HSTS: the check notices (so the clean run above means something).
    result = manage("check", "--deploy", env={**env, "DJANGO_SECURE_HSTS_SECONDS": "0"})
    assert "security.W004" in result.stderr


def _fake_venv_python(root: Path, log: Path) -> None:
    python = root / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    python.chmod(0o755)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_run_installs_only_the_runtime_requirements_and_make_test_adds_the_test_tools(tmp_path):
    for name in ("Makefile", "requirements.txt", "requirements-dev.txt"):
        shutil.copy(ROOT / name, tmp_path / name)
    for name in ("requirements.txt", "requirements-dev.txt"):
        os.utime(tmp_path / name, (1.5e9, 1.5e9))
    log = tmp_path / "pip.log"
    _fake_venv_python(tmp_path, log)

    def make(target: str) -> list[str]:
        log.write_text("")
        subprocess.run(["make", "-s", target], cwd=tmp_path, check=True, capture_output=True, timeout=60)
        return [line for line in log.read_text().splitlines() if "pip install" in line]

    assert make("install") == ["-m pip install --quiet -r requirements.txt"]
    assert make("install") == []  # stamped
    assert make("install-dev") == ["-m pip install --quiet -r requirements-dev.txt"]
    assert make("install-dev") == []

    stamps = tmp_path / ".venv" / "bin"
    os.utime(stamps / ".installed-dev", (1e9, 1e9))  # the test tools changed since
    assert make("install") == []
    assert make("install-dev") == ["-m pip install --quiet -r requirements-dev.txt"]
    os.utime(stamps / ".installed", (1e9, 1e9))  # the runtime changed since: both are redone
    assert make("install") == ["-m pip install --quiet -r requirements.txt"]
    assert make("install-dev") == ["-m pip install --quiet -r requirements-dev.txt"]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_run_asks_for_development_mode_and_takes_a_port():
    result = subprocess.run(
        ["make", "-n", "run", "PORT=8123"], cwd=ROOT, check=True, capture_output=True, text=True, timeout=60
    )
    assert "DJANGO_DEBUG=true .venv/bin/python manage.py runserver 127.0.0.1:8123" in result.stdout
