"""The admin API's reads, on SQLite and PostgreSQL: filters, pages and counts."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import insert

from schoolgate.agent.activity.events import EventKind, Severity
from schoolgate.event_batch import ShippedEvent
from schoolgate.server.db.schema import UnblockRequest
from schoolgate.server.queries import (
    DEVICE_KEY,
    EVENT_KEY,
    REQUEST_KEY,
    DeviceFilter,
    EventFilter,
    EventQueries,
    Key,
    Page,
    decode_cursor,
    encode_cursor,
)
from schoolgate.server.repository import SiteRef, SqlRepository
from schoolgate.server.rollups import DAY, HOUR, day_of, hour_of

NOW = time.time()


@pytest.fixture
def two_sites(repo: SqlRepository) -> tuple[SiteRef, SiteRef]:
    return repo.add_site("north-primary")[0], repo.add_site("south-academy")[0]


def dns(seq: int, when: float = NOW - 60, **fields: Any) -> ShippedEvent:
    return ShippedEvent(seq=seq, kind=EventKind.DNS, time=when, **fields)


def names(page: Page) -> list[str]:
    return [row["name"] for row in page.rows]


def everything(
    read: Any, first: Any, limit: int, key: tuple[str, ...], shape: tuple[type, ...]
) -> list[Key]:
    """Every row's key, a page of ``limit`` at a time, through cursors as a client has them."""
    seen: list[Key] = []
    after = None
    while True:
        page = read(first, limit, after)
        seen.extend(tuple(row[k] for k in key) for row in page.rows)
        if page.next is None:
            return seen
        after = decode_cursor(encode_cursor(page.next), shape)


def test_a_name_finds_itself_and_the_names_below_it_only(
    repo: SqlRepository, two_sites: tuple[SiteRef, SiteRef]
) -> None:
    north, _ = two_sites
    listed = [
        "bad.example",
        "www.bad.example",
        "a.b.bad.example",
        "notbad.example",
        "bad.example.evil",
        "bad-example",
        "my_site.example",
        "myxsite.example",
        "www.my_site.example",
    ]
    repo.ingest(north, "k", [dns(i + 1, name=n) for i, n in enumerate(listed)], 0)
    queries = EventQueries(repo.engine)

    def search(name: str) -> set[str]:
        return set(names(queries.events(EventFilter(sites=(north.id,), name=name), 100)))

    assert search("bad.example") == {"bad.example", "www.bad.example", "a.b.bad.example"}
    assert search("BAD.example.") == search("bad.example")
    assert search("www.bad.example") == {"www.bad.example"}
    # An underscore is a character of the name, not a wildcard.
    assert search("my_site.example") == {"my_site.example", "www.my_site.example"}
    assert search("example") == set(listed) - {"bad.example.evil", "bad-example"}


def test_a_category_matches_the_deciding_one_or_any_other(
    repo: SqlRepository, two_sites: tuple[SiteRef, SiteRef]
) -> None:
    north, _ = two_sites
    repo.ingest(
        north,
        "k",
        [
            dns(1, name="a.example", categories=("adult",)),
            dns(2, name="b.example", categories=("gambling", "adult")),
            dns(3, name="c.example", categories=("adult-content",)),
            dns(4, name="d.example", categories=("a_ult",)),
        ],
        0,
    )
    queries = EventQueries(repo.engine)
    found = queries.events(EventFilter(sites=(north.id,), category="adult"), 10)
    assert set(names(found)) == {"a.example", "b.example"}
    assert names(queries.events(EventFilter(sites=(north.id,), category="a_ult"), 10)) == [
        "d.example"
    ]


