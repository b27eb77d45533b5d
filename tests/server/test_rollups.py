"""The counts ingest keeps (per hour, per blocked name and day, per device), on SQLite and
PostgreSQL: always what a GROUP BY over the events would say, whatever is sent twice."""

from __future__ import annotations

import math
import random
import threading
import time
from collections import Counter
from typing import Any, cast

import pytest
from sqlalchemy.pool import QueuePool

from schoolgate.agent.activity.events import EventKind
from schoolgate.event_batch import ShippedEvent
from schoolgate.server.repository import SiteRef, SqlRepository, _insert_postgresql, event_values
from schoolgate.server.rollups import BLOCKING_ACTIONS, DAY, HOUR, WATCHED, day_of, hour_of

NOW = time.time()
KINDS = (EventKind.DNS, EventKind.DNS, EventKind.DNS, EventKind.ALERT, EventKind.DEVICE)
ACTIONS = ("allow", "block", "block+alert", "alert", "rewrite")
GROUPS = ("ks1", "ks2", "staff", "")
CATEGORIES: tuple[tuple[str, ...], ...] = (
    (),
    ("adult",),
    ("self-harm", "adult"),
    ("games",),
    ("genai", "chat"),
    ("chat", "genai"),  # genai, but not the deciding category: not counted as genai use
)


def mixed(first: int, count: int, start: float = NOW - 2 * DAY) -> list[ShippedEvent]:
    """Events of every kind, group, category and action, 17 minutes apart (over hours and
    days), from a handful of devices, and a status event (no device) now and then."""
    made = []
    for seq in range(first, first + count):
        kind = EventKind.STATUS if seq % 11 == 0 else KINDS[seq % len(KINDS)]
        device = seq % 5
        made.append(
            ShippedEvent(
                seq=seq,
                kind=kind,
                time=start + seq * 1020.0,
                client_ip="" if kind is EventKind.STATUS else f"10.0.0.{device}",
                mac="" if kind is EventKind.STATUS or device == 4 else f"aa:bb:cc:00:00:0{device}",
                hostname=f"laptop-{device}" if seq % 3 else "",
                group="" if kind is EventKind.STATUS else GROUPS[seq % len(GROUPS)],
                name=f"www{seq % 7}.site{seq % 3}.example" if kind is not EventKind.STATUS else "",
                action=ACTIONS[seq % len(ACTIONS)] if kind is not EventKind.STATUS else "",
                categories=CATEGORIES[seq % len(CATEGORIES)],
            )
        )
    return made


def _events(repo: SqlRepository) -> list[Any]:
    with repo.engine.connect() as conn:
        return list(
            conn.exec_driver_sql(
                "SELECT site_id, time, kind, grp, category, action, name, client_ip, mac, "
                "hostname FROM events"
            )
        )


def _table(repo: SqlRepository, sql: str) -> list[Any]:
    with repo.engine.connect() as conn:
        return list(conn.exec_driver_sql(sql))


