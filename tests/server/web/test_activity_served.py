"""Activity search and its export over real HTTP, and names from the network shown only as
text on every page."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from urllib.parse import urlencode

from sqlalchemy import text

from schoolgate.agent.activity.events import EventKind, Severity
from schoolgate.event_batch import ShippedEvent
from tests.server.test_admin_api_served import NOW, World
from tests.support.browser import Browser

HOSTILE = "<img src=x onerror=alert(1)>.example"


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
