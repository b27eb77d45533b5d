"""The pages where a school records what it did, over real HTTP against a real collector:
acknowledging alerts, reviewing devices and deciding unblock requests; and the guards on
each form (role, school, CSRF token)."""

from __future__ import annotations

import re
from collections.abc import Callable

from sqlalchemy import text

from tests.server.test_admin_api_served import World
from tests.support.browser import Browser, hidden_fields


def _form_fields(page: str, action: str) -> dict[str, str]:
    """The hidden fields of the first form posting to ``action``."""
    start = page.index(f'action="{action}"')
    return hidden_fields(page[start : page.index("</form>", start)])


def test_a_safeguarding_lead_acknowledges_an_alert_with_what_was_done(
    world: World, browser: Callable[..., Browser]
) -> None:
    lead = browser("lead-north")
    inbox = lead.get("/alerts", state="open")
    assert inbox.status_code == 200
    assert "north-harm.example" in inbox.text and "south-harm.example" not in inbox.text
    fields = _form_fields(inbox.text, "/alerts/acknowledge")
    done = lead.post(
        "/alerts/acknowledge",
        {**fields, "outcome": "spoke-to-user", "note": "Talked with the pupil and their teacher"},
    )
    assert done.status_code == 303
    assert done.headers["location"] == "/alerts?state=open&done=acknowledged"
    after = lead.follow(done)
    assert "north-harm.example" not in after.text
    closed = lead.get("/alerts", state="closed")
    assert "Talked with the pupil and their teacher" in closed.text
    assert "Spoke to the pupil or member of staff" in closed.text
    with world.repo.engine.connect() as conn:
        kept = conn.execute(text("SELECT name, outcome, reviewed_by FROM alert_reviews")).one()
        audited = (
            conn.execute(
                text("SELECT user_name FROM audit_log WHERE action = 'alerts.acknowledge'")
            )
            .scalars()
            .all()
        )
    assert tuple(kept) == ("north-harm.example", "spoke-to-user", "lead-north")
    assert audited == ["lead-north"]
    # Written once: a second acknowledgement of the same alert is refused.
    again = lead.post("/alerts/acknowledge", {**fields, "outcome": "other", "note": "again"})
    assert again.status_code == 409 and "acknowledged already" in again.text


def test_an_acknowledgement_needs_a_note_an_outcome_and_the_forms_token(
    world: World, browser: Callable[..., Browser]
) -> None:
    lead = browser("lead-north")
    fields = _form_fields(lead.get("/alerts").text, "/alerts/acknowledge")
    assert (
        lead.post("/alerts/acknowledge", {**fields, "outcome": "other", "note": " "}).status_code
        == 400
    )
    assert (
        lead.post("/alerts/acknowledge", {**fields, "outcome": "nothing", "note": "x"}).status_code
        == 400
    )
    forged = {**fields, "csrf": "forged"}
    assert (
        lead.post("/alerts/acknowledge", {**forged, "outcome": "other", "note": "x"}).status_code
        == 403
    )
    # Another lead's token is no good either: tokens are per session.
    other = _form_fields(browser("lead-south").get("/alerts").text, "/alerts/acknowledge")
    mixed = {**fields, "csrf": other["csrf"]}
    assert (
        lead.post("/alerts/acknowledge", {**mixed, "outcome": "other", "note": "x"}).status_code
        == 403
    )
    with world.repo.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alert_reviews")).scalar_one() == 0


def test_nobody_acknowledges_another_schools_alert(
    world: World, browser: Callable[..., Browser]
) -> None:
    north = _form_fields(browser("lead-north").get("/alerts").text, "/alerts/acknowledge")
    south = browser("lead-south")
    own = _form_fields(south.get("/alerts").text, "/alerts/acknowledge")
    answer = south.post(
        "/alerts/acknowledge",
        {**north, "csrf": own["csrf"], "outcome": "no-concern", "note": "not mine"},
    )
    assert answer.status_code == 403
    # An alert key that is no alert of the school named is refused, not guessed at.
    answer = south.post(
        "/alerts/acknowledge",
        {**own, "seq": "999", "outcome": "other", "note": "x"},
    )
    assert answer.status_code == 400 and "no such alert" in answer.text


def test_roles_see_only_their_pages(world: World, browser: Callable[..., Browser]) -> None:
    tech, viewer = browser("tech-north"), browser("viewer-north")
    assert tech.get("/alerts").status_code == 403
    assert "Not allowed" in tech.get("/alerts").text
    assert 'href="/alerts' not in tech.get("/").text
    for path in ("/activity", "/devices", "/requests", "/alerts"):
        assert viewer.get(path).status_code == 403
    assert viewer.get("/").status_code == 200


def _menu(page: str) -> dict[str, tuple[str, bool]]:
    """The main menu's links: each item's link and whether it is marked as the page shown."""
    menu = page[page.index('<nav aria-label="Main">') : page.index("</nav>")]
    return {
        label: (href, bool(current))
        for href, current, label in re.findall(
            r'<a href="([^"]*)"( aria-current="page")?>([^<]*)</a>', menu
        )
    }


