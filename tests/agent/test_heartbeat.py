"""The heartbeat's data: the shape the collector reads, and how fresh the lists are said to be."""

from __future__ import annotations

from pathlib import Path

import msgspec

from schoolgate.agent.config import AgentConfig, parse
from schoolgate.agent.filter.downloads import DownloadState, SourceState
from schoolgate.agent.heartbeat import STALE_GRACE, heartbeat_data, lists_data
from schoolgate.agent.lists import remote_sources
from tests.support.compiled import compiled_lists

NOW = 1_795_000_000.0
DAY = 86_400.0


def downloads_config(tmp_path: Path) -> AgentConfig:
    """Four downloaded sources, updated daily with up to an hour's jitter."""
    lists = "".join(
        f'[[lists]]\nname = "{name}"\ncategory = "games"\nurl = "https://lists.example/{name}"\n'
        for name in ("fresh", "late", "moved", "never")
    )
    text = f"[sources]\ndefaults = false\n[updates]\ninterval = 86400\njitter = 3600\n{lists}"
    return parse(text, "test.toml", base=tmp_path)


def test_lists_data_names_the_build_and_counts_stale_sources(tmp_path: Path) -> None:
    config = downloads_config(tmp_path)
    keys = {r.name: r.key for r in remote_sources(config)}
    allowed = DAY + 3_600 + STALE_GRACE
    downloads = DownloadState(
        {
            "fresh": SourceState(key=keys["fresh"], last_success=NOW - 3_600),
            "late": SourceState(key=keys["late"], last_success=NOW - allowed - 1),
            # Fetched yesterday, but from the URL configured before: not what is asked for.
            "moved": SourceState(key="another-url", last_success=NOW - 60),
            # "never" has no state at all: not fetched yet.
            "gone": SourceState(key="x", last_success=NOW - 100 * DAY),  # no longer configured
        }
    )
    with compiled_lists(tmp_path, {"games": "game.example\nplay.example\n"}) as lists:
        data = lists_data(config, lists, downloads, NOW)
        assert data == {
            "build": lists.build_id,
            "names": 2,
            "updated": lists.built_at,
            "oldest": NOW - allowed - 1,
            "stale": 3,  # late, moved and never
        }
        assert isinstance(data["updated"], float) and data["updated"] > 0


def test_lists_data_without_downloads_has_no_oldest_and_nothing_stale(tmp_path: Path) -> None:
    config = parse("[sources]\ndefaults = false\n", "test.toml", base=tmp_path)
    with compiled_lists(tmp_path, {"games": "game.example\n"}) as lists:
        data = lists_data(config, lists, DownloadState(), NOW)
    assert (data["names"], data["oldest"], data["stale"]) == (1, None, 0)


def test_a_source_just_inside_its_interval_and_jitter_is_not_stale(tmp_path: Path) -> None:
    config = downloads_config(tmp_path)
    keys = {r.name: r.key for r in remote_sources(config)}
    on_time = NOW - DAY - 3_600 - STALE_GRACE  # exactly as late as allowed
    downloads = DownloadState(
        {name: SourceState(key=key, last_success=on_time) for name, key in keys.items()}
    )
    with compiled_lists(tmp_path, {"games": "game.example\n"}) as lists:
        data = lists_data(config, lists, downloads, NOW)
    assert (data["oldest"], data["stale"]) == (on_time, 0)


def test_heartbeat_data_has_exactly_the_agreed_shape() -> None:
    lists = {"build": "b1", "names": 10, "updated": NOW - 60, "oldest": None, "stale": 0}
    data = heartbeat_data(
        version="1.2.3",
        started=NOW - 600,
        every=300,
        lists=lists,
        dropped_spool=2,
        dropped_buffer=5,
        waiting=12,
    )
    assert data == {
        "version": "1.2.3",
        "started": NOW - 600,
        "every": 300.0,
        "lists": lists,
        "dropped": {"spool": 2, "buffer": 5, "total": 7},
        "waiting": 12,
    }
    assert isinstance(data["every"], float) and isinstance(data["started"], float)
    # As it is shipped: plain JSON, null for what is not known.
    encoded = msgspec.json.decode(msgspec.json.encode(data))
    assert encoded["lists"]["oldest"] is None and encoded == data
