"""The district indicators, measured: acknowledgement times, approved devices, agent uptime,
list freshness and bypass attempts, from the tables ingest and the pages keep."""

from __future__ import annotations

import time

from schoolgate.agent.activity.events import EventKind, Severity
from schoolgate.event_batch import ShippedEvent
from schoolgate.server.indicators import BYPASS_CATEGORIES, school_indicators
from schoolgate.server.queries import EventQueries
from schoolgate.server.repository import SqlRepository
from schoolgate.server.reviews import Reviews
from schoolgate.server.rollups import HOUR

NOW = time.time()
START = NOW - NOW % HOUR - 4 * HOUR  # the start of an hour, four hours ago


def school_day() -> list[ShippedEvent]:
    """Two alerts, heartbeats every five minutes for two of four hours, a bypass seen by the
    monitor, a blocked lookup of a proxy and an allowed one, two devices."""
    made = [
        ShippedEvent(
            seq=1 + i,
            kind=EventKind.ALERT,
            time=START + 600 + i,
            client_ip="10.0.0.1",
            name=f"harm-{i}.example",
            action="alert",
            categories=("self-harm",),
            severity=Severity.HIGH,
        )
        for i in range(2)
    ]
    made += [
        ShippedEvent(
            seq=10 + i,
            kind=EventKind.STATUS,
            time=START + i * 300,
            action="heartbeat",
            data={"version": "1.0", "every": 300, "lists": {"updated": NOW - 60}},
        )
        for i in range(24)
    ]
    made += [
        ShippedEvent(seq=40, kind=EventKind.BYPASS, time=START + 60, client_ip="10.0.0.2"),
        ShippedEvent(
            seq=41,
            kind=EventKind.DNS,
            time=START + 70,
            client_ip="10.0.0.2",
            mac="aa:aa",
            name="proxy.example",
            action="block",
            categories=(BYPASS_CATEGORIES[0],),
        ),
        ShippedEvent(
            seq=42,
            kind=EventKind.DNS,
            time=START + 80,
            client_ip="10.0.0.3",
            mac="bb:bb",
            name="vpn.example",
            action="allow",
            categories=(BYPASS_CATEGORIES[0],),
        ),
    ]
    return made


def test_each_indicator_is_measured(repo: SqlRepository) -> None:
    site, _ = repo.add_site("north-primary")
    repo.ingest(site, "day", school_day(), keep_after=0)
    reviews = Reviews(repo.engine)
    # One alert acknowledged after an hour; the other still open.
    reviews.acknowledge(
        site.id, 1, START + 600, "spoke-to-user", "talked it through", "lead", now=START + 4200
    )
    reviews.review_device(site.id, "10.0.0.2", "aa:aa", "approved", "", "tech")
    sites = [s for s in EventQueries(repo.engine).sites() if s["id"] == site.id]
    # The school was added just now; for the test, a week ago.
    sites[0]["created"] = NOW - 7 * 86_400
    [found] = school_indicators(repo.engine, sites, START, START + 4 * HOUR)
    assert (found.alerts, found.acknowledged) == (2, 1)
    assert found.median_ack == 3_600 and found.ack_within_target == 1.0
    assert (found.devices, found.approved) == (4, 1)  # by address and MAC, as ingest keys them
    assert found.uptime == 0.5  # 24 beats of five minutes in four hours
    assert found.lists_updated == NOW - 60
    assert (found.bypass_events, found.bypass_lookups) == (1, 1)  # the allowed one is not


def test_a_school_is_not_measured_before_it_was_added(repo: SqlRepository) -> None:
    site, _ = repo.add_site("north-primary")
    repo.ingest(site, "day", school_day(), keep_after=0)
    sites = [s for s in EventQueries(repo.engine).sites() if s["id"] == site.id]
    sites[0]["created"] = START + 2 * HOUR
    [found] = school_indicators(repo.engine, sites, START - 10 * HOUR, START + 4 * HOUR)
    assert found.uptime == 1.0  # 24 beats, two hours of them, in the two hours since: capped
    assert school_indicators(repo.engine, [], START, NOW) == []
