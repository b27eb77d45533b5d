"""The log command's arguments: when, and who."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest

from schoolgate.agent.activity.pseudonyms import Pseudonyms, load_key
from schoolgate.agent.cli_log import LogArgumentError, client_forms, moment
from schoolgate.agent.config import AgentConfig, parse

NOW = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC).timestamp()


def config(tmp_path: Path, extra: str = "") -> AgentConfig:
    text = f'[server]\nstate_dir = "{tmp_path / "state"}"\n[sources]\ndefaults = false\n{extra}'
    return parse(text, "test.toml", base=tmp_path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2h", NOW - 7200),
        ("30m", NOW - 1800),
        ("7d", NOW - 7 * 86400),
        ("1w", NOW - 7 * 86400),
        # London in summer is an hour ahead of UTC, in winter not: each date its own offset.
        ("2026-07-15 12:00", dt.datetime(2026, 7, 15, 11, 0, tzinfo=dt.UTC).timestamp()),
        ("2026-11-15", dt.datetime(2026, 11, 15, 0, 0, tzinfo=dt.UTC).timestamp()),
        ("2026-11-15 08:30:15", dt.datetime(2026, 11, 15, 8, 30, 15, tzinfo=dt.UTC).timestamp()),
    ],
)
def test_moments_are_local_to_the_site_or_spans_back(
    tmp_path: Path, text: str, expected: float
) -> None:
    site = config(tmp_path, '[site]\ntimezone = "Europe/London"\n')
    assert moment(text, site, NOW) == expected


def test_without_a_site_zone_the_machines_zone_is_used_with_the_dates_offset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    monkeypatch.setenv("TZ", "Europe/London")
    time.tzset()
    try:
        summer = moment("2026-07-15 12:00", config(tmp_path), NOW)
        assert summer == dt.datetime(2026, 7, 15, 11, 0, tzinfo=dt.UTC).timestamp()
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


@pytest.mark.parametrize("text", ["yesterday", "2h30", "2026-13-01", "-2h", ""])
def test_a_moment_that_cannot_be_read_says_what_is_expected(tmp_path: Path, text: str) -> None:
    with pytest.raises(LogArgumentError, match="expected 'YYYY-MM-DD'"):
        moment(text, config(tmp_path), NOW)


def test_clients_are_found_in_the_form_they_are_stored(tmp_path: Path) -> None:
    plain = config(tmp_path)
    assert client_forms(["AA-BB-CC-00-00-07", " KS2-Lab-7 ", "2001:DB8:0:0::1"], plain) == (
        "aa:bb:cc:00:00:07",
        "ks2-lab-7",
        "2001:db8::1",
    )


def test_with_a_key_each_client_is_looked_for_by_its_pseudonym_too(tmp_path: Path) -> None:
    site = config(tmp_path, "[activity]\npseudonymise = true\n")
    key = load_key(site.state_dir)
    assert key is not None
    hide = Pseudonyms(key)
    forms = client_forms(["10.0.0.7", "p-office-01", hide("10.0.0.9")], site)
    # A device named like a pseudonym is still hashed; a real pseudonym is taken as it is.
    assert forms == (
        "10.0.0.7",
        "p-office-01",
        hide("10.0.0.9"),
        hide("10.0.0.7"),
        hide("p-office-01"),
    )
    # Pseudonymised once and then turned off: the old events are still found.
    assert hide("10.0.0.7") in client_forms(["10.0.0.7"], config(tmp_path))
