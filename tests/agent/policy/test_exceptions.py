"""Exceptions and allow/deny lists: stored durably, expiring, never above the locked tier."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from schoolgate.agent.dns.wire import name_labels, text_to_wire
from schoolgate.agent.filter.build import build
from schoolgate.agent.filter.compiled import CompiledLists
from schoolgate.agent.filter.sources import ListSource
from schoolgate.agent.policy.categories import AgeTier, bundled
from schoolgate.agent.policy.clients import Group
from schoolgate.agent.policy.decide import Decider
from schoolgate.agent.policy.decision import Action, Decision
from schoolgate.agent.policy.exceptions import (
    ExceptionError,
    ExceptionStore,
    PolicyException,
    group_overrides,
    parse_duration,
)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("30m", 1800), ("2h", 7200), ("1d", 86400), ("1W", 604800)]
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["2", "2 hours", "0h", "400d", "-1h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_the_store_keeps_and_expires(tmp_path: Path) -> None:
    store = ExceptionStore(tmp_path)
    assert store.load() == [] and store.stamp() is None
    first = store.add("maths.example", "ks2", "allow", 3600, "lesson", "teacher")
    second = store.add("other.example", "staff", "allow", 60, "", "it")
    assert [e.id for e in store.load()] == [first.id, second.id]
    assert [e.id for e in store.load(now=second.expires + 1)] == [first.id]
    assert store.remove(second.id) and not store.remove(second.id)
    assert [e.name for e in ExceptionStore(tmp_path).load()] == ["maths.example"]
    # Adding drops what has expired, so the file does not grow for ever.
    raw = json.loads(store.path.read_text())
    raw["exceptions"][0]["expires"] = 1.0
    store.path.write_text(json.dumps(raw))
    store.add("third.example", "ks2", "allow", 60, "", "it")
    assert [e.name for e in store.load()] == ["third.example"]


def test_a_damaged_store_is_reported_and_bad_entries_skipped(tmp_path: Path) -> None:
    store = ExceptionStore(tmp_path)
    store.path.parent.mkdir(parents=True)
    store.path.write_text("{not json")
    with pytest.raises(ExceptionError, match="cannot read"):
        store.load()
    good = store_entry("a.example")
    store.path.write_text(json.dumps({"exceptions": [{"id": "x"}, good]}))
    assert [e.name for e in store.load(now=0)] == ["a.example"]


def store_entry(name: str, group: str = "ks2", action: str = "allow") -> dict[str, object]:
    return {
        "id": "abcd1234",
        "name": name,
        "group": group,
        "action": action,
        "expires": 4_000_000_000.0,
        "reason": "r",
        "created": 0.0,
        "by": "t",
    }


@pytest.fixture
def lists(tmp_path: Path) -> Iterator[CompiledLists]:
    sources = []
    for category, text in {"games": "game.example\n", "terrorism": "locked.example\n"}.items():
        path = tmp_path / f"{category}.txt"
        path.write_text(text)
        sources.append(ListSource(category, category, path))
    build(sources, tmp_path / "out.sgl")
    compiled = CompiledLists(tmp_path / "out.sgl")
    yield compiled
    compiled.close()


def decide(lists: CompiledLists, group: Group, name: str) -> tuple[Decision, Decision]:
    """(fast path, explanation): they must agree."""
    wire = text_to_wire(name)
    decider = Decider(lists, bundled())
    return decider._decide(group, wire, name_labels(wire)), decider.explain(
        group, wire, name_labels(wire)
    )


def exception(name: str, action: str = "allow", group: str = "ks2") -> PolicyException:
    return PolicyException("e1", name, group, action, 4e9, "why", 0.0, "t")


def test_overrides_beat_categories_but_never_the_locked_tier(lists: CompiledLists) -> None:
    group = Group("ks2", bundled().actions(AgeTier.KS2))
    group.set_overrides(
        group_overrides(
            "ks2",
            allow=["game.example", "locked.example"],
            deny=["news.example"],
            exceptions=[exception("other.example", "block", group="staff")],
        )
    )
    for fast, slow in [decide(lists, group, "www.game.example")]:
        assert fast.action is slow.action is Action.ALLOW
        assert fast.rule == "allow list" and fast.entry == "game.example"
    fast, slow = decide(lists, group, "a.news.example")
    assert fast.blocked and slow.blocked and fast.rule == "deny list"
    fast, slow = decide(lists, group, "locked.example")
    assert fast.blocked and slow.blocked and fast.category == slow.category == "terrorism"
    fast, _ = decide(lists, group, "other.example")
    assert not fast.blocked  # another group's exception


def test_the_most_specific_entry_wins_and_exceptions_come_last() -> None:
    found = group_overrides(
        "ks2",
        allow=["maths.example.com"],
        deny=["example.com", "maths.example.com"],
        exceptions=[exception("example.com")],
    )
    assert found[text_to_wire("maths.example.com")].action is Action.BLOCK  # deny over allow
    granted = found[text_to_wire("example.com")]
    assert granted.action is Action.ALLOW and granted.rule.startswith("exception e1 until")
