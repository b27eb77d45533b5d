"""What each agent said about itself: kept at ingest, newest wins, hostile data harmless."""

from __future__ import annotations

import time
from typing import Any

from schoolgate.agent.activity.events import EventKind
from schoolgate.event_batch import ShippedEvent
from schoolgate.server.agent_status import AgentStatuses, uptime
from schoolgate.server.repository import SqlRepository

NOW = time.time()


def beat(seq: int, when: float, **data: Any) -> ShippedEvent:
    payload = {
        "version": "1.2.3",
        "started": when - 600,
        "every": 300.0,
        "lists": {"build": "b1", "names": 1000, "updated": when - 3600, "oldest": when - 7200},
        "dropped": {"spool": 2, "buffer": 1, "total": 3},
        "waiting": 12,
        **data,
    }
    return ShippedEvent(seq=seq, kind=EventKind.STATUS, time=when, action="heartbeat", data=payload)


def policy_test(seq: int, when: float, passed: bool) -> ShippedEvent:
    data = {"at": "2026-11-22 10:00", "results": [], "summary": {"passed": passed, "checks": 9}}
    return ShippedEvent(seq=seq, kind=EventKind.STATUS, time=when, action="policy-test", data=data)


def test_the_newest_heartbeat_and_policy_test_are_kept(repo: SqlRepository) -> None:
    site, _ = repo.add_site("north-primary")
    agents = AgentStatuses(repo.engine)
    repo.ingest(site, "a", [beat(1, NOW - 60, version="1.2.4"), policy_test(2, NOW - 50, True)], 0)
    # A spool that was offline ships older news later: it does not replace the newer.
    repo.ingest(
        site, "b", [beat(3, NOW - 900, version="1.2.2"), policy_test(4, NOW - 800, False)], 0
    )
    health = agents.health([site.id])[site.id]
    assert health.version == "1.2.4"
    assert health.reported == NOW - 60
    assert (health.started, health.every) == (NOW - 660, 300.0)
    assert (health.lists_updated, health.lists_oldest) == (NOW - 3660, NOW - 7260)
    assert (health.dropped, health.waiting, health.stale) == (3, 12, 0)
    assert health.reporting(NOW) and not health.reporting(NOW + 3_600)
    assert health.tested == NOW - 50
    assert health.test_summary == {"passed": True, "checks": 9}
    # Newer news does replace it.
    repo.ingest(site, "c", [beat(5, NOW, version="1.3.0")], 0)
    assert agents.health([site.id])[site.id].version == "1.3.0"
    assert agents.health([site.id])[site.id].tested == NOW - 50


def test_a_policy_test_before_any_heartbeat_still_counts(repo: SqlRepository) -> None:
    site, _ = repo.add_site("north-primary")
    repo.ingest(site, "a", [policy_test(1, NOW, False)], 0)
    health = AgentStatuses(repo.engine).health([site.id])[site.id]
    assert health.reported == 0 and not health.reporting(NOW)
    assert health.test_summary == {"passed": False, "checks": 9}


def test_figures_of_the_wrong_type_are_not_known_rather_than_an_error(
    repo: SqlRepository,
) -> None:
    site, _ = repo.add_site("north-primary")
    hostile = beat(
        1,
        NOW,
        version="<script>alert(1)</script>" * 10,
        started="yesterday",
        every=-1,
        lists=["not", "a", "table"],
        dropped={"total": -5},
        waiting=1e300,
    )
    repo.ingest(site, "a", [hostile], 0)
    health = AgentStatuses(repo.engine).health([site.id])[site.id]
    assert len(health.version) == 64  # kept as text, cut to the column; escaped when shown
    assert health.started is None and health.every == 300.0  # the default interval
    assert health.lists_updated is None and health.dropped == 0
    assert health.waiting == 2**63 - 1


def test_uptime_counts_heartbeats_per_hour(repo: SqlRepository) -> None:
    site, _ = repo.add_site("north-primary")
    hour = NOW - NOW % 3_600 - 3 * 3_600
    # Two hours of beats every five minutes, then nothing for an hour.
    repo.ingest(site, "a", [beat(i + 1, hour + i * 300) for i in range(24)], 0)
    beats = AgentStatuses(repo.engine).beats([site.id], hour, hour + 3 * 3_600)
    assert beats == {site.id: 24}
    assert uptime(24, 300, hour, hour + 3 * 3_600) == 24 * 300 / (3 * 3_600)
    assert uptime(1000, 300, hour, hour + 3_600) == 1.0
    assert uptime(1, 300, hour, hour) is None
