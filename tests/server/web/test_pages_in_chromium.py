"""The admin pages in a real browser (Debian's headless Chromium, driven by Playwright), on a
real collector holding the demo district's week: signing in, searching and exporting the
activity, acknowledging an alert, approving an unblock request that a running agent then
honours, names from the network shown as text with nothing run, the language switch; and the
documentation's screenshots.

Every check waits on what the page shows (Playwright's auto-waiting, or a poll with a
deadline), never on how long something took.
"""

from __future__ import annotations

import csv
import struct
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import dns.message
import dns.query
from playwright.sync_api import Browser, Page, Route, expect

from schoolgate.agent.activity.events import EventKind, Severity
from schoolgate.agent.blockpage.store import UnblockStore
from schoolgate.event_batch import ShippedEvent
from schoolgate.server.policies import PolicyStore
from schoolgate.server.web._i18n import catalogue
from tests.conftest import AgentFactory
from tests.support.agent import AgentThread
from tests.support.chromium import LAPTOP, Tab, follow
from tests.support.collector import CollectorThread
from tests.support.demo_world import (
    ADMIN,
    ALERT_NAME,
    KNOWN_DEVICE,
    LEAD,
    NORTH,
    RIVERSIDE,
    SOUTH,
    DemoWorld,
)
from tests.support.screenshots import PAGES, take
from tests.support.users import PASSWORD
from tests.support.waiting import wait_for

IMG = "<img src=x onerror=alert(1)>.example"
SCRIPT = "<script>alert(2)</script>.example"
# Out of an attribute's quotes and into the page, were a value written unescaped.
BREAKOUT = '"><img src=x onerror=alert(3)>'
# A name a spreadsheet would run as a formula, were the export to write it as it is.
FORMULA = "=cmd|' /c calc'!a0.roblox.com"
ALLOWED, BLOCKED = ["192.0.2.1"], ["0.0.0.0"]
HOSTILE_DEVICE = {"client_ip": "10.1.0.66", "mac": "de:ad:be:ef:00:66", "hostname": SCRIPT}


def path_of(page: Page) -> str:
    return urlsplit(page.url).path


def cells(page: Page) -> list[list[str]]:
    """The text of each cell of the page's table, row by row."""
    return [row.locator("td").all_inner_texts() for row in page.locator("main tbody tr").all()]


def ingest(collector: CollectorThread, world: DemoWorld, key: str, *events: ShippedEvent) -> None:
    collector.repo.ingest(world.sites[NORTH], key, events, keep_after=0)


# --- signing in -----------------------------------------------------------------------------------


def test_a_wrong_password_is_refused_and_the_right_one_opens_the_overview(
    tab: Callable[..., Tab],
) -> None:
    page = tab().page
    page.goto("/")
    assert path_of(page) == "/sign-in"
    page.get_by_label("User name").fill(ADMIN)
    page.get_by_label("Password").fill("not the password")
    refused = follow(page, page.get_by_role("button", name="Sign in"))
    assert refused is not None and refused.status == 401
    expect(page.get_by_role("alert")).to_have_text(
        "Wrong user name or password, or the account is disabled."
    )
    # The name is kept for the next try; the password is never sent back into the page.
    expect(page.get_by_label("User name")).to_have_value(ADMIN)
    expect(page.get_by_label("Password")).to_have_value("")
    assert "not the password" not in page.content()

    page.get_by_label("Password").fill(PASSWORD)
    follow(page, page.get_by_role("button", name="Sign in"))
    assert path_of(page) == "/"
    expect(page.get_by_role("heading", level=1)).to_have_text("Overview")
    schools = page.locator("section", has=page.get_by_role("heading", name="Schools"))
    expect(schools.locator("tbody tr td:first-child")).to_have_text([NORTH, RIVERSIDE, SOUTH])
    session = next(c for c in page.context.cookies() if c["name"] == "__Host-schoolgate")
    assert session.get("httpOnly") and session.get("secure") and session.get("sameSite") == "Lax"
    # HttpOnly, so no script in the page could read the session even if one ran.
    assert "sgu_" not in page.evaluate("document.cookie")


# --- activity -----------------------------------------------------------------------------------