def assert_counts_match_events(repo: SqlRepository) -> None:
    events = _events(repo)
    hourly = Counter(
        (e.site_id, hour_of(e.time), e.kind, e.grp, e.category, e.action) for e in events
    )
    counted = {
        (r.site_id, r.hour, r.kind, r.grp, r.category, r.action): r.count
        for r in _table(repo, "SELECT * FROM event_counts")
    }
    assert counted == dict(hourly)

    # The same through the database's own GROUP BY, over the whole time.
    grouped = {
        tuple(r[:5]): r[5]
        for r in _table(
            repo,
            "SELECT site_id, kind, grp, category, action, count(*) FROM events "
            "GROUP BY site_id, kind, grp, category, action",
        )
    }
    summed = {
        tuple(r[:5]): int(r[5])
        for r in _table(
            repo,
            "SELECT site_id, kind, grp, category, action, sum(count) FROM event_counts "
            "GROUP BY site_id, kind, grp, category, action",
        )
    }
    assert summed == grouped

    blocked = Counter(
        (e.site_id, day_of(e.time), e.name)
        for e in events
        if e.kind == "dns" and e.action in BLOCKING_ACTIONS
    )
    assert blocked, "the test data must block something"
    assert {
        (r.site_id, r.day, r.name): r.count for r in _table(repo, "SELECT * FROM blocked_names")
    } == dict(blocked)

    devices: dict[tuple[int, str, str], list[float]] = {}
    for e in events:
        if e.client_ip or e.mac:
            devices.setdefault((e.site_id, e.client_ip, e.mac), []).append(e.time)
    assert {
        (r.site_id, r.client_ip, r.mac): (r.first_seen, r.last_seen, r.events)
        for r in _table(repo, "SELECT * FROM devices")
    } == {key: (min(t), max(t), len(t)) for key, t in devices.items()}

    used: dict[tuple[int, float, str, str, str], list[Any]] = {}
    for e in events:
        if e.kind == "dns" and e.category in WATCHED and (e.client_ip or e.mac):
            used.setdefault((e.site_id, day_of(e.time), e.category, e.client_ip, e.mac), []).append(
                e
            )
    assert {
        (r.site_id, r.day, r.category, r.client_ip, r.mac): (r.last_seen, r.queries, r.blocked)
        for r in _table(repo, "SELECT * FROM category_use")
    } == {
        key: (
            max(e.time for e in found),
            len(found),
            sum(e.action in BLOCKING_ACTIONS for e in found),
        )
        for key, found in used.items()
    }


def test_counts_match_the_events_and_nothing_sent_twice_counts_twice(
    repo: SqlRepository,
) -> None:
    site, _ = repo.add_site("north-primary")
    other, _ = repo.add_site("south-academy")
    assert repo.ingest(site, "a", mixed(1, 200), keep_after=0).inserted == 200
    assert repo.ingest(other, "a", mixed(1, 50), keep_after=0).inserted == 50
    assert_counts_match_events(repo)
    assert _table(repo, "SELECT * FROM category_use"), "the test data must use genai"
    before = _table(repo, "SELECT * FROM event_counts ORDER BY site_id, hour, kind, grp")

    assert repo.ingest(site, "a", mixed(1, 200), keep_after=0).replayed
    assert _table(repo, "SELECT * FROM event_counts ORDER BY site_id, hour, kind, grp") == before

    # The same events regrouped under another key, half of them new.
    overlap = repo.ingest(site, "b", mixed(101, 200), keep_after=0)
    assert (overlap.inserted, overlap.duplicates) == (100, 100)
    assert_counts_match_events(repo)


def test_a_batch_holding_the_same_event_twice_counts_it_once(repo: SqlRepository) -> None:
    site, _ = repo.add_site("north-primary")
    batch = mixed(1, 10)
    result = repo.ingest(site, "k", batch + batch[:4], keep_after=0)
    assert (result.inserted, result.duplicates) == (10, 4)
    assert_counts_match_events(repo)


def test_expired_events_are_not_counted(repo: SqlRepository) -> None:
    site, _ = repo.add_site("north-primary")
    result = repo.ingest(site, "k", mixed(1, 100), keep_after=NOW - DAY)
    assert result.expired > 0
    assert_counts_match_events(repo)


def _dns(seq: int, when: float, **fields: Any) -> ShippedEvent:
    return ShippedEvent(seq=seq, kind=EventKind.DNS, time=when, **fields)


def test_a_device_keeps_its_newest_name_and_group(repo: SqlRepository) -> None:
    site, _ = repo.add_site("north-primary")
    ip = {"client_ip": "10.0.0.9", "mac": "aa:bb:cc:dd:ee:ff"}
    repo.ingest(
        site,
        "1",
        [
            _dns(1, NOW - 300, hostname="old-name", group="ks2", **ip),
            _dns(2, NOW - 200, hostname="new-name", group="staff", **ip),
            _dns(3, NOW - 100, hostname="", group="", **ip),  # a query without a DHCP name
        ],
        keep_after=0,
    )
    # A late batch from before: it widens first_seen but does not undo the rename.
    repo.ingest(site, "2", [_dns(4, NOW - 900, hostname="older-name", group="ks1", **ip)], 0)
    (device,) = _table(repo, "SELECT * FROM devices")
    assert (device.hostname, device.grp, device.events) == ("new-name", "staff", 4)
    assert (device.first_seen, device.last_seen) == (NOW - 900, NOW - 100)
    # A newer one renames it.
    repo.ingest(site, "3", [_dns(5, NOW - 50, hostname="renamed", **ip)], 0)
    (device,) = _table(repo, "SELECT * FROM devices")
    assert (device.hostname, device.grp, device.last_seen) == ("renamed", "staff", NOW - 50)


