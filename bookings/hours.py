"""When meetings and callbacks may be booked: the business timezone, working days and hours.

Pure Python (read by ``vantum/settings.py`` at start-up, so a bad value stops the server
with the variable's name, and by ``bookings.services``).
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass

from vantum.env import EnvError

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOURS = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


@dataclass(frozen=True, slots=True)
class WorkingHours:
    """Bookable times: ``opens`` to ``closes`` (local wall-clock time in ``timezone``) on
    ``days`` (0 = Monday). A booking must start and end inside one working day."""

    timezone: zoneinfo.ZoneInfo
    opens: dt.time
    closes: dt.time
    days: frozenset[int]

    def contains(self, start: dt.datetime, end: dt.datetime) -> bool:
        local_start, local_end = start.astimezone(self.timezone), end.astimezone(self.timezone)
        return (
            local_start.weekday() in self.days
            and local_start.date() == local_end.date()
            and self.opens <= local_start.time()
            and local_end.time() <= self.closes
        )

    def describe(self) -> str:
        """e.g. ``"Mon-Fri 09:00-17:00 (Europe/London)"``, for the model and for error messages."""
        names = [DAY_NAMES[d].capitalize() for d in sorted(self.days)]
        contiguous = sorted(self.days) == list(range(min(self.days), max(self.days) + 1))
        days = f"{names[0]}-{names[-1]}" if contiguous and len(names) > 2 else ", ".join(names)
        return f"{days} {self.opens:%H:%M}-{self.closes:%H:%M} ({self.timezone.key})"


def parse_working_hours(*, timezone: str, hours: str, days: Iterable[str]) -> WorkingHours:
    """Build ``WorkingHours`` from the ``BOOKING_*`` settings. Raises ``EnvError`` naming
    the variable that is wrong."""
    try:
        zone = zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise EnvError("BOOKING_TIMEZONE", f"unknown time zone {timezone!r} (e.g. Europe/London)") from None
    match = _HOURS.match(hours)
    if match is None:
        raise EnvError("BOOKING_WORKING_HOURS", f"expected HH:MM-HH:MM, got {hours!r}")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    try:
        opens, closes = dt.time(h1, m1), dt.time(h2, m2)
    except ValueError:
        raise EnvError("BOOKING_WORKING_HOURS", f"not a time of day: {hours!r}") from None
    if closes <= opens:
        raise EnvError("BOOKING_WORKING_HOURS", f"closing time must be after opening time, got {hours!r}")
    numbers = set()
    for day in days:
        key = day.strip().lower()[:3]
        if key not in DAY_NAMES:
            raise EnvError("BOOKING_WORKING_DAYS", f"unknown day {day!r}; use mon,tue,wed,thu,fri,sat,sun")
        numbers.add(DAY_NAMES.index(key))
    if not numbers:
        raise EnvError("BOOKING_WORKING_DAYS", "must name at least one day")
    return WorkingHours(timezone=zone, opens=opens, closes=closes, days=frozenset(numbers))
