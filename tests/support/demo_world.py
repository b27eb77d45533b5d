"""A district's week, for the admin pages' browser tests and the documentation's screenshots.

Three schools (two primaries and a secondary) report a week of school days: lookups from
pupils' iPads, staff laptops and library PCs, what the filter allowed and blocked, safeguarding
alerts (some already dealt with), devices approved, known or new, unblock requests waiting
or decided, and what each agent says about itself (a heartbeat every five minutes, its policy
test every night). The district sets its policy centrally, a base with each school's own
document on top, and every lookup is decided as the school's agent would decide it: by the
agent's own code, on the configuration it makes of that policy and a small build of lists
holding the week's names. So the policy matrix, the policy tests and the activity agree.

Everything goes in through the collector's own stores (ingest, reviews, policies, requests as
agents send them), so the pages show what a real district's would. Only the times the
collector stamps with its own clock (a school added, a policy saved) are moved back to the
week's start, when the district took the collector on.

The week is drawn from a seeded generator, so the same ``now`` gives the same world; a few facts
the tests rely on are fixed and named below.
"""

from __future__ import annotations

import random
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, cast

import msgspec
from sqlalchemy import Engine, Table

from schoolgate import __version__
from schoolgate.agent.activity.alerts import Alerts, AlertSettings
from schoolgate.agent.activity.events import EventKind
from schoolgate.agent.app import client_identifier
from schoolgate.agent.dns.wire import text_to_wire
from schoolgate.agent.filter.compiled import CompiledLists
from schoolgate.agent.heartbeat import heartbeat_data
from schoolgate.agent.policy.categories import bundled
from schoolgate.agent.policy.clients import Group
from schoolgate.agent.policy.decide import Decider
from schoolgate.agent.policy.decision import Decision
from schoolgate.agent.policy.schedules import active_schedules
from schoolgate.agent.policy_check import policy_test
from schoolgate.agent.status_events import HEARTBEAT, POLICY_TEST, fitted
from schoolgate.event_batch import ShippedEvent, data_limit
from schoolgate.server.auth import Role
from schoolgate.server.db import migrate
from schoolgate.server.db.engine import open_engine
from schoolgate.server.db.schema import PolicyRevision, Site
from schoolgate.server.policies import PolicyStore
from schoolgate.server.policy_documents import Document, agent_config
from schoolgate.server.repository import SiteRef, SqlRepository
from schoolgate.server.reviews import Reviews
from schoolgate.server.settings import CollectorSettings, parse
from schoolgate.server.users import CredentialKind
from tests.support.collector import CollectorThread
from tests.support.compiled import compiled_lists
from tests.support.users import PASSWORD, user_store

DAY: Final = 86_400.0
HOUR: Final = 3_600.0
# The zone the demo collector shows times in, whatever the machine's (the schools are in England).
TIMEZONE: Final = "Europe/London"
NORTH: Final = "north-primary"
SOUTH: Final = "south-academy"
RIVERSIDE: Final = "riverside-primary"

# The people who sign in (every one with tests.support.users.PASSWORD).
ADMIN: Final = "district-admin"
LEAD: Final = "lead-north"  # the safeguarding lead of north-primary
TECHNICIAN: Final = "tech-north"

# Facts the browser tests find on the pages.
# A north-primary pupil's iPad, busy every day, that tried www.roblox.com three times within
# the hour (riverside-primary's iPad of the same name tried it once).
KNOWN_DEVICE: Final = "y5-ipad-07"
ALERT_NAME: Final = "selfharm-forum.example"  # an open high alert at north-primary
NEW_DEVICE: Final = "android-5f3a"  # a phone north-primary has not reviewed