def test_blocked_names_count_blocked_lookups_only(repo: SqlRepository) -> None:
    site, _ = repo.add_site("north-primary")
    when = day_of(NOW) + 60
    repo.ingest(
        site,
        "1",
        [
            _dns(1, when, name="bad.example", action="block", categories=("adult",)),
            _dns(2, when + 1, name="bad.example", action="block+alert", categories=("gambling",)),
            _dns(3, when + 2, name="bad.example", action="allow"),
            _dns(4, when + 3, name="fine.example", action="rewrite"),
            # The alert about a blocked lookup is the same lookup: not counted again.
            ShippedEvent(
                seq=5, kind=EventKind.ALERT, time=when + 4, name="bad.example", action="block"
            ),
        ],
        keep_after=0,
    )
    rows = _table(repo, "SELECT day, name, category, count FROM blocked_names")
    assert [tuple(r) for r in rows] == [(day_of(NOW), "bad.example", "gambling", 2)]


def test_prune_forgets_old_counts(repo: SqlRepository) -> None:
    site, _ = repo.add_site("north-primary")
    today = day_of(NOW)
    old = [
        _dns(1, today - 10 * DAY, client_ip="10.0.0.1", name="a.example", action="block"),
        _dns(2, today - 10 * DAY + HOUR, client_ip="10.0.0.1", name="a.example", action="block"),
    ]
    new = [_dns(3, today + 60, client_ip="10.0.0.2", name="b.example", action="block")]
    ai = {"client_ip": "10.0.0.3", "name": "chat.ai.example", "categories": ("genai",)}
    used = [_dns(4, today - 10 * DAY, **ai), _dns(5, today + 90, **ai)]
    repo.ingest(site, "k", old + new + used, keep_after=0)
    repo.prune(today - 5 * DAY)
    assert [r.day for r in _table(repo, "SELECT day FROM category_use")] == [today]
    assert {r.hour for r in _table(repo, "SELECT hour FROM event_counts")} == {today}
    assert [r.name for r in _table(repo, "SELECT name FROM blocked_names")] == ["b.example"]
    devices = _table(repo, "SELECT client_ip FROM devices ORDER BY client_ip")
    assert [r.client_ip for r in devices] == ["10.0.0.2", "10.0.0.3"]


def test_concurrent_overlapping_batches_count_each_event_once(repo: SqlRepository) -> None:
    # Four agents' worth of retries at once: the same events in different batches and orders.
    # Row locks taken in key order mean PostgreSQL never has to break a deadlock here.
    site: SiteRef = repo.add_site("north-primary")[0]
    events = mixed(1, 300, start=NOW - HOUR * 6)
    failures: list[BaseException] = []

    def send(worker: int) -> None:
        shuffled = random.Random(worker).sample(events, len(events))
        try:
            for part in range(3):
                repo.ingest(site, f"w{worker}-{part}", shuffled[part * 100 :][:150], 0)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=send, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert repo.count_events(site.id) == 300
    assert_counts_match_events(repo)


def test_hours_and_days_split_at_their_boundaries_as_hour_of_says(repo: SqlRepository) -> None:
    # The last float before a boundary belongs to the hour (and day) before, the boundary
    # itself to the next, on both databases.
    site, _ = repo.add_site("north-primary")
    midnight = day_of(NOW)
    edges = [midnight, midnight + HOUR, midnight + 5 * HOUR]
    times = [
        t for edge in edges for t in (math.nextafter(edge, 0), edge, math.nextafter(edge, NOW * 2))
    ]
    batch = [
        _dns(seq, when, client_ip="10.0.0.1", name="bad.example", action="block")
        for seq, when in enumerate(times, 1)
    ]
    assert repo.ingest(site, "k", batch, keep_after=0).inserted == len(times)
    assert_counts_match_events(repo)
    hours = sorted(r.hour for r in _table(repo, "SELECT hour FROM event_counts"))
    assert hours == sorted(
        {midnight - HOUR, midnight, midnight + 4 * HOUR, midnight + HOUR, midnight + 5 * HOUR}
    )


