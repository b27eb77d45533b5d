"""The local activity store: what goes in comes out, searches find exactly what they should."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from schoolgate.agent.activity.events import Event, EventKind, Severity
from schoolgate.agent.activity.store import (
    ActivityStore,
    ActivityStoreError,
    EventFilter,
    reversed_name,
)

T0 = 1_795_269_900.0  # 2026-11-21 14:05 UTC


def dns(name: str, at: float = T0, **fields: object) -> Event:
    values: dict[str, object] = {
        "client_ip": "10.20.2.7",
        "mac": "aa:bb:cc:00:02:07",
        "hostname": "ks2-lab-7",
        "group": "ks2",
        "qtype": "A",
        "action": "allow",
        "rcode": "NOERROR",
        "latency_ms": 0.2,
        "cache_hit": True,
    }
    values.update(fields)
    return Event(kind=EventKind.DNS, time=at, name=name, **values)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ActivityStore]:
    opened = ActivityStore(tmp_path / "state")
    yield opened
    opened.close()


def names(store: ActivityStore, **where: object) -> list[str]:
    found = store.search(EventFilter(**where), newest_first=False)  # type: ignore[arg-type]
    return [s.event.name for s in found]


def test_what_goes_in_comes_out(store: ActivityStore) -> None:
    alert = Event(
        kind=EventKind.ALERT,
        time=T0 + 1,
        client_ip="10.20.2.7",
        group="ks2",
        name="harm.example",
        action="block+alert",
        categories=("self-harm", "adult"),
        rule="category",
        severity=Severity.HIGH,
        data={"attempts": 5, "minutes": 10},
    )
    query = dns("www.game.example", categories=("games",), action="block", cache_hit=None)
    assert store.add([query, alert]) == 2
    newest, oldest = store.search(EventFilter())
    assert (oldest.event, newest.event) == (query, alert)
    assert newest.seq == oldest.seq + 1
    assert store.count() == 2


def test_a_name_finds_itself_and_the_names_below_it(store: ActivityStore) -> None:
    store.add([dns(n) for n in ("example.com", "www.example.com", "badexample.com", "com")])
    assert names(store, name="example.com") == ["example.com", "www.example.com"]
    assert names(store, name="EXAMPLE.com.") == ["example.com", "www.example.com"]
    assert names(store, name="com") == ["example.com", "www.example.com", "badexample.com", "com"]
    assert reversed_name("www.Example.com.") == "com.example.www."


def test_each_filter(store: ActivityStore) -> None:
    store.add(
        [
            dns("a.example", T0, categories=("games", "social"), action="block"),
            dns("b.example", T0 + 60, client_ip="10.20.9.1", mac="", hostname="", group="staff"),
            dns("c.example", T0 + 120, categories=("games_x",)),
            Event(kind=EventKind.DEVICE, time=T0 + 180, mac="aa:bb:cc:00:00:99"),
        ]
    )
    assert names(store, clients=("10.20.9.1",)) == ["b.example"]
    assert names(store, clients=("AA:BB:CC:00:02:07",)) == ["a.example", "c.example"]
    assert names(store, clients=("ks2-lab-7", "nobody")) == ["a.example", "c.example"]
    assert names(store, group="staff") == ["b.example"]
    assert names(store, category="games") == ["a.example"]  # not games_x: whole ids only
    assert names(store, category="social") == ["a.example"]
    assert names(store, action="block") == ["a.example"]
    assert names(store, since=T0 + 60, until=T0 + 120) == ["b.example"]
    assert names(store, kinds=(EventKind.DEVICE,)) == [""]
    assert names(store, group="staff", action="block") == []


def test_the_newest_come_first_up_to_the_limit(store: ActivityStore) -> None:
    store.add([dns(f"n{i}.example", T0 + i) for i in range(10)])
    newest = store.search(EventFilter(), limit=3)
    assert [s.event.name for s in newest] == ["n9.example", "n8.example", "n7.example"]


def test_old_events_go_and_numbers_are_never_used_again(store: ActivityStore) -> None:
    store.add([dns(f"old{i}.example", T0 - 86400) for i in range(12_000)])
    store.add([dns("new.example")])
    last = store.search(EventFilter(), limit=1)[0].seq
    assert store.prune(before=T0 - 3600) == 12_000
    assert names(store) == ["new.example"]
    assert store.prune(before=T0 - 3600) == 0
    store.prune(before=T0 + 1)
    store.add([dns("after.example")])
    assert store.search(EventFilter(), limit=1)[0].seq == last + 1


def test_an_unwritable_state_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("not a directory", encoding="utf-8")
    store = ActivityStore(blocker)
    with pytest.raises(ActivityStoreError, match=r"cannot make .* for activity events"):
        store.add([dns("a.example")])
    store.close()
