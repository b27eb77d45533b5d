"""Alerts: a category alert once per visit, repeated attempts once per window, severities from
the category tiers, and memory bounded whatever the network sends."""

from __future__ import annotations

import pytest

from schoolgate.agent.activity import alerts as alerts_mod
from schoolgate.agent.activity.alerts import Alerts, AlertSettings
from schoolgate.agent.activity.events import EventKind, Severity
from schoolgate.agent.dns.wire import Query, parse_query, text_to_wire
from schoolgate.agent.policy import categories
from schoolgate.agent.policy.clients import Client, Group
from schoolgate.agent.policy.decision import Action, Decision

T0 = 1_795_269_900.0


def query(name: str, qtype: int = 1) -> Query:
    wire = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + text_to_wire(name)
    return parse_query(wire + qtype.to_bytes(2, "big") + b"\x00\x01")


def client(address: str = "10.0.0.7") -> Client:
    return Client(address, Group("ks2"))


HARM = Decision(Action.BLOCK_ALERT, "category", category="self-harm", entry="harm.example")
GAMES = Decision(Action.BLOCK, "category", category="games", entry="game.example")
LOCKED = Decision(Action.BLOCK, "category", category="child-abuse", entry="x.example")


@pytest.fixture
def alerts() -> Alerts:
    return Alerts(
        AlertSettings(repeated_blocks=3, repeated_minutes=5, quiet_minutes=10),
        categories.bundled(),
    )


def test_a_category_alert_names_device_name_and_severity(alerts: Alerts) -> None:
    pupil = Client("10.0.0.7", Group("ks2"))
    pupil.mac, pupil.hostname = "aa:bb:cc:00:00:07", "ks2-lab-7"
    event = alerts.category(T0, pupil, query("Harm.Example"), HARM)
    assert event is not None
    assert (event.kind, event.severity, event.time) == (EventKind.ALERT, Severity.HIGH, T0)
    assert (event.client_ip, event.mac, event.hostname, event.group) == (
        "10.0.0.7",
        "aa:bb:cc:00:00:07",
        "ks2-lab-7",
        "ks2",
    )
    assert (event.name, event.qtype, event.action) == ("harm.example", "A", "block+alert")
    assert event.categories == ("self-harm",) and event.data == {"reason": "category"}
    assert alerts.raised == {("category", Severity.HIGH): 1}


def test_the_same_visit_alerts_once_until_the_quiet_time_is_over(alerts: Alerts) -> None:
    pupil = client()
    q = query("harm.example")
    assert alerts.category(T0, pupil, q, HARM) is not None
    assert alerts.category(T0 + 1, pupil, q, HARM) is None
    assert alerts.category(T0 + 599, pupil, q, HARM) is None
    assert alerts.category(T0 + 2, client("10.0.0.8"), q, HARM) is not None
    assert alerts.category(T0 + 3, pupil, query("other.harm.example"), HARM) is not None
    assert alerts.category(T0 + 600, pupil, q, HARM) is not None
    assert alerts.suppressed == 2
    # A clock stepped back never silences alerts for the length of the step.
    assert alerts.category(T0 - 3600, pupil, q, HARM) is not None


@pytest.mark.parametrize(
    ("category", "severity"),
    [
        ("child-abuse", Severity.CRITICAL),
        ("self-harm", Severity.HIGH),
        ("malware", Severity.MEDIUM),
        ("proxy-vpn", Severity.MEDIUM),
        ("adult", Severity.LOW),
        ("games", Severity.LOW),
        ("a-site-category-unknown-here", Severity.HIGH),
        (None, Severity.MEDIUM),
    ],
)
def test_severity_follows_the_tier(
    alerts: Alerts, category: str | None, severity: Severity
) -> None:
    assert alerts.severity(category) is severity


def test_repeated_blocks_within_the_window_alert_once(alerts: Alerts) -> None:
    pupil = client()
    q = query("game.example")
    assert alerts.blocked(T0, pupil, q, GAMES) is None
    assert alerts.blocked(T0 + 10, pupil, q, GAMES) is None
    event = alerts.blocked(T0 + 20, pupil, q, GAMES)
    assert event is not None
    # Games are the low tier, but a pattern of attempts is never below medium.
    assert event.severity is Severity.MEDIUM
    assert event.data == {"reason": "repeated-attempts", "blocked": 3, "minutes": 5}
    for i in range(10):  # more attempts within the window: no new alert
        assert alerts.blocked(T0 + 30 + i, pupil, q, GAMES) is None
    for i in range(3):  # a new window
        found = alerts.blocked(T0 + 400 + i, pupil, q, GAMES)
    assert found is not None
    assert alerts.raised == {("repeated-attempts", Severity.MEDIUM): 2}


def test_blocks_spread_over_more_than_the_window_do_not_alert(alerts: Alerts) -> None:
    pupil = client()
    q = query("game.example")
    for i in range(10):
        assert alerts.blocked(T0 + i * 200, pupil, q, GAMES) is None


def test_repeated_attempts_at_a_locked_category_are_critical(alerts: Alerts) -> None:
    pupil = client()
    q = query("x.example")
    found = [alerts.blocked(T0 + i, pupil, q, LOCKED) for i in range(3)]
    assert found[-1] is not None and found[-1].severity is Severity.CRITICAL


def test_repeated_attempts_can_be_switched_off() -> None:
    alerts = Alerts(AlertSettings(repeated_blocks=0))
    pupil = client()
    q = query("game.example")
    assert all(alerts.blocked(T0 + i, pupil, q, GAMES) is None for i in range(50))


def test_a_flood_of_addresses_does_not_grow_memory(
    alerts: Alerts, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(alerts_mod, "_TRACKED_LIMIT", 100)
    q = query("game.example")
    for i in range(1000):
        alerts.blocked(T0 + i, client(f"10.1.{i // 256}.{i % 256}"), q, GAMES)
        alerts.category(T0 + i, client(f"10.1.{i // 256}.{i % 256}"), q, HARM)
    assert len(alerts._blocks) <= 100 and len(alerts._raised) <= 100


def test_a_reload_with_a_new_threshold_keeps_counting(alerts: Alerts) -> None:
    pupil = client()
    q = query("game.example")
    alerts.blocked(T0, pupil, q, GAMES)
    alerts.configure(AlertSettings(repeated_blocks=2, repeated_minutes=5), categories.bundled())
    assert alerts.blocked(T0 + 1, pupil, q, GAMES) is not None


def test_a_bypass_lookup_raises_one_bypass_event_per_quiet_time(alerts: Alerts) -> None:
    vpn = Decision(
        Action.BLOCK, "category", category="proxy-vpn", categories=("proxy-vpn",), bypass=True
    )
    pupil = client()
    event = alerts.bypass_lookup(T0, pupil, query("www.NordVPN.com", 28), vpn)
    assert event is not None
    assert (event.kind, event.name, event.qtype, event.action) == (
        EventKind.BYPASS,
        "www.nordvpn.com",
        "AAAA",
        "block",
    )
    assert event.categories == ("proxy-vpn",) and event.data == {"via": "lookup"}
    assert alerts.bypass_lookup(T0 + 5, pupil, query("www.nordvpn.com"), vpn) is None
    assert alerts.bypass_lookup(T0 + 601, pupil, query("www.nordvpn.com"), vpn) is not None
    assert alerts.bypass_lookups == 2