# (name, category, how often it is looked up); "" is a name in no category. School work first,
# the rest now and then. What the filter does with each is the school's policy's business.
_NAMES: Final = (
    ("www.bbc.co.uk", "", 30),
    ("www.google.com", "", 40),
    ("classroom.google.com", "", 25),
    ("www.purplemash.com", "", 14),
    ("www.topmarks.co.uk", "", 10),
    ("en.wikipedia.org", "", 12),
    ("login.microsoftonline.com", "", 18),
    ("outlook.office365.com", "", 10),
    ("www.oxfordowl.co.uk", "", 8),
    ("www.ttrockstars.com", "", 9),
    ("www.amazon.co.uk", "shopping", 3),
    ("www.roblox.com", "games", 6),
    ("poki.com", "games", 4),
    ("www.coolmathgames.com", "games", 3),
    ("www.tiktok.com", "social", 4),
    ("www.instagram.com", "social", 3),
    ("www.snapchat.com", "social", 2),
    ("discord.com", "chat", 2),
    ("www.twitch.tv", "streaming", 2),
    ("www.netflix.com", "streaming", 1),
    ("chatgpt.com", "genai", 4),
    ("gemini.google.com", "genai", 2),
    ("copilot.microsoft.com", "genai", 2),
    ("www.talktofrank.com", "drugs", 1),
    ("www.croxyproxy.com", "proxy-vpn", 0.4),
    ("hide.me", "proxy-vpn", 0.4),
    ("dns.google", "encrypted-dns", 1),
    ("www.bet365.com", "gambling", 1),
)
_WEIGHTS: Final = tuple(often for *_, often in _NAMES)
# Names pupils look up now and then that worry a school (fictional: the categories are real);
# the policy says which raise an alert.
_WORRYING: Final = (
    (ALERT_NAME, "self-harm"),
    ("pro-ana-tips.example", "self-harm"),
    ("extremist-forum.example", "extremism"),
    ("knife-shop.example", "weapons"),
    ("fight-videos.example", "violence"),
    ("hate-memes.example", "hate"),
)
# What a safeguarding lead recorded about an alert, and how long after it was raised: taken in
# turn for the pupils' alerts, and the last for the staff's.
_ACKNOWLEDGED: Final = (
    (
        "spoke-to-user",
        "Spoke with the pupil and their class teacher; nothing further needed.",
        40 * 60,
    ),
    ("no-concern", "A link in a news article the class was reading.", 25 * 60),
    (
        "logged-safeguarding",
        "Logged on the safeguarding system; parents called after school.",
        3 * HOUR,
    ),
    ("parents-contacted", "Parents told at pick-up; the class teacher keeps an eye.", 20 * HOUR),
)
_ACKNOWLEDGED_STAFF: Final = (
    "no-concern",
    "A teacher looking up the proxy a pupil said they use, to report it.",
    2 * HOUR,
)
# One alert in this many of those before the last day is still waiting.
_LEFT_OPEN: Final = 5

# The district's policy (docs/district-policy.md), as its admin wrote it: the base every school
# gets, and each school's own document on top, naming the school's groups and its devices.
_DISTRICT_POLICY: Final = f"""\
[site]
timezone = "{TIMEZONE}"

[policy]
# Blocked for everyone by default; the safeguarding lead hears of staff's lookups too.
actions = {{ hate = "block+alert" }}

[[schedules]]
name = "after-school"
days = ["mon-fri"]
times = ["15:30-17:30"]
"""
_PRIMARY_POLICY: Final = """\
[[groups]]
name = "ks1"
age_tier = "foundation"
hostnames = ["y1-ipad-*"]

[[groups]]
name = "ks2"
age_tier = "ks2"
hostnames = ["y5-ipad-*", "library-pc-*"]
default = true  # a device nobody has named yet is filtered as a pupil's

[[groups]]
name = "staff"
age_tier = "staff"
hostnames = ["staff-laptop-*", "office-*"]
"""
_SECONDARY_POLICY: Final = """\
[[groups]]
name = "secondary"
age_tier = "secondary"
hostnames = ["chromebook-y9-*"]
schedules = { after-school = { games = "allow" } }  # the games club

[[groups]]
name = "sixth-form"
age_tier = "secondary"
hostnames = ["chromebook-y12-*"]
youtube = "off"  # A-level media studies

[[groups]]
name = "staff"
age_tier = "staff"
hostnames = ["staff-laptop-*"]
deny = ["tiktok.com"]  # not on school devices, staff's included

[[groups]]
name = "guests"
age_tier = "guest"
default = true
"""
# How often the agents beat, and when each night their lists are updated and tested (UTC).
_HEARTBEAT_EVERY: Final = 300.0
_LISTS_UPDATED: Final = 2 * HOUR + 10 * 60
_POLICY_TESTED: Final = 2 * HOUR + 25 * 60


