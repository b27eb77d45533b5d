"""A district's week, for the admin pages' browser tests and the documentation's screenshots.

Three schools (two primaries and a secondary) report a week of school days: lookups from
pupils' iPads, staff laptops and library PCs, what the filter allowed and blocked, safeguarding
alerts (some already dealt with), devices approved, known or new, and unblock requests waiting
or decided. Everything goes in through the collector's own stores (ingest, reviews, requests
as agents send them), so the pages show what a real district's would.

The week is drawn from a seeded generator, so the same ``now`` gives the same world; a few facts
the tests rely on are fixed and named below.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import msgspec

from schoolgate.agent.activity.events import EventKind, Severity
from schoolgate.event_batch import ShippedEvent
from schoolgate.server.auth import Role
from schoolgate.server.db import migrate
from schoolgate.server.db.engine import open_engine
from schoolgate.server.policies import PolicyStore
from schoolgate.server.repository import SiteRef, SqlRepository
from schoolgate.server.reviews import Reviews
from schoolgate.server.settings import CollectorSettings, parse
from schoolgate.server.users import CredentialKind
from tests.support.collector import CollectorThread
from tests.support.users import PASSWORD, user_store

DAY: Final = 86_400.0
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

# (name, category, action for pupils, action for staff, how often it is looked up); "" is a
# name in no category. School work first, the rest now and then.
_NAMES: Final = (
    ("www.bbc.co.uk", "", "allow", "allow", 30),
    ("www.google.com", "", "allow", "allow", 40),
    ("classroom.google.com", "", "allow", "allow", 25),
    ("www.purplemash.com", "", "allow", "allow", 14),
    ("www.topmarks.co.uk", "", "allow", "allow", 10),
    ("en.wikipedia.org", "", "allow", "allow", 12),
    ("login.microsoftonline.com", "", "allow", "allow", 18),
    ("outlook.office365.com", "", "allow", "allow", 10),
    ("www.oxfordowl.co.uk", "", "allow", "allow", 8),
    ("www.ttrockstars.com", "", "allow", "allow", 9),
    ("www.amazon.co.uk", "shopping", "block", "allow", 3),
    ("www.roblox.com", "games", "block", "allow", 6),
    ("poki.com", "games", "block", "allow", 4),
    ("www.coolmathgames.com", "games", "block", "allow", 3),
    ("www.tiktok.com", "social", "block", "allow", 4),
    ("www.instagram.com", "social", "block", "allow", 3),
    ("www.snapchat.com", "social", "block", "block", 2),
    ("discord.com", "chat", "block", "allow", 2),
    ("www.twitch.tv", "streaming", "block", "allow", 2),
    ("www.netflix.com", "streaming", "block", "block", 1),
    ("chatgpt.com", "genai", "block", "allow", 4),
    ("gemini.google.com", "genai", "block", "allow", 2),
    ("www.croxyproxy.com", "proxy-vpn", "block", "block", 1),
    ("hide.me", "proxy-vpn", "block", "block", 1),
    ("dns.google", "encrypted-dns", "block", "block", 1),
    ("www.bet365.com", "gambling", "block", "block", 1),
)
_WEIGHTS: Final = tuple(often for *_, often in _NAMES)
# Lookups that raise a safeguarding alert (fictional names: the categories are real).
_ALERTING: Final = (
    (ALERT_NAME, "self-harm", Severity.HIGH),
    ("pro-ana-tips.example", "self-harm", Severity.HIGH),
    ("extremist-forum.example", "extremism", Severity.HIGH),
    ("knife-shop.example", "weapons", Severity.MEDIUM),
    ("fight-videos.example", "violence", Severity.MEDIUM),
)
_ACKNOWLEDGED: Final = (
    ("spoke-to-user", "Spoke with the pupil and their class teacher; nothing further needed."),
    ("no-concern", "A link in a news article the class was reading."),
    ("logged-safeguarding", "Logged on the safeguarding system; parents called after school."),
)


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


@dataclass
class DemoWorld:
    now: float
    sites: dict[str, SiteRef] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)  # each site's agent token
    # A session for each person, as signing in gives: the collector checks a password at its
    # own cost (a second or so) and only the sign-in tests need to pay it.
    sessions: dict[str, str] = field(default_factory=dict)


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
    return (
        School(NORTH, "10.1.0", _devices(1, "10.1.0"), daily=260),
        School(SOUTH, "10.3.1", tuple(secondary), daily=420),
        School(RIVERSIDE, "10.2.0", _devices(2, "10.2.0"), daily=190),
    )


def _week(school: School, now: float, rng: random.Random) -> list[ShippedEvent]:
    """A school's last seven days of lookups and alerts, oldest first, numbered in order."""
    events: list[ShippedEvent] = []
    weights = [d.busy for d in school.devices]
    start_of_today = now - now % DAY
    for days_ago in range(6, -1, -1):
        day = start_of_today - days_ago * DAY
        weekend = datetime.fromtimestamp(day, UTC).weekday() >= 5
        count = school.daily // 12 if weekend else int(school.daily * rng.uniform(0.8, 1.2))
        # School hours, 08:00 to 16:00 (UTC, near enough to a UK school's day for a picture).
        for moment in sorted(day + rng.uniform(8 * 3_600, 16 * 3_600) for _ in range(count)):
            if moment > now - 60:
                continue
            device = rng.choices(school.devices, weights)[0]
            name, category, pupils, staff, _often = rng.choices(_NAMES, _WEIGHTS)[0]
            action = staff if device.group == "staff" else pupils
            events.append(_lookup(device, moment, name, category, action, rng))
        for _ in range(rng.randint(0, 3) if not weekend else 0):
            # Not the tests' iPad: its one alert is this morning's.
            pupil = rng.choice(
                [d for d in school.devices if d.group != "staff" and d.hostname != KNOWN_DEVICE]
            )
            moment = day + rng.uniform(9 * 3_600, 15 * 3_600)
            if moment < now - 60:
                name, category, severity = rng.choice(_ALERTING)
                events.extend(_alerting(pupil, moment, name, category, severity, rng))
    if school.name == NORTH:
        # The alert and the new phone the tests look for, this morning whatever day it is.
        pupil = next(d for d in school.devices if d.hostname == KNOWN_DEVICE)
        events.extend(_alerting(pupil, now - 1_500, ALERT_NAME, "self-harm", Severity.HIGH, rng))
        phone = Device(NEW_DEVICE, f"{school.net}.200", "a6:5f:3a:00:00:01", "guests", 0)
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
        events.append(_lookup(phone, now - 1_190, "www.tiktok.com", "social", "block", rng))
        for minutes in (40, 35, 30):
            events.append(
                _lookup(pupil, now - minutes * 60, "www.roblox.com", "games", "block", rng)
            )
    if school.name == RIVERSIDE:
        # The iPad of the same name at another school, for a search by school to leave out.
        namesake = next(d for d in school.devices if d.hostname == KNOWN_DEVICE)
        events.append(_lookup(namesake, now - 45 * 60, "www.roblox.com", "games", "block", rng))
    events.sort(key=lambda e: e.time)
    # Numbered in time order, as the agent's log numbers what it records.
    return [msgspec.structs.replace(e, seq=seq) for seq, e in enumerate(events, start=1)]


