"""Schedules, table-driven with an injected clock: window edges, overnight, DST, term dates."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from schoolgate.agent.policy.schedules import (
    Schedule,
    active_schedules,
    parse_dates,
    parse_days,
    parse_window,
)

LESSONS = Schedule(
    "lessons",
    parse_days(["mon-fri"]),
    (parse_window("08:45-12:00"), parse_window("13:00-15:15")),
    (parse_dates("2026-09-03..2026-12-18"),),
    (parse_dates("2026-10-26..2026-10-30"),),
)
NIGHT = Schedule("night", parse_days(["fri"]), (parse_window("22:00-06:00"),))
WEEKEND = Schedule("weekend", parse_days(["sat-sun"]))


def at(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%d %H:%M")


@pytest.mark.parametrize(
    ("moment", "on"),
    [
        ("2026-11-23 08:44", False),  # Monday, a minute early
        ("2026-11-23 08:45", True),  # the first minute
        ("2026-11-23 11:59", True),
        ("2026-11-23 12:00", False),  # the end is not included
        ("2026-11-23 12:30", False),  # lunch
        ("2026-11-23 13:00", True),
        ("2026-11-23 15:15", False),
        ("2026-11-21 10:00", False),  # Saturday
        ("2026-10-27 10:00", False),  # half term
        ("2026-10-23 10:00", True),  # the Friday before it
        ("2026-12-18 10:00", True),  # the last day of term
        ("2026-12-21 10:00", False),  # the holidays
        ("2026-09-02 10:00", False),  # before term
    ],
)
def test_lessons(moment: str, on: bool) -> None:
    assert LESSONS.active(at(moment)) is on


@pytest.mark.parametrize(
    ("moment", "on"),
    [
        ("2026-11-27 21:59", False),  # Friday
        ("2026-11-27 22:00", True),
        ("2026-11-28 03:00", True),  # Saturday small hours belong to Friday's window
        ("2026-11-28 05:59", True),
        ("2026-11-28 06:00", False),
        ("2026-11-27 03:00", False),  # Friday small hours belong to Thursday: not a day of it
        ("2026-11-28 22:30", False),  # Saturday night
    ],
)
def test_overnight_window(moment: str, on: bool) -> None:
    assert NIGHT.active(at(moment)) is on


def test_a_schedule_without_times_is_the_whole_day() -> None:
    assert WEEKEND.active(at("2026-11-21 00:00")) and WEEKEND.active(at("2026-11-22 23:59"))
    assert not WEEKEND.active(at("2026-11-23 00:00"))


def test_wall_clock_hours_hold_across_summer_time() -> None:
    london = ZoneInfo("Europe/London")
    every_day = Schedule("morning", windows=(parse_window("08:00-09:00"),))
    # 2027-03-28: the clocks go forward at 01:00 UTC. 08:30 local is 07:30 UTC after, 08:30 before.
    for utc in ("2027-03-27 08:30", "2027-03-28 07:30"):
        moment = dt.datetime.strptime(utc, "%Y-%m-%d %H:%M").replace(tzinfo=dt.UTC)
        local = moment.astimezone(london).replace(tzinfo=None)
        assert every_day.active(local), utc
    late = dt.datetime(2027, 3, 28, 8, 30, tzinfo=dt.UTC).astimezone(london).replace(tzinfo=None)
    assert not every_day.active(late)  # 09:30 local


def test_active_schedules_names_those_on() -> None:
    assert active_schedules([LESSONS, NIGHT, WEEKEND], at("2026-11-28 03:00")) == {
        "night",
        "weekend",
    }


@pytest.mark.parametrize(
    ("days", "expected"),
    [
        (["mon"], {0}),
        (["mon-fri"], {0, 1, 2, 3, 4}),
        (["fri-mon"], {4, 5, 6, 0}),
        (["SAT", "sun"], {5, 6}),
    ],
)
def test_parse_days(days: list[str], expected: set[int]) -> None:
    assert parse_days(days) == expected


@pytest.mark.parametrize(
    "text", ["8:45-12:00", "08:45", "25:00-26:00", "08:60-09:00", "24:30-01:00"]
)
def test_bad_windows(text: str) -> None:
    with pytest.raises(ValueError):
        parse_window(text)


def test_a_window_may_end_at_midnight() -> None:
    assert parse_window("18:00-24:00").end == 24 * 60


@pytest.mark.parametrize("text", ["2026-13-01", "2026-12-18..2026-09-03", "tomorrow"])
def test_bad_dates(text: str) -> None:
    with pytest.raises(ValueError):
        parse_dates(text)