@dataclass(frozen=True)
class Device:
    hostname: str
    client_ip: str
    mac: str
    group: str
    busy: float  # how much of the school's traffic it makes, relative to the others


@dataclass(frozen=True)
class School:
    name: str
    net: str  # the first three octets of the addresses new devices turn up with
    devices: tuple[Device, ...]
    daily: int  # lookups on a school day
    policy: str  # its own policy document, on top of the district's
    why: str  # the reason its policy was saved with
    # When its agent was off, as (seconds after the week's start, for how long); (0, 0): never.
    off: tuple[float, float] = (0.0, 0.0)


@dataclass
class DemoWorld:
    now: float
    sites: dict[str, SiteRef] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)  # each site's agent token
    # A session for each person, as signing in gives: the collector checks a password at its
    # own cost (a second or so) and only the sign-in tests need to pay it.
    sessions: dict[str, str] = field(default_factory=dict)


class DemoAgent:
    """A school's agent, as far as its week needs one: the configuration the agent makes of the
    school's central policy, and the agent's own decision code on the demo's lists."""

    def __init__(self, policy: Document, lists: CompiledLists) -> None:
        self.config = agent_config(policy, "the demo school's policy")
        self.lists = lists
        self.alerts = Alerts(AlertSettings(), self.config.taxonomy)
        # A decider keeps what it worked out for a group by the group's name, so each set of
        # schedules that changes a group's actions has its groups and decider of its own.
        self._on: dict[frozenset[str], tuple[dict[str, Group], Decider]] = {}

    def local(self, moment: float) -> datetime:
        """A moment on the school's clock, as the agent reads its schedules."""
        return datetime.fromtimestamp(moment, self.config.timezone).replace(tzinfo=None)

    def decide(self, group: str, name: str, moment: float) -> Decision:
        active = active_schedules(self.config.schedules, self.local(moment))
        if active not in self._on:
            groups = client_identifier(self.config, {}, active).groups
            self._on[active] = (dict(groups), Decider(self.lists, self.config.taxonomy))
        groups, decider = self._on[active]
        return decider.decide_name(groups[group], text_to_wire(name))

    def policy_test(self, moment: float) -> dict[str, Any]:
        """The report the agent sends of its nightly ``policy test``."""
        tested = policy_test(self.config, self.lists, moment=self.local(moment), exceptions=())
        return fitted(tested.data(), data_limit(EventKind.STATUS))


def _lists() -> dict[str, str]:
    """The text of the demo agents' lists, one per category: the week's names, and the
    category's probe for the policy test (the public lists a school takes hold it)."""
    names: dict[str, list[str]] = defaultdict(list)
    for name, category, _often in _NAMES:
        if category:
            names[category].append(name)
    for name, category in _WORRYING:
        names[category].append(name)
    for known in bundled():
        if known.probe:
            names[known.id].append(known.probe)
    return {category: "\n".join(listed) + "\n" for category, listed in names.items()}


def _devices(number: int, net: str) -> tuple[Device, ...]:
    made: list[Device] = []

    def add(hostname: str, group: str, busy: float) -> None:
        host = len(made) + 10
        made.append(
            Device(hostname, f"{net}.{host}", f"3c:22:fb:{number:02x}:00:{host:02x}", group, busy)
        )

    for n in range(1, 13):
        add(f"y5-ipad-{n:02d}", "ks2", 3.0 if f"y5-ipad-{n:02d}" == KNOWN_DEVICE else 1.0)
    for n in range(1, 7):
        add(f"y1-ipad-{n:02d}", "ks1", 0.6)
    for n in range(1, 6):
        add(f"staff-laptop-{n:02d}", "staff", 1.5)
    add("library-pc-1", "ks2", 1.2)
    add("library-pc-2", "ks2", 1.2)
    add("office-printer", "staff", 0.2)
    return tuple(made)


