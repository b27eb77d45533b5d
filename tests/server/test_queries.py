"""The admin API's reads, on SQLite and PostgreSQL: filters, pages and counts."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Select, insert

from schoolgate.agent.activity.events import EventKind, Severity
from schoolgate.event_batch import ShippedEvent
from schoolgate.server.db import migrate
from schoolgate.server.db.engine import open_engine
from schoolgate.server.db.schema import UnblockRequest
from schoolgate.server.queries import (
    DEVICE_KEY,
    EVENT_KEY,
    EVENT_KEY_COLUMNS,
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


def event_keys(page: Page) -> list[Key]:
    return [(row["time"], row["site_id"], row["seq"]) for row in page.rows]


def test_a_search_over_sites_interleaves_them_newest_first(repo: SqlRepository) -> None:
    a, b, c = (repo.add_site(name)[0] for name in ("a-school", "b-school", "c-school"))
    at = NOW - 600
    repo.ingest(a, "k", [dns(1, at), dns(2, at), dns(3, at + 2), dns(4, at + 5)], 0)
    repo.ingest(b, "k", [dns(1, at), dns(2, at + 2), dns(3, at + 3)], 0)
    repo.ingest(c, "k", [dns(7, at + 1), dns(8, at + 5)], 0)
    queries = EventQueries(repo.engine)
    # Equal times: the higher site first, then the higher sequence number.
    newest_first = [
        (at + 5, c.id, 8),
        (at + 5, a.id, 4),
        (at + 3, b.id, 3),
        (at + 2, b.id, 2),
        (at + 2, a.id, 3),
        (at + 1, c.id, 7),
        (at, b.id, 1),
        (at, a.id, 2),
        (at, a.id, 1),
    ]
    for sites in ((a.id, b.id, c.id), (c.id, a.id, b.id), (b.id, a.id, c.id, a.id)):
        for limit in range(1, 11):
            keys = everything(
                queries.events, EventFilter(sites), limit, EVENT_KEY_COLUMNS, EVENT_KEY
            )
            assert keys == newest_first, (sites, limit)
    assert event_keys(queries.events(EventFilter((a.id, c.id), since=at + 1), 10)) == [
        (at + 5, c.id, 8),
        (at + 5, a.id, 4),
        (at + 2, a.id, 3),
        (at + 1, c.id, 7),
    ]
    # An end and a key: whichever is earlier decides.
    ends = EventFilter((a.id, b.id, c.id), until=at + 3)
    assert event_keys(queries.events(ends, 10, (at + 5, a.id, 4))) == newest_first[3:]
    assert event_keys(queries.events(ends, 10, (at + 2, b.id, 2))) == newest_first[4:]
    assert event_keys(queries.events(ends, 10, (at + 1, c.id, 7))) == newest_first[6:]
    assert queries.events(EventFilter(()), 10) == Page([], None)


def district_day(seq: int) -> ShippedEvent:
    """One of a day's events, varied by its number so that every filter picks some: devices
    and groups shared by the schools (their networks are alike), three events an instant."""
    alert = seq % 10 == 0
    return ShippedEvent(
        seq=seq,
        kind=EventKind.ALERT if alert else (EventKind.DEVICE if seq % 13 == 0 else EventKind.DNS),
        time=NOW - 5 * HOUR + (seq // 3) * 60,
        client_ip=f"10.0.0.{seq % 5}",
        mac=f"aa:bb:cc:00:00:{seq % 6:02d}",
        hostname=f"laptop-{seq % 4}",
        group=("ks2", "ks3", "staff")[seq % 3],
        name=("www.games.example", "games.example", "news.example", "a.b.example")[seq % 4],
        action="block" if seq % 2 else "allow",
        categories=(("games", "social") if seq % 7 == 0 else ("games",)) if seq % 2 else (),
        severity=Severity.HIGH if alert and seq % 20 == 0 else Severity.LOW if alert else None,
    )


DISTRICT_SEARCHES: list[dict[str, Any]] = [
    {},
    {"client": "10.0.0.3"},
    {"mac": "aa:bb:cc:00:00:04"},
    {"hostname": "laptop-1"},
    {"group": "ks3"},
    {"name": "games.example"},
    {"category": "social"},
    {"action": "block"},
    {"kinds": ("alert",)},
    {"kinds": ("alert",), "severity": "high"},
    {"kinds": ("dns", "device")},
    {"since": NOW - 4 * HOUR, "until": NOW - 2 * HOUR},
    {"group": "ks2", "action": "allow", "hostname": "laptop-2"},
    {"received_by": 0.0},
]


@pytest.fixture
def district(repo: SqlRepository) -> list[SiteRef]:
    """A large school (240 events) and four small ones (12 to 30), on one morning."""
    sites = [repo.add_site(f"school-{n}")[0] for n in range(5)]
    repo.ingest(sites[0], "k", [district_day(s) for s in range(1, 241)], 0)
    for n, site in enumerate(sites[1:], 1):
        repo.ingest(site, "k", [district_day(s) for s in range(n * 7, n * 7 + 6 * (n + 1))], 0)
    return sites


@pytest.mark.parametrize("asked", DISTRICT_SEARCHES, ids=lambda asked: ",".join(asked) or "all")
def test_a_district_search_is_its_schools_searches_merged(
    repo: SqlRepository, district: list[SiteRef], asked: dict[str, Any]
) -> None:
    queries = EventQueries(repo.engine)
    found = EventFilter(tuple(site.id for site in district), **asked)

    def each_school(f: EventFilter) -> list[Key]:
        return [
            key for s in f.sites for key in event_keys(queries.events(replace(f, sites=(s,)), 1000))
        ]

    expected = sorted(each_school(found), reverse=True)
    assert expected or asked == {"received_by": 0.0}
    for limit in (1, 7, 50, 1000):
        assert everything(queries.events, found, limit, EVENT_KEY_COLUMNS, EVENT_KEY) == expected


class CountingQueries(EventQueries):
    """The rows each read of a search asked for."""

    asked: list[int]

    def _events_query(self, f: EventFilter, most: int, after: Key | None) -> Select[Any]:
        self.asked.append(most)
        return super()._events_query(f, most, after)


def test_a_large_page_over_sites_reads_little_more_than_it_returns(
    repo: SqlRepository, district: list[SiteRef]
) -> None:
    # An export reads thousands of rows a page: the sites are read as the merge needs them,
    # not a whole page from each.
    queries = CountingQueries(repo.engine)
    found = EventFilter(tuple(site.id for site in district))
    for limit in (100, 300):
        queries.asked = []
        page = queries.events(found, limit)
        assert len(page.rows) == min(limit, 240 + 12 + 18 + 24 + 30)
        assert sum(queries.asked) <= 3 * (limit + 1) + 11 * len(district), limit
    queries.asked = []
    rows = queries.events(EventFilter((district[1].id,)), 5).rows
    assert len(rows) == 5 and queries.asked == [6]  # one school: one read, as ever


@pytest.mark.parametrize(
    ("asked", "index"),
    [
        ({}, "ix_events_site_time"),
        ({"client": "10.0.0.2"}, "ix_events_site_client"),
        ({"mac": "aa:bb:cc:00:00:01"}, "ix_events_site_mac"),
        ({"hostname": "laptop-1"}, "ix_events_site_hostname"),
        ({"name": "games.example"}, "ix_events_site_rname"),
        ({"kinds": ("alert",)}, "ix_events_site_alerts"),
    ],
)
def test_sqlite_reads_every_page_by_the_searchs_index(
    tmp_path: Path, asked: dict[str, Any], index: str
) -> None:
    # SQLite plans without statistics or the values bound: the shape of the statement decides,
    # and with a start, an end and a key on ``time`` it took the time index for a device.
    engine = open_engine(f"sqlite:///{tmp_path / 'plans.sqlite'}")
    migrate.init(engine)
    queries = EventQueries(engine)
    found = EventFilter((1,), since=NOW - DAY, until=NOW, **asked)
    try:
        with engine.connect() as conn:
            for after in (None, (NOW - HOUR, 1, 99)):
                compiled = queries._events_query(found, 8, after).compile(
                    engine, compile_kwargs={"render_postcompile": True}
                )
                bound = tuple(compiled.params[name] for name in compiled.positiontup or ())
                plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", bound).all()
                assert f"USING INDEX {index} " in plan[0][3], (after, plan)
    finally:
        engine.dispose()


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