def test_the_activity_is_searched_by_school_device_and_name_and_exported(
    tab: Callable[..., Tab], demo: CollectorThread, demo_world: DemoWorld, tmp_path: Path
) -> None:
    ingest(
        demo,
        demo_world,
        "formula",
        ShippedEvent(
            seq=100_000,
            kind=EventKind.DNS,
            time=time.time() - 60,
            client_ip="10.1.0.16",
            hostname=KNOWN_DEVICE,
            group="ks2",
            name=FORMULA,
            action="block",
            categories=("games",),
        ),
    )
    page = tab(ADMIN).page
    page.goto("/activity")
    page.get_by_label("School").select_option(NORTH)
    page.get_by_label("Device name").fill(KNOWN_DEVICE)
    page.get_by_label("Name looked up").fill("roblox.com")
    follow(page, page.get_by_role("button", name="Search"))
    asked = parse_qs(urlsplit(page.url).query)
    assert asked["site"] == [NORTH] and asked["hostname"] == [KNOWN_DEVICE]
    assert asked["name"] == ["roblox.com"]

    shown = cells(page)
    # Its three tries this hour and the formula, at least; riverside-primary's iPad of the
    # same name, and every other name, left out.
    assert len(shown) >= 4
    for when, school, device, _group, name, _type, _action, _category in shown:
        assert school == NORTH and device.startswith(KNOWN_DEVICE), (when, school, device)
        assert name.endswith("roblox.com"), name
    assert [shown[0][4], shown[0][6], shown[0][7]] == [FORMULA, "Blocked", "Games"]

    with page.expect_download() as downloading:
        page.get_by_role("link", name="Export as CSV").click()
    download = downloading.value
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    assert saved.suffix == ".csv"
    with saved.open(encoding="utf-8", newline="") as f:
        header, *lines = list(csv.reader(f))
    assert header[:2] == ["site", "time"]
    assert {"client_ip", "mac", "hostname", "group", "name", "action", "category"} <= set(header)
    rows = [dict(zip(header, line, strict=True)) for line in lines]
    # The file holds exactly the search the page showed, newest first.
    assert len(rows) == len(shown)
    assert {(r["site"], r["hostname"]) for r in rows} == {(NORTH, KNOWN_DEVICE)}
    # Guarded: a spreadsheet reads the cell as text, not as a formula to run.
    assert rows[0]["name"] == "'" + FORMULA
    assert rows[0]["action"] == "block" and rows[0]["category"] == "games"
    assert {r["name"] for r in rows[1:]} == {"www.roblox.com"}

    # Without the school, riverside-primary's iPad of the same name is found too.
    page.goto("/activity?" + urlencode({"hostname": KNOWN_DEVICE, "name": "roblox.com"}))
    assert {row[1] for row in cells(page)} == {NORTH, RIVERSIDE}


# --- alerts ---------------------------------------------------------------------------------------


def test_a_safeguarding_lead_acknowledges_an_alert_and_it_moves_to_closed(
    tab: Callable[..., Tab],
) -> None:
    page = tab(LEAD).page
    page.goto("/alerts?state=open")
    rows = page.locator("main tbody tr")
    this_morning = rows.filter(has_text=ALERT_NAME).filter(has_text=KNOWN_DEVICE)
    expect(this_morning).to_have_count(1)
    open_before = rows.count()

    this_morning.get_by_text("Acknowledge", exact=True).click()
    this_morning.get_by_label("Outcome").select_option(
        label="Spoke to the pupil or member of staff"
    )
    note = "Spoke with the pupil and their teacher; parents told at pick-up."
    this_morning.get_by_label("What was done (kept as the record)").fill(note)
    follow(page, this_morning.get_by_role("button", name="Record and close"))

    assert parse_qs(urlsplit(page.url).query) == {"state": ["open"], "done": ["acknowledged"]}
    expect(page.get_by_role("status")).to_have_text(
        "The alert is acknowledged and what was done is recorded."
    )
    expect(rows).to_have_count(open_before - 1)
    expect(rows.filter(has_text=ALERT_NAME).filter(has_text=KNOWN_DEVICE)).to_have_count(0)

    follow(page, page.get_by_role("link", name="Closed", exact=True))
    closed = page.locator("main tbody tr").filter(has_text=note)
    expect(closed).to_have_count(1)
    expect(closed).to_contain_text(ALERT_NAME)
    expect(closed).to_contain_text(KNOWN_DEVICE)
    expect(closed).to_contain_text("Spoke to the pupil or member of staff")
    expect(closed).to_contain_text(LEAD)


# --- unblock requests and the agent -------------------------------------------------------------


def answer(agent: AgentThread, name: str, source: str = "127.0.0.1") -> list[str]:
    reply = dns.query.udp(
        dns.message.make_query(name, "A"), "127.0.0.1", port=agent.port, timeout=3, source=source
    )
    return [rr.to_text() for rrset in reply.answer for rr in rrset]


def ask_collector_now(agent: AgentThread) -> None:
    """What the agent does every policy_interval (10 s at the least), now: the wait would be
    the test's whole running time, and the poll's timing is policy_sync's tests' business."""
    assert agent.agent is not None and agent.agent.policy_sync is not None
    agent.call(agent.agent.policy_sync.sync_once())