def _schools() -> tuple[School, ...]:
    secondary = [
        Device(
            f"{prefix}-{n:02d}",
            f"10.3.{block}.{n + 10}",
            f"58:11:22:{block:02x}:00:{n:02x}",
            group,
            1.0,
        )
        for block, prefix, group, count in (
            (1, "chromebook-y9", "secondary", 16),
            (2, "chromebook-y12", "sixth-form", 10),
            (3, "staff-laptop", "staff", 8),
        )
        for n in range(1, count + 1)
    ]
    primary = "Key stage groups by the iPads' names, as the MDM gives them."
    return (
        School(NORTH, "10.1.0", _devices(1, "10.1.0"), 260, _PRIMARY_POLICY, primary),
        School(
            SOUTH,
            "10.3.1",
            tuple(secondary),
            420,
            _SECONDARY_POLICY,
            "Year 9 and sixth-form Chromebooks; games for the after-school games club.",
        ),
        # A power cut one night: the box came back on its own four hours later.
        School(
            RIVERSIDE,
            "10.2.0",
            _devices(2, "10.2.0"),
            190,
            _PRIMARY_POLICY,
            primary,
            off=(2 * DAY + 22 * HOUR, 4 * HOUR),
        ),
    )


def _week(
    school: School, agent: DemoAgent, since: float, now: float, rng: random.Random
) -> list[ShippedEvent]:
    """A school's events from ``since`` (its last seven days of lookups and alerts, and what
    its agent said about itself), oldest first, numbered in order."""
    events: list[ShippedEvent] = []
    weights = [d.busy for d in school.devices]
    start_of_today = now - now % DAY
    for days_ago in range(6, -1, -1):
        day = start_of_today - days_ago * DAY
        weekend = datetime.fromtimestamp(day, UTC).weekday() >= 5
        count = school.daily // 12 if weekend else int(school.daily * rng.uniform(0.8, 1.2))
        # School hours, 08:00 to 16:00 (UTC, near enough to a UK school's day for a picture).
        for moment in sorted(day + rng.uniform(8 * HOUR, 16 * HOUR) for _ in range(count)):
            if moment > now - 60:
                continue
            device = rng.choices(school.devices, weights)[0]
            name = rng.choices(_NAMES, _WEIGHTS)[0][0]
            events.extend(_lookup(agent, device, moment, name, rng))
        for _ in range(rng.randint(0, 3) if not weekend else 0):
            # Not the tests' iPad: its one alert is this morning's.
            pupil = rng.choice(
                [d for d in school.devices if d.group != "staff" and d.hostname != KNOWN_DEVICE]
            )
            moment = day + rng.uniform(9 * HOUR, 15 * HOUR)
            if moment < now - 60:
                events.extend(_lookup(agent, pupil, moment, rng.choice(_WORRYING)[0], rng))
    if school.name == NORTH:
        # The alert and the new phone the tests look for, this morning whatever day it is.
        pupil = next(d for d in school.devices if d.hostname == KNOWN_DEVICE)
        events.extend(_lookup(agent, pupil, now - 1_500, ALERT_NAME, rng))
        # Nobody has named it, so the agent puts it in the default group.
        phone = Device(NEW_DEVICE, f"{school.net}.200", "a6:5f:3a:00:00:01", "ks2", 0)
        events.append(
            ShippedEvent(
                seq=1,
                kind=EventKind.DEVICE,
                time=now - 1_200,
                client_ip=phone.client_ip,
                mac=phone.mac,
                hostname=phone.hostname,
                group=phone.group,
            )
        )
        events.extend(_lookup(agent, phone, now - 1_190, "www.tiktok.com", rng))
        for minutes in (40, 35, 30):
            events.extend(_lookup(agent, pupil, now - minutes * 60, "www.roblox.com", rng))
    if school.name == RIVERSIDE:
        # The iPad of the same name at another school, for a search by school to leave out.
        namesake = next(d for d in school.devices if d.hostname == KNOWN_DEVICE)
        events.extend(_lookup(agent, namesake, now - 45 * 60, "www.roblox.com", rng))
    if school.name == SOUTH:
        # A sixth-former's Chromebook asking resolvers of its own, as the agent's monitor saw.
        laptop = next(d for d in school.devices if d.group == "sixth-form")
        for days_ago, hour, resolver, port, via in (
            (3, 11.2, "8.8.8.8", 53, "dns-traffic"),
            (1, 13.6, "1.1.1.1", 853, "dot-traffic"),
        ):
            events.append(
                ShippedEvent(
                    seq=1,
                    kind=EventKind.BYPASS,
                    time=start_of_today - days_ago * DAY + hour * HOUR,
                    client_ip=laptop.client_ip,
                    mac=laptop.mac,
                    name=resolver,
                    data={"via": via, "port": port, "protocol": "tcp" if port == 853 else "udp"},
                )
            )
    events.extend(_reports(school, agent, since, now))
    events.sort(key=lambda e: e.time)
    # Numbered in time order, as the agent's log numbers what it records.
    return [msgspec.structs.replace(e, seq=seq) for seq, e in enumerate(events, start=1)]