def test_filters_and_sites(repo: SqlRepository, two_sites: tuple[SiteRef, SiteRef]) -> None:
    north, south = two_sites
    repo.ingest(
        north,
        "k",
        [
            dns(1, NOW - 3 * HOUR, name="old.example"),
            dns(2, client_ip="10.0.0.2", name="by-ip.example"),
            dns(3, mac="aa:bb:cc:dd:ee:ff", name="by-mac.example"),
            dns(4, hostname="LAPTOP-7", name="by-host.example"),
            dns(5, group="ks2", action="block", name="blocked.example"),
            ShippedEvent(
                seq=6, kind=EventKind.ALERT, time=NOW - 60, severity=Severity.HIGH, name="al.ex"
            ),
            ShippedEvent(seq=7, kind=EventKind.DEVICE, time=NOW - 60, client_ip="10.0.0.3"),
        ],
        0,
    )
    repo.ingest(south, "k", [dns(1, name="south.example", client_ip="10.0.0.2")], 0)
    queries = EventQueries(repo.engine)

    def search(**given: Any) -> list[str]:
        f = EventFilter(**{"sites": (north.id,), "since": NOW - HOUR, **given})
        return [f"{r['seq']}" for r in queries.events(f, 100).rows]

    assert search() == ["7", "6", "5", "4", "3", "2"]
    assert search(since=None) == ["7", "6", "5", "4", "3", "2", "1"]
    assert search(since=NOW - 4 * HOUR, until=NOW - HOUR) == ["1"]
    assert search(client="10.0.0.2") == ["2"]
    assert search(mac="aa:bb:cc:dd:ee:ff") == ["3"]
    assert search(hostname="LAPTOP-7") == ["4"]
    assert search(group="ks2", action="block") == ["5"]
    assert search(kinds=("alert",), severity="high") == ["6"]
    assert search(kinds=("dns", "device")) == ["7", "5", "4", "3", "2"]
    assert search(sites=(north.id, south.id), client="10.0.0.2") == ["1", "2"]  # south first
    assert search(sites=()) == []
    assert search(received_by=0.0) == []


def test_pages_with_equal_times_neither_skip_nor_repeat(
    repo: SqlRepository, two_sites: tuple[SiteRef, SiteRef]
) -> None:
    # 40 events at one instant at each site, plus some either side: every page boundary
    # falls among equal times.
    north, south = two_sites
    same = NOW - 600
    for site in two_sites:
        repo.ingest(
            site,
            "k",
            [dns(s, same) for s in range(1, 41)] + [dns(s, same + s) for s in range(41, 46)],
            0,
        )
        repo.ingest(site, "earlier", [dns(s, same - s) for s in range(46, 50)], 0)
    queries = EventQueries(repo.engine)
    f = EventFilter(sites=(north.id, south.id))
    for limit in (1, 7, 40, 1000):
        keys = everything(queries.events, f, limit, ("time", "site_id", "seq"), EVENT_KEY)
        assert len(keys) == len(set(keys)) == 98
        assert keys == sorted(keys, reverse=True)


def test_counting_stops_at_the_cap(repo: SqlRepository, two_sites: tuple[SiteRef, SiteRef]) -> None:
    north, _ = two_sites
    repo.ingest(north, "k", [dns(s) for s in range(1, 51)], 0)
    queries = EventQueries(repo.engine)
    f = EventFilter(sites=(north.id,))
    assert queries.count_events(f, 1000) == 50
    assert queries.count_events(f, 20) == 20


