"""Typed reads of environment variables.

Every variable the product reads goes through these helpers so that a bad value stops
start-up with a message naming the variable, and so ``tests/test_env_documented.py`` can
find every name and check it is documented in ``.env.example``.

Pure module: imports nothing from Django.
"""

from __future__ import annotations

import os

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class EnvError(ValueError):
    """An environment variable holds a value the product cannot use."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name


def _raw(name: str) -> str | None:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def env_str(name: str, default: str = "") -> str:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def env_bool(name: str, default: bool = False) -> bool:
    value = _raw(name)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise EnvError(name, f"expected true/false, got {value!r}")


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    value = _raw(name)
    if value is None:
        number = default
    else:
        try:
            number = int(value)
        except ValueError:
            raise EnvError(name, f"expected a whole number, got {value!r}") from None
    _check_range(name, number, minimum, maximum)
    return number


def env_float(
    name: str, default: float, *, minimum: float | None = None, maximum: float | None = None
) -> float:
    value = _raw(name)
    if value is None:
        number = default
    else:
        try:
            number = float(value)
        except ValueError:
            raise EnvError(name, f"expected a number, got {value!r}") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise EnvError(name, f"expected a finite number, got {value!r}")
    _check_range(name, number, minimum, maximum)
    return number


def env_list(name: str, default: tuple[str, ...] = ()) -> list[str]:
    value = _raw(name)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def _check_range(name: str, number: float, minimum: float | None, maximum: float | None) -> None:
    if minimum is not None and maximum is not None and not minimum <= number <= maximum:
        raise EnvError(name, f"must be between {minimum} and {maximum}, got {number}")
    if minimum is not None and number < minimum:
        raise EnvError(name, f"must be at least {minimum}, got {number}")
    if maximum is not None and number > maximum:
        raise EnvError(name, f"must be at most {maximum}, got {number}")


# Variable name -> the .env file it was read from, to say where a bad value came from.
read_from_file: dict[str, str] = {}


def load_env_file(default_path: os.PathLike[str] | str) -> str | None:
    """Copy the variables of a ``.env`` file into ``os.environ``; exported variables win.

    The file is ``$VANTUM_ENV_FILE`` when that is exported (empty: read no file), else
    ``default_path`` when it exists. Values are only copied, never checked here: every one
    then goes through the same typed reads (and errors) as an exported variable. A line
    without ``=`` is ignored; one that cannot be parsed is an error naming
    the file and line. Returns the path read, or None.
    """
    from dotenv.parser import parse_stream  # a maintained parser: quotes, comments, ``export``

    chosen = os.environ.get("VANTUM_ENV_FILE")
    if chosen is not None and chosen.strip() == "":
        return None
    path = os.fspath(chosen.strip() if chosen is not None else default_path)
    if not os.path.isfile(path):
        if chosen is not None:
            raise EnvError("VANTUM_ENV_FILE", f"no such file {path!r}")
        return None
    with open(path, encoding="utf-8") as stream:
        bindings = list(parse_stream(stream))
    values: dict[str, str] = {}
    for binding in bindings:
        if binding.error:
            line = binding.original.string.strip()
            raise EnvError(f"{path} line {binding.original.line}", f"cannot read {line!r}")
        if binding.key is not None and binding.value is not None:
            values[binding.key] = binding.value
    for name, value in values.items():
        if name not in os.environ:
            os.environ[name] = value
            read_from_file[name] = path
    return path


def is_weak_secret_key(key: str) -> bool:
    """Django's own test (``check --deploy``, security.W009): at least 50 characters, at
    least 5 different ones, and not a generated ``django-insecure-`` development key."""
    return len(key) < 50 or len(set(key)) < 5 or key.startswith("django-insecure-")