def test_the_menu_opens_the_work_waiting_and_stays_marked_on_every_tab(
    world: World, browser: Callable[..., Browser]
) -> None:
    lead, tech = browser("lead-north"), browser("tech-north")
    # The inbox and the devices to review, as the overview's figures open them.
    assert _menu(lead.get("/").text)["Alerts"] == ("/alerts?state=open", False)
    assert _menu(tech.get("/").text)["Devices"] == ("/devices?state=new", False)
    assert _menu(lead.get("/").text)["Unblock requests"] == ("/requests?status=pending", False)
    for state in ("open", "closed", ""):
        assert _menu(lead.get("/alerts", state=state).text)["Alerts"][1], state
    for state in ("new", "approved", "known", ""):
        assert _menu(tech.get("/devices", state=state).text)["Devices"][1], state
    for status in ("pending", "approved", "refused", ""):
        assert _menu(lead.get("/requests", status=status).text)["Unblock requests"][1], status
    assert _menu(tech.get("/devices").text)["Overview"] == ("/", False)


def test_a_technician_approves_a_device_and_marks_another_known(
    world: World, browser: Callable[..., Browser]
) -> None:
    tech = browser("tech-north")
    new = tech.get("/devices", state="new")
    assert "north-laptop-0" in new.text and "south-laptop-0" not in new.text
    fields = _form_fields(new.text, "/devices/review")
    done = tech.post("/devices/review", {**fields, "status": "approved", "note": "Year 5 laptop"})
    assert done.status_code == 303 and "done=approved" in done.headers["location"]
    approved = tech.get("/devices", state="approved")
    assert "Year 5 laptop" in approved.text and fields["client_ip"] in approved.text
    fields = _form_fields(tech.get("/devices", state="new").text, "/devices/review")
    assert tech.post("/devices/review", {**fields, "status": "known"}).status_code == 303
    page = tech.get("/devices")
    assert "2 approved" not in page.text and "1 approved, 1 known" in page.text
    with world.repo.engine.connect() as conn:
        statuses = (
            conn.execute(text("SELECT status FROM device_reviews ORDER BY status")).scalars().all()
        )
    assert statuses == ["approved", "known"]


def test_a_safeguarding_lead_sees_devices_but_does_not_review_them(
    world: World, browser: Callable[..., Browser]
) -> None:
    lead = browser("lead-north")
    page = lead.get("/devices")
    assert page.status_code == 200 and 'action="/devices/review"' not in page.text
    csrf = hidden_fields(page.text)["csrf"]
    answer = lead.post(
        "/devices/review",
        {
            "csrf": csrf,
            "site": "north-primary",
            "client_ip": "10.1.0.1",
            "mac": "",
            "status": "approved",
        },
    )
    assert answer.status_code == 403


def test_an_unblock_request_is_approved_for_a_group_or_a_device_or_refused(
    world: World, browser: Callable[..., Browser]
) -> None:
    lead = browser("lead-north")
    waiting = lead.get("/requests", status="pending")
    assert waiting.text.count('action="/requests/decide"') == 3
    fields = _form_fields(waiting.text, "/requests/decide")
    approval = {**fields, "decision": "approve", "group": "ks2", "duration": "1d"}
    # Whether for the device or the group is asked every time, never assumed.
    unasked = lead.post("/requests/decide", {**approval, "note": "Topic work"})
    assert unasked.status_code == 400 and "scope: device or group" in unasked.text
    done = lead.post("/requests/decide", {**approval, "scope": "group", "note": "Topic work"})
    assert done.status_code == 303 and "done=approved" in done.headers["location"]
    fields = _form_fields(lead.get("/requests", status="pending").text, "/requests/decide")
    for_device = lead.post(
        "/requests/decide",
        {**fields, "decision": "approve", "scope": "device", "duration": "1h", "note": "Quiz"},
    )
    assert for_device.status_code == 303
    fields = _form_fields(lead.get("/requests", status="pending").text, "/requests/decide")
    refused = lead.post(
        "/requests/decide",
        {**fields, "decision": "refuse", "duration": "", "note": "Not needed for lessons"},
    )
    assert refused.status_code == 303
    with world.repo.engine.connect() as conn:
        decided = conn.execute(
            text(
                "SELECT status, note FROM unblock_requests"
                " WHERE status != 'pending' ORDER BY status"
            )
        ).all()
        granted = conn.execute(
            text("SELECT name, grp, device, reason FROM central_exceptions ORDER BY created")
        ).all()
    assert sorted(tuple(r) for r in decided) == [
        ("approved", "Quiz"),
        ("approved", "Topic work"),
        ("refused", "Not needed for lessons"),
    ]
    assert [tuple(g) for g in granted] == [
        ("north-games.example", "ks2", "", "Topic work"),
        ("north-games.example", "ks2", "10.0.0.1", "Quiz"),  # its MAC was not known
    ]
    listed = lead.get("/requests", status="approved")
    assert "Topic work" in listed.text and "lead-north" in listed.text
    policy = lead.get("/policy", site="north-primary")
    assert "only the device 10.0.0.1" in policy.text


def test_a_decision_needs_a_reason_and_the_decide_permission(
    world: World, browser: Callable[..., Browser]
) -> None:
    lead = browser("lead-north")
    fields = _form_fields(lead.get("/requests").text, "/requests/decide")
    answer = lead.post("/requests/decide", {**fields, "decision": "refuse", "note": ""})
    assert answer.status_code == 422 and "a reason is needed" in answer.text
    tech = browser("tech-north")
    page = tech.get("/requests")
    assert page.status_code == 200 and 'action="/requests/decide"' not in page.text
    csrf = hidden_fields(page.text)["csrf"]
    forbidden = tech.post(
        "/requests/decide", {**fields, "csrf": csrf, "decision": "refuse", "note": "no"}
    )
    assert forbidden.status_code == 403