def test_an_approved_unblock_request_is_answered_by_the_agent(
    tab: Callable[..., Tab],
    demo: CollectorThread,
    demo_world: DemoWorld,
    make_agent: AgentFactory,
    tmp_path: Path,
) -> None:
    token_file = tmp_path / "north.token"
    token_file.write_text(demo_world.tokens[NORTH] + "\n", encoding="utf-8")
    games = tmp_path / "games.txt"
    games.write_text("poki.com\n", encoding="utf-8")
    agent = make_agent(
        f"""
[identity]
neighbours = false

[blockpage]
enabled = true
listen = ["127.0.0.1:0"]

[collector]
url = "{demo.url}"
site = "{NORTH}"
token_file = "{token_file}"
policy_interval = 10

[[groups]]
name = "ks2"
age_tier = "ks2"
default = true
actions = {{ games = "block" }}
""",
        lists=f'[[lists]]\nname = "games"\ncategory = "games"\npath = "{games}"\n',
    )
    assert answer(agent, "poki.com") == BLOCKED
    # Its first call on the collector made the block page's store, which the pupil's request
    # below goes into.
    assert agent.agent is not None and agent.agent.policy_sync is not None
    sync = agent.agent.policy_sync
    assert wait_for(lambda: sync.counters.last_success is not None, timeout=15)
    # A pupil asks on the block page; the agent takes the request up to the collector.
    asked = UnblockStore(tmp_path / "state").add(
        client_ip="127.0.0.1",
        name="poki.com",
        group="ks2",
        language="en",
        category="games",
        reason="Our class plays the times-tables game in wet play",
    )
    ask_collector_now(agent)

    page = tab(LEAD).page
    page.goto("/requests?status=pending")
    form = page.locator("form.decide").filter(
        has=page.locator(f'input[name="id"][value="{asked.id}"]')
    )
    row = page.locator("main tbody tr").filter(has=form)
    expect(row).to_contain_text("poki.com")
    expect(row).to_contain_text("Our class plays the times-tables game in wet play")
    expect(form.get_by_label("For the group")).to_have_value("ks2")
    # The narrowest approval is the one offered: the pupil's own device.
    expect(form.get_by_label("this device only")).to_be_checked()
    form.get_by_role("combobox").select_option(label="1 hour")
    form.get_by_label("Reason (kept with the decision)").fill("Wet play, this afternoon only.")
    before = time.time()
    follow(page, form.get_by_role("button", name="Approve"))
    after = time.time()
    expect(page.get_by_role("status")).to_contain_text("Approved")
    expect(page.locator(f'input[name="id"][value="{asked.id}"]')).to_have_count(0)

    ask_collector_now(agent)
    assert wait_for(lambda: answer(agent, "poki.com") == ALLOWED, timeout=10)
    assert agent.agent is not None
    granted = [e for e in agent.agent.exceptions if e.name == "poki.com"]
    assert [(e.group, e.device, e.action) for e in granted] == [("ks2", "127.0.0.1", "allow")]
    assert answer(agent, "poki.com", source="127.0.0.2") == BLOCKED  # the rest of the class
    # For the hour chosen in the form, from the moment it was approved.
    assert before + 3_600 - 1 <= granted[0].expires <= after + 3_600 + 1
    decided = PolicyStore(demo.repo.engine).live_exceptions(demo_world.sites[NORTH].id)
    assert [e.id for e in decided] == [granted[0].id]


# --- names from the network -----------------------------------------------------------------------


def from_hostile_device(seq: int, when: float, kind: EventKind, name: str) -> ShippedEvent:
    return ShippedEvent(
        seq=seq,
        kind=kind,
        time=when,
        client_ip=HOSTILE_DEVICE["client_ip"],
        mac=HOSTILE_DEVICE["mac"],
        hostname=HOSTILE_DEVICE["hostname"],
        group="ks2",
        name=name,
        action="block" if kind is EventKind.DNS else "block+alert",
        categories=("games",) if kind is EventKind.DNS else ("self-harm",),
        severity=Severity.HIGH if kind is EventKind.ALERT else None,
    )


def hostile_morning(collector: CollectorThread, world: DemoWorld) -> None:
    """A device named with a script looks up a name made of markup, which raises an alert and
    is asked to be unblocked."""
    now = time.time()
    ingest(
        collector,
        world,
        "hostile",
        from_hostile_device(200_000, now - 30, EventKind.DNS, IMG),
        from_hostile_device(200_001, now - 29, EventKind.ALERT, IMG),
        from_hostile_device(200_002, now - 28, EventKind.DNS, SCRIPT),
    )
    PolicyStore(collector.repo.engine).receive_requests(
        world.sites[NORTH],
        [
            {
                "id": "hostile0001",
                "created": now - 20,
                "group": "ks2",
                "name": IMG,
                "category": "games",
                "reason": SCRIPT,
                "language": "en",
                **HOSTILE_DEVICE,
            }
        ],
    )


