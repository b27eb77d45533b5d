"""What the query path records becomes events: names and codes as text, the site's choice of
what to keep, and pseudonyms instead of identities when the site asks for them."""

from __future__ import annotations

from schoolgate.agent.activity import store as store_mod
from schoolgate.agent.activity.events import Event, EventKind, Severity
from schoolgate.agent.activity.pseudonyms import Pseudonyms
from schoolgate.agent.activity.recorder import EventMaker, QueryRecord
from schoolgate.agent.activity.settings import QueryLogging
from schoolgate.agent.activity.store import event_from_row, event_row
from schoolgate.agent.dns.wire import Query, parse_query, text_to_wire
from schoolgate.agent.policy.clients import Client, Group
from schoolgate.agent.policy.decision import ALLOWED, Action, Decision
from schoolgate.agent.policy.identity import Device
from schoolgate.agent.stats import Outcome

T0 = 1_795_269_900.0
PUPIL = Client("10.0.0.7", Group("ks2"), Device("aa:bb:cc:00:00:07", "ks2-lab-7"))
GAMES = Decision(Action.BLOCK, "category", category="games", categories=("games", "social"))
SAFE = Decision(
    Action.ALLOW, "safe search: google", rewrite=text_to_wire("forcesafesearch.google.com")
)


def query(name: str, qtype: int = 1) -> Query:
    wire = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + text_to_wire(name)
    return parse_query(wire + qtype.to_bytes(2, "big") + b"\x00\x01")


def record(
    name: str = "www.example.org",
    decision: Decision = ALLOWED,
    outcome: Outcome = Outcome.UPSTREAM,
    rcode: int = 0,
    qtype: int = 1,
) -> QueryRecord:
    return (
        T0,
        PUPIL,
        query(name, qtype).key,
        decision,
        outcome,
        rcode,
        0.0123,
        outcome is Outcome.CACHED,
    )


def made_events(maker: EventMaker, items: list[object]) -> list[Event]:
    """What the maker wrote, read back as the store reads its rows."""
    return [event_from_row(row) for row in maker(items)]


def test_rows_are_in_the_order_of_the_tables_columns() -> None:
    assert [c.name for c in store_mod._events.columns] == ["seq", *store_mod.COLUMNS]
    alert = Event(kind=EventKind.ALERT, time=T0, name="x.example", severity=Severity.HIGH)
    assert event_from_row(event_row(alert)) == alert


def test_a_query_becomes_a_dns_event() -> None:
    (event,) = made_events(EventMaker(QueryLogging.ALL), [record("WWW.Example.ORG", qtype=65)])
    assert event == Event(
        kind=EventKind.DNS,
        time=T0,
        client_ip="10.0.0.7",
        mac="aa:bb:cc:00:00:07",
        hostname="ks2-lab-7",
        group="ks2",
        name="www.example.org",
        qtype="HTTPS",
        action="allow",
        rule="no list matched",
        rcode="NOERROR",
        latency_ms=12.3,
        cache_hit=False,
    )


def test_codes_and_hostile_names_are_written_safely() -> None:
    hostile = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05<b>\x01\x7f\x07example\x00"
    q = parse_query(hostile + b"\x00\x01\x00\x01")
    made = made_events(
        EventMaker(QueryLogging.ALL),
        [
            record("nx.example", rcode=3, qtype=65280),
            record(".", rcode=2),
            (T0, PUPIL, q.key, ALLOWED, Outcome.UPSTREAM, 0, 0.001, False),
        ],
    )
    assert [(e.name, e.qtype, e.rcode) for e in made] == [
        ("nx.example", "TYPE65280", "NXDOMAIN"),
        (".", "A", "SERVFAIL"),
        # Control bytes escaped as the zone-file form: nothing unprintable reaches the log.
        ("<b>\\001\\127.example", "A", "NOERROR"),
    ]


def test_blocks_rewrites_and_stale_answers_say_so() -> None:
    made = made_events(
        EventMaker(QueryLogging.ALL),
        [
            record("game.example", GAMES, Outcome.BLOCKED),
            record("www.google.com", SAFE, Outcome.REWRITTEN),
            record("old.example", outcome=Outcome.STALE),
        ],
    )
    blocked, rewritten, stale = made
    assert (blocked.action, blocked.categories, blocked.rule) == (
        "block",
        ("games", "social"),
        "category",
    )
    assert (rewritten.action, rewritten.rule) == ("rewrite", "safe search: google")
    assert stale.data == {"stale": True}


def test_blocked_only_keeps_blocks_and_alerts_and_every_other_kind() -> None:
    alerting = Decision(Action.ALERT, "category", category="self-harm")
    alert = Event(kind=EventKind.ALERT, time=T0, severity=Severity.HIGH, name="harm.example")
    maker = EventMaker(QueryLogging.BLOCKED)
    made = made_events(
        maker,
        [
            record("www.example.org"),
            record("game.example", GAMES, Outcome.BLOCKED),
            record("harm.example", alerting),
            alert,
        ],
    )
    assert [(e.kind, e.name) for e in made] == [
        (EventKind.DNS, "game.example"),
        (EventKind.DNS, "harm.example"),
        (EventKind.ALERT, "harm.example"),
    ]
    assert maker.skipped == 1
    nothing = EventMaker(QueryLogging.NONE)
    assert made_events(nothing, [record(), alert]) == [alert] and nothing.skipped == 1


def test_pseudonyms_replace_every_identity_and_stay_the_same() -> None:
    hide = Pseudonyms(b"k" * 32)
    alert = Event(kind=EventKind.ALERT, time=T0, client_ip="10.0.0.7", hostname="KS2-Lab-7")
    made = made_events(EventMaker(QueryLogging.ALL, hide), [record(), alert])
    dns_event, alert_event = made
    assert dns_event.client_ip == alert_event.client_ip == hide("10.0.0.7")
    assert dns_event.hostname == alert_event.hostname == hide("ks2-lab-7")  # case does not matter
    assert dns_event.mac == hide("aa:bb:cc:00:00:07")
    assert all(v.startswith("p-") and len(v) == 18 for v in (dns_event.client_ip, dns_event.mac))
    assert "10.0.0.7" not in repr(made) and "ks2-lab-7" not in repr(made).lower()
    assert dns_event.group == "ks2"  # groups are policy, not identity
    assert Pseudonyms(b"j" * 32)("10.0.0.7") != hide("10.0.0.7")
    assert hide("") == ""
