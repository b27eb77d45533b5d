"""The policy page over real HTTP: the matrix from the central policy or from the agent's own
report, the changes with who and why, exceptions, the latest policy test; and its scope."""

from __future__ import annotations

import time
from collections.abc import Callable

from schoolgate.agent.activity.events import EventKind
from schoolgate.event_batch import ShippedEvent
from schoolgate.server.policies import PolicyStore
from tests.server.test_admin_api_served import World
from tests.support.browser import Browser

SCHOOL = """
[policy]
actions = { social = "block", games = "block" }

[[schedules]]
name = "lunch"
days = ["mon", "tue", "wed", "thu", "fri"]
times = ["12:00-13:00"]

[[groups]]
name = "staff"
age_tier = "staff"
addresses = ["10.1.9.0/24"]
allow = ["maths.example"]
# <b>bold</b> in a comment

[[groups]]
name = "pupils"
default = true
schedules = { lunch = { games = "allow" } }
"""

REPORT = {
    "at": "2026-11-20 09:00",
    "timezone": "Europe/London",
    "schedules_on": ["lessons"],
    "exceptions": 0,
    "lists": {"build": "b7", "names": 1200, "in_service": True},
    "results": [
        {
            "group": "juniors",
            "category": "adult",
            "tier": "age-appropriate",
            "probe": "adult.test",
            "expected": "block",
            "actual": "block",
            "result": "ok",
            "note": "",
        },
        {
            "group": "juniors",
            "category": "gambling",
            "tier": "age-appropriate",
            "probe": "gambling.test",
            "expected": "block",
            "actual": "allow",
            "result": "mismatch",
            "note": "not in the category's lists",
        },
    ],
    "summary": {"checks": 2, "mismatches": 1, "overrides": 0, "passed": False},
}


def test_a_school_on_central_policy_sees_its_matrix_and_every_change(
    world: World, browser: Callable[..., Browser]
) -> None:
    store = PolicyStore(world.repo.engine)
    store.save(world.north, SCHOOL, "head", "Games blocked in lessons, allowed at lunch")
    page = browser("viewer-north").get("/policy")  # one school: it is chosen for them
    assert page.status_code == 200
    text = page.text
    assert "From the central policy" in text
    assert "Games blocked in lessons, allowed at lunch" in text and "head" in text
    # The matrix: both groups, the locked tier first, the lunch schedule's difference named.
    assert "<th>staff</th>" in text and "<th>pupils" in text
    assert text.index("Illegal content (always blocked)") < text.index("Social networks")
    assert "during lunch: Allowed" in text
    assert "maths.example" in text  # the staff's allow list
    # The document's own text is shown, escaped.
    assert "&lt;b&gt;bold&lt;/b&gt;" in text and "<b>bold</b>" not in text


def test_a_school_not_managed_centrally_shows_what_its_agent_reported(
    world: World, browser: Callable[..., Browser]
) -> None:
    report = ShippedEvent(
        seq=10_000,
        kind=EventKind.STATUS,
        time=time.time(),
        action="policy-test",
        data=REPORT,
    )
    world.repo.ingest(world.south, "status", [report], keep_after=0)
    head = browser("head")
    page = head.get("/policy", site="south-academy")
    assert page.status_code == 200
    assert "As the agent reported it in its policy test of 2026-11-20 09:00" in page.text
    assert "Schedules on then: lessons." in page.text
    assert "<th>juniors</th>" in page.text
    assert "Not as configured" in page.text and "not in the category&#39;s lists" in page.text
    # The district list: each school, how its policy is set and its last test.
    listing = head.get("/policy").text
    assert "south-academy" in listing and "1 not as configured" in listing
    assert "the agent&#39;s own file" in listing


def test_a_school_the_user_does_not_see_is_refused(
    world: World, browser: Callable[..., Browser]
) -> None:
    assert browser("lead-north").get("/policy", site="south-academy").status_code == 403