# Where each page shows the hostile device's doings: its lookups, its alert, the device
# itself (named with a script) and its unblock request (whose reason is a script too).
HOSTILE_PAGES = (
    ("/activity?client=10.1.0.66", (IMG, SCRIPT)),
    ("/alerts?state=open", (IMG, SCRIPT)),
    ("/devices?state=new", (SCRIPT,)),
    ("/requests?status=pending", (IMG, SCRIPT)),
    ("/", ()),
)


def test_a_hostile_name_is_shown_as_text_and_runs_nothing(
    tab: Callable[..., Tab], demo: CollectorThread, demo_world: DemoWorld
) -> None:
    hostile_morning(demo, demo_world)
    head = tab(ADMIN)
    page = head.page
    for path, texts in HOSTILE_PAGES:
        shown = page.goto(path)
        assert shown is not None and shown.status == 200, path
        for text in texts:
            expect(page.get_by_text(text, exact=True).first).to_be_visible()
        # Nothing the names hold became an element: no image, no script, no handler.
        assert page.locator("img, script, [onerror]").count() == 0, path
    # What a search asked for goes back into the form as the field's value, not as markup.
    page.goto("/activity?" + urlencode({"group": BREAKOUT}))
    expect(page.get_by_label("Group")).to_have_value(BREAKOUT)
    assert page.locator("img, script, [onerror]").count() == 0
    assert head.watched.dialogs == []
    assert head.watched.errors == []
    assert head.watched.csp_refusals() == []


def test_were_a_name_ever_written_unescaped_the_policy_would_still_run_nothing(
    tab: Callable[..., Tab], demo: CollectorThread, demo_world: DemoWorld
) -> None:
    """The second line of defence, and proof that the checks above can see a script: the real
    page with one name unescaped, as a template's mistake would write it."""
    hostile_morning(demo, demo_world)
    escaped = IMG.replace("<", "&lt;").replace(">", "&gt;")

    def activity(url: str) -> bool:
        return urlsplit(url).path == "/activity"

    def unescaped(keep_policy: bool) -> Callable[[Route], None]:
        def handle(route: Route) -> None:
            real = route.fetch()
            dropped = {"content-length", *(() if keep_policy else ("content-security-policy",))}
            headers = {k: v for k, v in real.headers.items() if k.lower() not in dropped}
            route.fulfill(response=real, body=real.text().replace(escaped, IMG), headers=headers)

        return handle

    guarded = tab(ADMIN)
    guarded.page.route(activity, unescaped(keep_policy=True))
    with guarded.page.expect_console_message(lambda m: "Content Security Policy" in m.text):
        guarded.page.goto("/activity?client=10.1.0.66")
    assert guarded.page.locator('img[src="x"]').count() >= 1
    assert guarded.watched.dialogs == []

    bare = tab(ADMIN)
    bare.page.route(activity, unescaped(keep_policy=False))
    with bare.page.expect_event("dialog"):
        bare.page.goto("/activity?client=10.1.0.66")
    assert bare.watched.dialogs[:1] == ["alert: 1"]


# --- languages ------------------------------------------------------------------------------------


def test_the_language_links_change_the_interface(tab: Callable[..., Tab]) -> None:
    vi = catalogue("vi")
    page = tab(ADMIN).page
    page.goto("/alerts")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    follow(page, page.get_by_role("link", name="Tiếng Việt"))
    # Back on the same page, now in Vietnamese, and it stays so from page to page.
    assert path_of(page) == "/alerts"
    expect(page.locator("html")).to_have_attribute("lang", "vi")
    expect(page.get_by_role("heading", level=1)).to_have_text(vi["Alerts"])
    menu = page.get_by_role("navigation", name=vi["Main"])
    for english in ("Overview", "Alerts", "Unblock requests", "Devices", "Activity"):
        expect(menu.get_by_role("link", name=vi[english], exact=True)).to_be_visible()
    expect(page.get_by_role("button", name=vi["Sign out"])).to_be_visible()
    follow(page, menu.get_by_role("link", name=vi["Overview"], exact=True))
    expect(page.get_by_role("heading", level=1)).to_have_text(vi["Overview"])
    follow(page, page.get_by_role("link", name="English"))
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.get_by_role("heading", level=1)).to_have_text("Overview")


# --- the documentation's screenshots ------------------------------------------------------------


def test_every_screenshot_of_the_documentation_can_be_taken(
    chromium: Browser, demo: CollectorThread, demo_world: DemoWorld, tmp_path: Path
) -> None:
    for shot in PAGES:
        saved = take(chromium, demo.url, demo_world, shot, tmp_path)
        head = saved.read_bytes()[:24]
        assert head[:8] == b"\x89PNG\r\n\x1a\n", shot.file
        width, height = struct.unpack(">II", head[16:24])  # the IHDR chunk comes first
        assert (width, height) == (LAPTOP["width"], LAPTOP["height"]), shot.file