def test_daily_counts_and_top_blocked(
    repo: SqlRepository, two_sites: tuple[SiteRef, SiteRef]
) -> None:
    north, south = two_sites
    today = day_of(NOW)
    yesterday = today - DAY
    events = [
        dns(1, yesterday + 10, group="ks2", action="block", categories=("adult",), name="x.ex"),
        dns(2, yesterday + 20, group="ks2", action="allow", categories=("adult",), name="y.ex"),
        dns(3, today + 10, group="ks2", action="block+alert", categories=("adult",), name="x.ex"),
        dns(4, today + 20, group="ks2", action="block", categories=("adult",), name="x.ex"),
        dns(5, today + 30, group="ks2", action="block", categories=("adult",), name="z.ex"),
        ShippedEvent(
            seq=6,
            kind=EventKind.ALERT,
            time=today + 40,
            group="ks2",
            categories=("adult",),
            action="block+alert",
            name="x.ex",
        ),
        ShippedEvent(seq=7, kind=EventKind.DEVICE, time=today + 50, client_ip="10.0.0.1"),
    ]
    repo.ingest(north, "k", events, 0)
    repo.ingest(south, "k", [dns(1, today + 10, action="block", name="south.ex")], 0)
    queries = EventQueries(repo.engine)
    rows = queries.daily((north.id,), yesterday, None)
    assert [
        (r["day"], r["grp"], r["category"], r["queries"], r["blocked"], r["alerts"]) for r in rows
    ] == [
        (today, "ks2", "adult", 3, 3, 1),
        (yesterday, "ks2", "adult", 2, 1, 0),
    ]
    assert queries.daily((north.id,), today, None, group="staff") == []
    assert [r["day"] for r in queries.daily((north.id,), hour_of(NOW - 3 * DAY), today)] == [
        yesterday
    ]

    top = queries.top_blocked((north.id,), yesterday, None, limit=10)
    assert [(r["name"], r["count"]) for r in top] == [("x.ex", 3), ("z.ex", 1)]
    assert queries.top_blocked((north.id,), today, None, limit=1)[0]["count"] == 2
    both = queries.top_blocked((north.id, south.id), today, None, limit=10)
    assert {r["name"] for r in both} == {"x.ex", "z.ex", "south.ex"}
    assert queries.top_blocked((), today, None, limit=10) == []


def test_devices_come_newest_first_in_pages(
    repo: SqlRepository, two_sites: tuple[SiteRef, SiteRef]
) -> None:
    north, south = two_sites
    for site in two_sites:
        repo.ingest(
            site,
            "k",
            [dns(s, NOW - 100 + s % 4, client_ip=f"10.0.0.{s}", mac="") for s in range(1, 30)],
            0,
        )
    queries = EventQueries(repo.engine)
    keys = everything(
        queries.devices,
        DeviceFilter(sites=(north.id, south.id)),
        4,
        ("last_seen", "site_id", "client_ip", "mac"),
        DEVICE_KEY,
    )
    assert len(keys) == len(set(keys)) == 58
    assert keys == sorted(keys, reverse=True)
    (one,) = queries.devices(DeviceFilter(sites=(north.id,), client="10.0.0.7"), 10).rows
    assert one["events"] == 1 and one["site_id"] == north.id


def test_requests_by_status_in_pages(
    repo: SqlRepository, two_sites: tuple[SiteRef, SiteRef]
) -> None:
    north, south = two_sites
    rows = [
        {
            "site_id": site.id,
            "id": f"r{n:03d}",
            "created": NOW - 100 + n % 3,
            "received": NOW,
            "client_ip": "10.0.0.1",
            "mac": "",
            "hostname": "",
            "grp": "ks2",
            "name": "games.example",
            "category": "games",
            "reason": "homework",
            "language": "en",
            "status": "pending" if n % 2 else "refused",
        }
        for site in two_sites
        for n in range(20)
    ]
    with repo.engine.begin() as conn:
        conn.execute(insert(UnblockRequest), rows)
    queries = EventQueries(repo.engine)
    keys = everything(
        lambda f, limit, after: queries.requests(f, "pending", limit, after),
        (north.id, south.id),
        3,
        ("created", "site_id", "id"),
        REQUEST_KEY,
    )
    assert len(keys) == len(set(keys)) == 20
    assert keys == sorted(keys, reverse=True)
    assert len(queries.requests((south.id,), "", 100).rows) == 20


@pytest.mark.parametrize(
    "text",
    ["", "not base64!", encode_cursor((1.0, 2)), encode_cursor((1.0, "2", 3)), "WzEsMiwzXQ"],
)
def test_a_cursor_not_made_here_is_refused(text: str) -> None:
    shape = EVENT_KEY if text != "WzEsMiwzXQ" else DEVICE_KEY
    with pytest.raises(ValueError, match="not a cursor"):
        decode_cursor(text, shape)


def test_a_cursor_round_trips() -> None:
    assert decode_cursor(encode_cursor((1700000000.25, 3, 99)), EVENT_KEY) == (
        1700000000.25,
        3,
        99,
    )
    # A whole-number time written by JSON as an integer is still a time.
    assert decode_cursor(encode_cursor((1700000000, 3, 99)), EVENT_KEY) == (1700000000.0, 3, 99)