def _lookup(
    device: Device, moment: float, name: str, category: str, action: str, rng: random.Random
) -> ShippedEvent:
    return ShippedEvent(
        seq=1,
        kind=EventKind.DNS,
        time=moment,
        client_ip=device.client_ip,
        mac=device.mac,
        hostname=device.hostname,
        group=device.group,
        name=name,
        qtype=rng.choice(("A", "A", "AAAA", "HTTPS")),
        action=action,
        categories=(category,) if category else (),
        rcode="NOERROR",
        latency_ms=round(rng.uniform(0.1, 30.0), 2),
    )


def _alerting(
    device: Device, moment: float, name: str, category: str, severity: Severity, rng: random.Random
) -> list[ShippedEvent]:
    """The lookup and the alert it raised, as the agent records them."""
    looked_up = _lookup(device, moment, name, category, "block+alert", rng)
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
        action="block+alert",
        categories=(category,),
        severity=severity,
    )
    return [looked_up, alert]


def build(repo: SqlRepository, now: float, seed: int = 7) -> DemoWorld:
    """Fill ``repo`` (migrated, empty) with the district's week up to ``now``."""
    rng = random.Random(seed)
    world = DemoWorld(now)
    reviews = Reviews(repo.engine)
    policies = PolicyStore(repo.engine)
    for school in _schools():
        site, token = repo.add_site(school.name)
        world.sites[school.name] = site
        world.tokens[school.name] = token
        week = _week(school, now, rng)
        for start in range(0, len(week), 2_000):
            repo.ingest(site, f"demo-{start}", week[start : start + 2_000], keep_after=0)
        # Last week's alerts are mostly dealt with; this morning's are waiting.
        lead = LEAD if school.name == NORTH else "lead-" + school.name.split("-")[0]
        alerts = [e for e in week if e.kind is EventKind.ALERT and e.time < now - DAY]
        for alert, (outcome, note) in zip(alerts, _ACKNOWLEDGED, strict=False):
            reviews.acknowledge(
                site.id, alert.seq, alert.time, outcome, note, lead, now=now - 3_600
            )
        for device in school.devices:
            if device.group == "staff" and device.hostname == "office-printer":
                reviews.review_device(
                    site.id,
                    device.client_ip,
                    device.mac,
                    "known",
                    "The office's printer.",
                    TECHNICIAN,
                    now=now - 5 * DAY,
                )
            elif device.hostname not in ("library-pc-2", "chromebook-y12-10"):
                reviews.review_device(
                    site.id,
                    device.client_ip,
                    device.mac,
                    "approved",
                    "",
                    TECHNICIAN,
                    now=now - 6 * DAY,
                )
        _requests(policies, site, school, now)
    users = user_store(repo.engine)
    users.add(ADMIN, PASSWORD, Role.ADMIN, [])
    users.add(LEAD, PASSWORD, Role.SAFEGUARDING_LEAD, [NORTH])
    users.add(TECHNICIAN, PASSWORD, Role.TECHNICIAN, [NORTH])
    for name in (ADMIN, LEAD, TECHNICIAN):
        world.sessions[name] = users.issue(name, CredentialKind.SESSION, "", DAY, now=now).token
    return world


_REQUESTS: Final = {
    NORTH: (
        (
            "www.coolmathgames.com",
            "games",
            "ks2",
            "Maths club on Thursday uses the times-table games.",
        ),
        ("www.twitch.tv", "streaming", "staff", "Live science lesson from the museum on Friday."),
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
    asked = [
        {
            "id": ids[n],
            "created": now - 5_400 * (n + 1) - 420 * len(school.name),
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
