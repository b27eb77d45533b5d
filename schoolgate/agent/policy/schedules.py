"""Named schedules: weekly windows in the site's time zone, limited to dates if need be.

A schedule is active at a moment when the day is one of its days, the time is inside one of its
windows, the date is inside one of its date ranges (if it has any) and outside every excluded
range (holidays). A window may run overnight (``22:00-06:00``): its hours after midnight belong
to the day it started, so "Friday 22:00-06:00" covers Saturday 03:00. Times are wall-clock times
in the site's zone, so a window keeps its hours across a change to or from summer time.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

DAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW: Final = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")


@dataclass(frozen=True)
class Window:
    start: int  # minutes after midnight
    end: int  # minutes after midnight; at or before start: the window runs past midnight

    @property
    def overnight(self) -> bool:
        return self.end <= self.start


@dataclass(frozen=True)
class DateRange:
    first: dt.date
    last: dt.date

    def __contains__(self, day: object) -> bool:
        return isinstance(day, dt.date) and self.first <= day <= self.last


@dataclass(frozen=True)
class Schedule:
    name: str
    days: frozenset[int] = frozenset(range(7))  # 0 is Monday
    windows: tuple[Window, ...] = ()  # none: the whole day
    dates: tuple[DateRange, ...] = ()  # none: every date
    except_dates: tuple[DateRange, ...] = ()

    def _day_counts(self, day: dt.date) -> bool:
        return (
            day.weekday() in self.days
            and (not self.dates or any(day in r for r in self.dates))
            and not any(day in r for r in self.except_dates)
        )

    def active(self, local: dt.datetime) -> bool:
        """Whether the schedule is on at ``local``, a wall-clock time in the site's zone."""
        today = local.date()
        minute = local.hour * 60 + local.minute
        if not self.windows:
            return self._day_counts(today)
        for w in self.windows:
            if not w.overnight:
                if w.start <= minute < w.end and self._day_counts(today):
                    return True
                continue
            if minute >= w.start and self._day_counts(today):
                return True
            if minute < w.end and self._day_counts(today - dt.timedelta(days=1)):
                return True
        return False


def active_schedules(schedules: Iterable[Schedule], local: dt.datetime) -> frozenset[str]:
    return frozenset(s.name for s in schedules if s.active(local))


def parse_window(text: str) -> Window:
    """'08:45-15:15' -> Window. Raises ValueError."""
    m = _WINDOW.match(text.strip())
    if m is None:
        raise ValueError("expected HH:MM-HH:MM, e.g. 08:45-15:15 or 22:00-06:00")
    h1, m1, h2, m2 = (int(x) for x in m.groups())
    if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2):
        raise ValueError("not a time of day")
    return Window(h1 * 60 + m1, h2 * 60 + m2)


def parse_dates(text: str) -> DateRange:
    """'2026-09-03..2026-12-18' or one day '2026-12-25' -> DateRange. Raises ValueError."""
    first, sep, last = text.strip().partition("..")
    try:
        start = dt.date.fromisoformat(first)
        end = dt.date.fromisoformat(last) if sep else start
    except ValueError:
        raise ValueError("expected YYYY-MM-DD or YYYY-MM-DD..YYYY-MM-DD") from None
    if end < start:
        raise ValueError("the range ends before it starts")
    return DateRange(start, end)


def parse_days(names: Sequence[str]) -> frozenset[int]:
    """['mon', 'tue'] or ['mon-fri'] -> weekday numbers. Raises ValueError."""
    days: set[int] = set()
    for name in names:
        first, sep, last = name.strip().lower().partition("-")
        if first not in DAYS or (sep and last not in DAYS):
            raise ValueError(f"days are {', '.join(DAYS)}, or a range such as mon-fri")
        a = DAYS.index(first)
        b = DAYS.index(last) if sep else a
        days.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(b + 1)])
    return frozenset(days)
