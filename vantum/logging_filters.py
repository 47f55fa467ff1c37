"""Logging filters of the server's console log (wired in ``LOGGING`` in vantum/settings.py).

- ``RedactSecretsFilter``: a call's ``?token=`` (and any other secret query parameter) never
  reaches a log line in clear: uvicorn logs the WebSocket path with its query string.
- ``CollapseRepeatsFilter``: a flood of the same line (one per refused or broken
  connection during a slowloris, say) cannot fill the disk: after a few lines per window,
  the same message is counted instead, and the count is logged when the window ends.

Pure module: imports nothing from Django.
"""

from __future__ import annotations

import logging
import re
import threading
import time

# name=value in a query string or a logged URL; the value ends at &, space, quote or #.
_SECRET_QUERY = re.compile(r"(?i)\b(token|access_token|api_key|key|password)=[^&\s\"'#]*")
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """``text`` with the value of every secret query parameter replaced by ``[redacted]``."""
    return _SECRET_QUERY.sub(lambda m: f"{m.group(1)}={REDACTED}", text)


class RedactSecretsFilter(logging.Filter):
    """Rewrites the message and its arguments in place; never drops a record.

    Arguments keep their positions and types (uvicorn's access formatter unpacks them), only
    string arguments holding a secret are replaced.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and "=" in record.msg:
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(
                redact(arg) if isinstance(arg, str) and "=" in arg else arg for arg in record.args
            )
        elif isinstance(record.args, dict):
            record.args = {
                key: redact(value) if isinstance(value, str) and "=" in value else value
                for key, value in record.args.items()
            }
        return True


class CollapseRepeatsFilter(logging.Filter):
    """Lets ``burst`` records of one kind through per ``window`` seconds and counts the rest.

    A kind is the logger, the level and, for warnings and errors, the message *template*
    (``record.msg`` before its arguments), so "connection from 10.0.0.%d lost" a thousand
    times is one kind; below WARNING it is the whole line, so "call=%s connected" for a
    thousand different calls is a thousand kinds, and only true repeats collapse. When a
    window ends with records suppressed, the next record of that kind (or of any kind, if
    the window is long over) is preceded by one line saying how many were suppressed.
    Memory is bounded: at most ``max_kinds`` kinds are tracked.
    """

    def __init__(self, burst: int = 5, window: float = 10.0, max_kinds: int = 1000) -> None:
        super().__init__()
        self.burst = burst
        self.window = window
        self.max_kinds = max_kinds
        self.suppressed_total = 0
        self._kinds: dict[tuple[str, int, str], list[float | int]] = {}  # start, seen, suppressed
        self._lock = threading.RLock()
        self._reporting = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(self._reporting, "active", False):
            return True  # our own summary line
        now = time.monotonic()
        kind = (record.name, record.levelno, self._kind_text(record))
        with self._lock:
            due = self._close_windows(now)
            state = self._kinds.get(kind)
            if state is None:
                if len(self._kinds) >= self.max_kinds:
                    self._kinds.pop(next(iter(self._kinds)))
                state = self._kinds[kind] = [now, 0, 0]
            state[1] += 1
            allowed = state[1] <= self.burst
            if not allowed:
                state[2] += 1
                self.suppressed_total += 1
        for summary in due:
            self._report(record, summary)
        return allowed

    @staticmethod
    def _kind_text(record: logging.LogRecord) -> str:
        """Warnings and errors by template: a flood varies only in its arguments (addresses,
        counts). Lower levels by the whole line: one line per call (with its id) is news."""
        if record.levelno >= logging.WARNING:
            return str(record.msg)
        try:
            return record.getMessage()
        except Exception:  # a bad format: let the handler report it
            return str(record.msg)

    def _close_windows(self, now: float) -> list[tuple[tuple[str, int, str], int]]:
        """Ends every window that is over; returns (kind, suppressed) for those that hid lines."""
        due = []
        for kind, state in list(self._kinds.items()):
            if now - state[0] >= self.window:
                if state[2]:
                    due.append((kind, int(state[2])))
                del self._kinds[kind]
        return due

    def _report(self, record: logging.LogRecord, summary: tuple[tuple[str, int, str], int]) -> None:
        (name, level, template), count = summary
        self._reporting.active = True
        try:
            logging.getLogger(name).log(
                level,
                "%d similar log lines suppressed in %gs: %.200s",
                count,
                self.window,
                template,
            )
        finally:
            self._reporting.active = False
