"""The agent tells the collector about itself, over real HTTP: heartbeats from start and on its
interval, and the policy test of what it serves, again when a reload changes that."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from schoolgate.agent.metrics import version
from schoolgate.server.db import migrate
from schoolgate.server.db.engine import open_engine
from schoolgate.server.db.schema import Event
from schoolgate.server.repository import SqlRepository
from schoolgate.server.settings import parse
from tests.conftest import AgentFactory
from tests.support.agent import AgentThread
from tests.support.collector import CollectorThread
from tests.support.waiting import wait_for

HEARTBEAT_KEYS = ["version", "started", "every", "lists", "dropped", "waiting"]
POLICY_TEST_KEYS = [
    "at",
    "timezone",
    "schedules_on",
    "exceptions",
    "lists",
    "results",
    "summary",
]


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[CollectorThread]:
    engine = open_engine(f"sqlite:///{tmp_path / 'collector' / 'collector.sqlite'}")
    migrate.init(engine)
    settings = parse(f'[server]\nstate_dir = "{tmp_path / "collector"}"\n', "(test)", tmp_path)
    served = CollectorThread(SqlRepository(engine), settings).start()
    yield served
    served.stop()
    engine.dispose()


def collector_section(collector: CollectorThread, tmp_path: Path) -> str:
    _site, token = collector.repo.add_site("north-primary")
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n", encoding="utf-8")
    return f"""
[collector]
url = "{collector.url}"
site = "north-primary"
token_file = "{token_file}"
heartbeat_interval = 1
"""


def school(tmp_path: Path) -> tuple[str, str]:
    """The sections before [collector], and a games list holding the category's probe."""
    games = tmp_path / "games.txt"
    games.write_text("roblox.com\n", encoding="utf-8")
    extra = """
[activity]
write_interval = 0.05

[identity]
neighbours = false

[[groups]]
name = "pupils"
age_tier = "ks2"
default = true
actions = { games = "block" }
"""
    lists = f'[[lists]]\nname = "games"\ncategory = "games"\npath = "{games}"\n'
    return extra, lists


def status_events(collector: CollectorThread, action: str) -> list[tuple[float, dict[str, Any]]]:
    """The status events with ``action`` the collector holds, oldest first: (time, data)."""
    t = Event.__table__
    query = (
        select(t.c.time, t.c.data)
        .where(t.c.kind == "status", t.c.action == action)
        .order_by(t.c.time)
    )
    with collector.repo.engine.connect() as conn:
        return [(time, json.loads(data)) for time, data in conn.execute(query)]


def test_heartbeats_and_the_policy_test_reach_the_collector(
    make_agent: AgentFactory, collector: CollectorThread, tmp_path: Path
) -> None:
    extra, lists = school(tmp_path)
    agent = make_agent(extra + collector_section(collector, tmp_path), lists=lists)
    assert agent.agent is not None
    served = agent.agent.lists

    # One soon after start, then one a second.
    assert wait_for(lambda: len(status_events(collector, "heartbeat")) >= 2, timeout=30)
    beats = status_events(collector, "heartbeat")
    assert beats[1][0] > beats[0][0]
    beat = beats[-1][1]
    assert list(beat) == HEARTBEAT_KEYS
    assert beat["version"] == version()
    assert beat["started"] == agent.agent.started_at
    assert beat["every"] == 1.0
    assert beat["lists"] == {
        "build": served.build_id,
        "names": 1,
        "updated": served.built_at,
        "oldest": None,  # no downloaded lists: only the school's own file
        "stale": 0,
    }
    assert beat["dropped"] == {"spool": 0, "buffer": 0, "total": 0}
    assert isinstance(beat["waiting"], int) and beat["waiting"] >= 0

    assert wait_for(lambda: len(status_events(collector, "policy-test")) >= 1, timeout=30)
    _when, test = status_events(collector, "policy-test")[0]
    assert list(test) == POLICY_TEST_KEYS
    assert test["lists"] == {"build": served.build_id, "names": 1, "in_service": True}
    games = next(r for r in test["results"] if r["category"] == "games")
    assert (games["group"], games["probe"], games["expected"], games["actual"]) == (
        "pupils",
        "roblox.com",
        "block",
        "block",
    )
    assert games["result"] == "ok"
    assert test["summary"]["checks"] >= 1

    # A reload that changes nothing the filter does sends no new test...
    assert agent.reload()
    status = agent.agent.status
    assert status is not None
    assert agent.call(status.policy_test(always=False)) is None
    # ...one that changes the lists in service does.
    (tmp_path / "games.txt").write_text("roblox.com\nminecraft.net\n", encoding="utf-8")
    assert agent.reload()
    rebuilt = agent.agent.lists.build_id
    assert rebuilt != served.build_id

    def tested_builds() -> list[str]:
        return [data["lists"]["build"] for _, data in status_events(collector, "policy-test")]

    assert wait_for(lambda: rebuilt in tested_builds(), timeout=30)
    assert tested_builds() == [served.build_id, rebuilt]


def test_status_events_start_when_a_collector_is_configured(
    make_agent: AgentFactory, collector: CollectorThread, tmp_path: Path
) -> None:
    extra, lists = school(tmp_path)
    agent: AgentThread = make_agent(extra, lists=lists)
    assert agent.agent is not None and agent.agent.config.config_file is not None
    # Without a collector, nothing is made for one.
    assert agent.agent.status is None
    scheduler = agent.agent.jobs.scheduler
    assert scheduler is not None and scheduler.get_job("status-heartbeat") is None

    config_file = agent.agent.config.config_file
    text = config_file.read_text(encoding="utf-8")
    config_file.write_text(text + collector_section(collector, tmp_path), encoding="utf-8")
    assert agent.reload()
    assert wait_for(lambda: len(status_events(collector, "heartbeat")) >= 1, timeout=30)
    assert wait_for(lambda: len(status_events(collector, "policy-test")) >= 1, timeout=30)