def _lookup(
    agent: DemoAgent, device: Device, moment: float, name: str, rng: random.Random
) -> list[ShippedEvent]:
    """A lookup as the agent records it, and the alert it raised if the policy says so."""
    decision = agent.decide(device.group, name, moment)
    looked_up = ShippedEvent(
        seq=1,
        kind=EventKind.DNS,
        time=moment,
        client_ip=device.client_ip,
        mac=device.mac,
        hostname=device.hostname,
        group=device.group,
        name=name,
        qtype=rng.choice(("A", "A", "AAAA", "HTTPS")),
        action=decision.action.value,
        categories=decision.categories,
        rcode="NOERROR",
        latency_ms=round(rng.uniform(0.1, 30.0), 2),
    )
    if not decision.alert:
        return [looked_up]
    alert = ShippedEvent(
        seq=1,
        kind=EventKind.ALERT,
        time=moment + 0.001,
        client_ip=device.client_ip,
        mac=device.mac,
        hostname=device.hostname,
        group=device.group,
        name=name,
        qtype=looked_up.qtype,
        action=looked_up.action,
        categories=decision.categories,
        rule=decision.rule,
        severity=agent.alerts.severity(decision.category),
    )
    return [looked_up, alert]


def _reports(school: School, agent: DemoAgent, since: float, now: float) -> list[ShippedEvent]:
    """What the school's agent said about itself from ``since``, while it was on: a heartbeat
    every ``_HEARTBEAT_EVERY`` seconds, and its policy test each night after the lists' update."""
    off_from, off_for = since + school.off[0], school.off[1]
    # Each agent keeps its own time: the schools' do not beat, or update their lists, in step.
    late = float(sum(map(ord, school.name)) % 300)

    def on(moment: float) -> bool:
        return not off_from <= moment < off_from + off_for

    def last_night(moment: float, at: float) -> float:
        night = moment - moment % DAY + at
        return night if night <= moment else night - DAY

    made: list[ShippedEvent] = []
    lists = {"build": agent.lists.build_id, "names": agent.lists.count, "stale": 0}
    moment = since + late
    while moment < now:
        if on(moment):
            updated = last_night(moment, _LISTS_UPDATED + 4 * late)
            data = heartbeat_data(
                version=__version__,
                started=since if moment < off_from else off_from + off_for,
                every=_HEARTBEAT_EVERY,
                lists={**lists, "updated": updated, "oldest": updated},
                dropped_spool=0,
                dropped_buffer=0,
                waiting=0,
            )
            made.append(
                ShippedEvent(seq=1, kind=EventKind.STATUS, time=moment, action=HEARTBEAT, data=data)
            )
        moment += _HEARTBEAT_EVERY
    tested = last_night(now, _POLICY_TESTED + 4 * late)
    while tested > since:
        if on(tested):
            made.append(
                ShippedEvent(
                    seq=1,
                    kind=EventKind.STATUS,
                    time=tested,
                    action=POLICY_TEST,
                    data=agent.policy_test(tested),
                )
            )
        tested -= DAY
    return made