def test_the_newest_event_names_the_device_and_of_two_at_once_the_later_number(
    repo: SqlRepository,
) -> None:
    site, _ = repo.add_site("north-primary")
    ip = {"client_ip": "10.0.0.9", "mac": ""}
    repo.ingest(
        site,
        "1",
        [
            _dns(7, NOW - 5, hostname="second", group="staff", **ip),
            _dns(6, NOW - 5, hostname="first", group="ks1", **ip),
            # The highest number, but older: a number is no clock.
            _dns(10, NOW - 9, hostname="oldest", group="ks2", **ip),
            _dns(5, NOW, hostname="", group="", **ip),  # the newest has no name to give
            _dns(8, NOW - 1, name="bad.example", action="block", categories=("adult",)),
            _dns(9, NOW - 1, name="bad.example", action="block", categories=("games",)),
            _dns(11, NOW - 2, name="bad.example", action="block", categories=("gambling",)),
        ],
        keep_after=0,
    )
    (device,) = _table(
        repo, "SELECT hostname, grp, last_seen FROM devices WHERE client_ip = '10.0.0.9'"
    )
    assert tuple(device) == ("second", "staff", NOW)
    (blocked,) = _table(repo, "SELECT category, count FROM blocked_names")
    assert tuple(blocked) == ("games", 3)


def test_a_batch_that_fails_does_not_break_the_next_on_the_same_connection(
    repo: SqlRepository,
) -> None:
    # On PostgreSQL a batch holding events held already is staged in a temporary table, made
    # in the batch's transaction the first time a connection needs it; a batch that fails
    # takes the table with it, and the next one must make it again.
    if repo.partitions is None:
        pytest.skip("PostgreSQL only: SQLite inserts the rows directly")
    site, _ = repo.add_site("north-primary")

    def batch(first: int) -> list[ShippedEvent]:
        return [
            _dns(seq, NOW - 60, client_ip="10.0.0.1", name="bad.example", action="block")
            for seq in range(first, first + 10)
        ]

    assert repo.ingest(site, "1", batch(1), keep_after=0).inserted == 10
    with pytest.raises(RuntimeError), repo.engine.begin() as conn:
        rows = [event_values(site.id, e, NOW) for e in batch(6)]
        assert _insert_postgresql(conn, site.id, rows) == 5  # staged: five were held
        raise RuntimeError("the batch fails after its rows were staged")
    assert cast(QueuePool, repo.engine.pool).checkedin() == 1, (
        "one connection, used by every batch here"
    )
    result = repo.ingest(site, "2", batch(6), keep_after=0)
    assert (result.inserted, result.duplicates) == (5, 5)
    assert repo.count_events(site.id) == 15
    assert_counts_match_events(repo)


def test_a_batch_read_back_with_another_is_still_counted_once(repo: SqlRepository) -> None:
    # Two batches of one site received at the same moment, with sequence numbers in the same
    # range: reading one back would find the other's events too, so it is counted from the
    # batch itself instead.
    site, _ = repo.add_site("north-primary")
    blocked = {"name": "bad.example", "action": "block"}
    first = [_dns(seq, NOW - 45, client_ip="10.0.0.1", **blocked) for seq in (1, 3, 5)]
    second = [_dns(seq, NOW - 90 + seq * 15, client_ip="10.0.0.2", **blocked) for seq in (2, 4)]
    if repo.partitions is not None:
        repo.partitions.ensure([NOW - 60, NOW - 30])
    with repo.engine.begin() as conn:
        for batch in (first, second):
            rows = [event_values(site.id, e, NOW) for e in batch]
            inserted = (
                _insert_postgresql(conn, site.id, rows)
                if repo.postgresql
                else repo._insert_events(conn, site, rows)
            )
            assert inserted == len(batch)
    assert_counts_match_events(repo)
