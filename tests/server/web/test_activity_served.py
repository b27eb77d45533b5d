"""Activity search and its export over real HTTP, and names from the network shown only as
text on every page."""

from __future__ import annotations

import csv
import html
import io
import json
import re
from collections.abc import Callable
from urllib.parse import urlencode

import pytest
from sqlalchemy import text

from schoolgate.agent.activity.events import EventKind, Severity
from schoolgate.event_batch import ShippedEvent
from tests.server.test_admin_api_served import NOW, World
from tests.support.browser import Browser

HOSTILE = "<img src=x onerror=alert(1)>.example"
LOOKED_UP = re.compile(r'<td class="name">([^<]*)</td>')
OLDER = re.compile(r'<a href="(/activity\?[^"]*cursor=[^"]*)">')


def last_minutes(school: str) -> list[ShippedEvent]:
    """Forty lookups in the last ten minutes, two an instant, at the same instants at every
    school; one in three blocked."""
    return [
        ShippedEvent(
            seq=100 + n,
            kind=EventKind.DNS,
            time=NOW - 600 + n // 2,
            client_ip="10.9.0.1",
            group="ks3",
            name=f"n{n}.{school}.example",
            action="allow" if n % 3 else "block",
        )
        for n in range(40)
    ]


def newest_first(schools: tuple[str, ...], blocked_only: bool = False) -> list[str]:
    """``last_minutes``' names as a search over ``schools`` (by site id, highest first) lists
    them: newest first, then the higher site, then the higher sequence number."""
    return [
        f"n{n}.{school}.example"
        for instant in reversed(range(20))
        for school in schools
        for n in (2 * instant + 1, 2 * instant)
        if not blocked_only or n % 3 == 0
    ]


def every_page(browser: Browser, query: dict[str, str] | None = None) -> list[list[str]]:
    """The names looked up on each page of a search, following its "Older" links."""
    pages = []
    page = browser.get("/activity?" + urlencode(query or {}))
    while True:
        assert page.status_code == 200
        pages.append(LOOKED_UP.findall(page.text))
        older = OLDER.search(page.text)
        if older is None:
            return pages
        page = browser.get(html.unescape(older.group(1)))


def test_a_search_by_device_name_finds_that_device_only(
    world: World, browser: Callable[..., Browser]
) -> None:
    lead = browser("lead-north")
    page = lead.get("/activity", hostname="north-laptop-1", site="north-primary")
    assert page.status_code == 200
    assert page.text.count("www.north-") == 7  # seq 1, 4, 7, ... 19
    assert "north-laptop-2" not in page.text and "south" not in page.text.split("<main>")[1]
    with world.repo.engine.connect() as conn:
        detail = conn.execute(
            text("SELECT detail FROM audit_log WHERE action = 'events.search'")
        ).scalar_one()
    assert json.loads(detail)["filters"]["hostname"] == "north-laptop-1"


def test_the_form_takes_local_times_and_blank_fields(
    world: World, browser: Callable[..., Browser]
) -> None:
    head = browser("head")
    blank = dict.fromkeys(("client", "mac", "hostname", "group", "name", "category"), "")
    query = urlencode({**blank, "since": "2000-01-01T00:00", "until": ""})
    page = head.get("/activity?" + query)
    assert page.status_code == 200 and "www.south-" in page.text
    bad = head.get("/activity", since="yesterday")
    assert bad.status_code == 400 and "is not a time" in bad.text


def test_a_technicians_search_leaves_the_alerts_out(
    world: World, browser: Callable[..., Browser]
) -> None:
    tech = browser("tech-north")
    page = tech.get("/activity")
    assert "www.north-" in page.text and "north-harm.example" not in page.text
    assert tech.get("/activity", kind="alert").status_code == 403


def test_the_export_link_gives_the_search_as_csv(
    world: World, browser: Callable[..., Browser]
) -> None:
    lead = browser("lead-north")
    page = lead.get("/activity", hostname="north-laptop-1")
    start = page.text.index('href="/activity.csv?') + len('href="')
    link = page.text[start : page.text.index('"', start)].replace("&amp;", "&")
    export = lead.get(link)
    assert export.status_code == 200
    assert export.headers["content-type"] == "text/csv; charset=utf-8"
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert len(rows) == 7 and {r["hostname"] for r in rows} == {"north-laptop-1"}
    tech = browser("tech-north")
    assert 'href="/activity.csv' not in tech.get("/activity").text
    assert tech.get(link).status_code == 403


def test_a_hostile_name_is_text_on_every_page(
    world: World, browser: Callable[..., Browser]
) -> None:
    world.repo.ingest(
        world.north,
        "hostile",
        [
            ShippedEvent(
                seq=300,
                kind=EventKind.DNS,
                time=NOW - 20,
                client_ip="10.1.0.66",
                hostname=HOSTILE,
                group="ks2",
                name=HOSTILE,
                action="block",
                categories=("games",),
            ),
            ShippedEvent(
                seq=301,
                kind=EventKind.ALERT,
                time=NOW - 19,
                client_ip="10.1.0.66",
                hostname=HOSTILE,
                group="ks2",
                name=HOSTILE,
                action="alert",
                categories=("self-harm",),
                severity=Severity.HIGH,
            ),
        ],
        keep_after=0,
    )
    head = browser("head")
    escaped = "&lt;img src=x onerror=alert(1)&gt;.example"
    for path, params in (
        ("/", {}),
        ("/activity", {"client": "10.1.0.66"}),
        ("/alerts", {}),
        ("/devices", {}),
    ):
        page = head.get(path + ("?" + urlencode(params) if params else ""))
        assert page.status_code == 200, path
        assert "<img" not in page.text, path
        assert escaped in page.text, path


def test_a_district_search_pages_through_every_school_newest_first(
    world: World, browser: Callable[..., Browser]
) -> None:
    for site, school in ((world.north, "north"), (world.south, "south")):
        world.repo.ingest(site, "minutes", last_minutes(school), keep_after=0)
    head = browser("head")
    pages = every_page(head)
    assert [len(p) for p in pages] == [50, 50, 24]  # 62 events at each school
    shown = [name for p in pages for name in p]
    assert shown[:80] == newest_first(("south", "north"))
    blocked = [name for p in every_page(head, {"action": "block"}) for name in p]
    assert blocked[:28] == newest_first(("south", "north"), blocked_only=True)
    # A lead's "all my schools" is her school only, however the search is read.
    lead = [name for p in every_page(browser("lead-north")) for name in p]
    assert lead[:40] == newest_first(("north",)) and len(lead) == 62
    assert not any(".south." in name or "south-" in name for name in lead)


def test_a_district_export_holds_every_school_in_the_pages_order(
    world: World, browser: Callable[..., Browser], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("schoolgate.server.admin_api.EXPORT_PAGE", 7)  # many pages
    for site, school in ((world.north, "north"), (world.south, "south")):
        world.repo.ingest(site, "minutes", last_minutes(school), keep_after=0)
    head = browser("head")
    page = head.get("/activity")
    start = page.text.index('href="/activity.csv?') + len('href="')
    export = head.get(html.unescape(page.text[start : page.text.index('"', start)]))
    assert export.status_code == 200 and export.headers["x-schoolgate-rows"] == "124"
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert len({(r["site"], r["seq"]) for r in rows}) == len(rows) == 124
    assert [r["name"] for r in rows[:80]] == newest_first(("south", "north"))
    assert [r["name"] for r in rows] == [name for p in every_page(head) for name in p]
