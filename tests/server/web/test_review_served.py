"""The annual review over real HTTP: every part of the evidence, as HTML and as CSV."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable

from schoolgate.agent.activity.events import EventKind
from schoolgate.event_batch import ShippedEvent
from schoolgate.server.policies import PolicyStore
from schoolgate.server.reviews import Reviews
from tests.server.test_admin_api_served import World, site_events
from tests.server.web.test_policy_served import REPORT, SCHOOL
from tests.support.browser import Browser


def test_a_schools_review_holds_policy_changes_alerts_and_the_policy_test(
    world: World, browser: Callable[..., Browser]
) -> None:
    store = PolicyStore(world.repo.engine)
    store.save(world.north, SCHOOL, "head", '=HYPERLINK("http://evil.example") games')
    alert = next(e for e in site_events("north", "10.1.0") if e.kind is EventKind.ALERT)
    Reviews(world.repo.engine).acknowledge(
        world.north.id, alert.seq, alert.time, "spoke-to-user", "talked", "lead-north"
    )
    report = ShippedEvent(
        seq=10_000, kind=EventKind.STATUS, time=time.time(), action="policy-test", data=REPORT
    )
    world.repo.ingest(world.north, "status", [report], keep_after=0)

    lead = browser("lead-north")
    page = lead.get("/review")  # one school: chosen for them
    assert page.status_code == 200
    text = page.text
    assert "Filtering and monitoring review: north-primary" in text
    assert "From the central policy" in text and "during lunch: Allowed" in text
    assert "HYPERLINK" in text  # the change's reason, as typed
    assert "Self-harm, suicide and eating disorders" in text  # the alert's category
    assert "Spoke to the pupil or member of staff" in text  # its outcome
    assert "Not as configured" in text  # the policy test's mismatch
    assert "/review.csv?site=north-primary" in text

    export = lead.get("/review.csv", site="north-primary")
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(export.text)))
    assert rows[0] == ["section", "item", "group", "category", "value", "detail"]
    sections = {r[0] for r in rows[1:]}
    assert {"summary", "policy (central)", "change", "alerts", "alert outcomes"} <= sections
    assert {"policy test"} <= sections
    change = next(r for r in rows if r[0] == "change")
    assert change[5].startswith("'=HYPERLINK")  # shown as text by a spreadsheet
    summary = {r[1]: r[4] for r in rows if r[0] == "summary"}
    assert (summary["alerts"], summary["alerts acknowledged"]) == ("1", "1")
    mismatch = next(r for r in rows if r[0] == "policy test" and r[1] == "mismatch")
    assert mismatch[2:5] == ["juniors", "gambling", "block"]


def test_formulas_at_a_cells_start_are_defused(
    world: World, browser: Callable[..., Browser]
) -> None:
    PolicyStore(world.repo.engine).grant(
        world.north, "maths.example", "pupils", "allow", 3_600, "=1+1 for the lesson", "head"
    )
    rows = list(
        csv.reader(io.StringIO(browser("head").get("/review.csv", site="north-primary").text))
    )
    granted = next(r for r in rows if r[0] == "exception")
    assert granted[1] == "maths.example" and granted[5].startswith("'=1+1 for the lesson (head")


def test_the_review_is_of_a_school_the_user_sees(
    world: World, browser: Callable[..., Browser]
) -> None:
    lead = browser("lead-north")
    assert lead.get("/review", site="south-academy").status_code == 403
    assert lead.get("/review.csv", site="south-academy").status_code == 403
    head = browser("head")
    assert "Choose a school" in head.get("/review").text
    assert head.get("/review.csv").status_code == 400
    assert (
        head.get(
            "/review", site="north-primary", since="2026-02-01", until="2026-01-01"
        ).status_code
        == 400
    )