def _backdate(
    engine: Engine, table: type[Site] | type[PolicyRevision], row_id: int, when: float
) -> None:
    """Move the time the collector stamped on a row (``created``) back to ``when``."""
    stamped = cast(Table, table.__table__)
    with engine.begin() as conn:
        conn.execute(stamped.update().where(stamped.c.id == row_id).values(created=when))


def _set_policies(
    policies: PolicyStore, world: DemoWorld, schools: tuple[School, ...], since: float
) -> None:
    """The district's base, then each school's own document, on the morning of ``since``."""
    engine = policies.engine
    base = policies.save(
        None, _DISTRICT_POLICY, ADMIN, "The district's base policy, as every school now takes it."
    )
    _backdate(engine, PolicyRevision, base.id, since + 9 * HOUR)
    for n, school in enumerate(schools, start=1):
        own = policies.save(
            world.sites[school.name], school.policy, _login(school, "tech"), school.why
        )
        _backdate(engine, PolicyRevision, own.id, since + 9 * HOUR + n * 600)


def build(repo: SqlRepository, now: float, seed: int = 7) -> DemoWorld:
    """Fill ``repo`` (migrated, empty) with the district's week up to ``now``."""
    rng = random.Random(seed)
    world = DemoWorld(now)
    reviews = Reviews(repo.engine)
    policies = PolicyStore(repo.engine)
    schools = _schools()
    # The district took the collector on the day before the week shown.
    since = now - now % DAY - 7 * DAY
    for school in schools:
        site, token = repo.add_site(school.name)
        _backdate(repo.engine, Site, site.id, since)
        world.sites[school.name] = site
        world.tokens[school.name] = token
    _set_policies(policies, world, schools, since)
    with (
        tempfile.TemporaryDirectory(prefix="schoolgate-demo-lists-") as lists_dir,
        compiled_lists(Path(lists_dir), _lists()) as lists,
    ):
        for school in schools:
            site = world.sites[school.name]
            agent = DemoAgent(policies.effective(site.id).sections, lists)
            week = _week(school, agent, since, now, rng)
            for start in range(0, len(week), 2_000):
                repo.ingest(site, f"demo-{start}", week[start : start + 2_000], keep_after=0)
            _reviews(reviews, site, school, week, now)
            _requests(policies, site, school, now)
    users = user_store(repo.engine)
    users.add(ADMIN, PASSWORD, Role.ADMIN, [])
    users.add(LEAD, PASSWORD, Role.SAFEGUARDING_LEAD, [NORTH])
    users.add(TECHNICIAN, PASSWORD, Role.TECHNICIAN, [NORTH])
    for name in (ADMIN, LEAD, TECHNICIAN):
        world.sessions[name] = users.issue(name, CredentialKind.SESSION, "", DAY, now=now).token
    return world


def _login(school: School, job: str) -> str:
    """The user name of a school's safeguarding lead (``job`` "lead") or technician ("tech"),
    as ``LEAD`` and ``TECHNICIAN`` are north-primary's."""
    return f"{job}-{school.name.split('-')[0]}"


def _reviews(
    reviews: Reviews, site: SiteRef, school: School, week: list[ShippedEvent], now: float
) -> None:
    """The alerts before the last day mostly dealt with, the rest waiting; the devices
    reviewed."""
    alerts = [e for e in week if e.kind is EventKind.ALERT and e.time < now - DAY]
    for n, alert in enumerate(alerts, start=1):
        if n % _LEFT_OPEN == 0:
            continue
        outcome, note, after = (
            _ACKNOWLEDGED_STAFF if alert.group == "staff" else _ACKNOWLEDGED[n % len(_ACKNOWLEDGED)]
        )
        reviews.acknowledge(
            site.id,
            alert.seq,
            alert.time,
            outcome,
            note,
            _login(school, "lead"),
            now=alert.time + after,
        )
    # The technician goes through a day's new devices at the end of it.
    first_seen: dict[str, float] = {}
    for event in week:
        first_seen.setdefault(event.mac, event.time)
    for device in school.devices:
        if device.mac not in first_seen or device.hostname in ("library-pc-2", "chromebook-y12-10"):
            continue
        seen = first_seen[device.mac]
        known = device.hostname == "office-printer"
        reviews.review_device(
            site.id,
            device.client_ip,
            device.mac,
            "known" if known else "approved",
            "The office's printer." if known else "",
            _login(school, "tech"),
            now=min(seen - seen % DAY + 16.5 * HOUR, now),
        )


_REQUESTS: Final = {
    NORTH: (
        (
            "www.coolmathgames.com",
            "games",
            "ks2",
            "Maths club on Thursday uses the times-table games.",
        ),
        (
            "www.talktofrank.com",
            "drugs",
            "staff",
            "Year 6 drugs awareness lesson next week: FRANK is the government's advice service.",
        ),
    ),
    SOUTH: (
        (
            "discord.com",
            "chat",
            "sixth-form",
            "The computing club's team chat for the robotics competition.",
        ),
        ("chatgpt.com", "genai", "sixth-form", "A-level computer science coursework on AI."),
        ("www.roblox.com", "games", "secondary", "i want to play"),
    ),
    RIVERSIDE: (("poki.com", "games", "ks2", "Wet play at lunchtime."),),
}


def _requests(policies: PolicyStore, site: SiteRef, school: School, now: float) -> None:
    ids = [f"{school.name[:5]}{n:04d}" for n in range(len(_REQUESTS[school.name]))]
    # In lessons on the last school day that is over.
    asked_on = now - now % DAY
    while asked_on + 16 * HOUR > now or datetime.fromtimestamp(asked_on, UTC).weekday() >= 5:
        asked_on -= DAY
    asked = [
        {
            "id": ids[n],
            "created": asked_on + 14 * HOUR - 5_400 * n - 420 * len(school.name),
            "client_ip": next(d.client_ip for d in school.devices if d.group == group),
            "mac": "",
            "hostname": next(d.hostname for d in school.devices if d.group == group),
            "group": group,
            "name": name,
            "category": category,
            "reason": reason,
            "language": "en",
        }
        for n, (name, category, group, reason) in enumerate(_REQUESTS[school.name])
    ]
    policies.receive_requests(site, asked)
    if school.name == SOUTH:
        # Two decided already, one each way, with the reasons kept.
        policies.decide(site, ids[0], True, ADMIN, "For the competition weeks.", 4 * 7 * 86_400)
        policies.decide(site, ids[2], False, ADMIN, "Not for lessons.")


DATABASE: Final = "collector.sqlite"


def collector_settings(state_dir: Path, timezone: str = "") -> CollectorSettings:
    """A collector on the SQLite database in ``state_dir``, on a free loopback port."""
    zone = f'[admin]\ntimezone = "{timezone}"\n' if timezone else ""
    return parse(
        f'[server]\nstate_dir = "{state_dir}"\nlisten = "127.0.0.1:0"\n'
        f'[database]\nurl = "sqlite:///{state_dir / DATABASE}"\n{zone}',
        "(demo)",
        state_dir,
    )


def make(state_dir: Path, now: float) -> DemoWorld:
    """The demo world's database, ``DATABASE`` in ``state_dir``, made afresh."""
    engine = open_engine(f"sqlite:///{state_dir / DATABASE}")
    try:
        migrate.init(engine)
        return build(SqlRepository(engine), now)
    finally:
        # Closing the last connection folds SQLite's write-ahead log into the file, so the
        # file alone can be copied.
        engine.dispose()


@contextmanager
def serve(state_dir: Path, timezone: str = "") -> Iterator[CollectorThread]:
    """A real collector (uvicorn on 127.0.0.1) on the database in ``state_dir``."""
    engine = open_engine(f"sqlite:///{state_dir / DATABASE}")
    try:
        collector = CollectorThread(
            SqlRepository(engine), collector_settings(state_dir, timezone)
        ).start()
        try:
            yield collector
        finally:
            collector.stop()
    finally:
        engine.dispose()
