"""Exceptions and allow/deny lists: stored durably, expiring, never above the locked tier."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from schoolgate.agent.dns.wire import name_labels, text_to_wire
from schoolgate.agent.filter.compiled import CompiledLists
from schoolgate.agent.policy.categories import AgeTier, bundled
from schoolgate.agent.policy.clients import Group
from schoolgate.agent.policy.decide import Decider
from schoolgate.agent.policy.decision import Action, Decision
from schoolgate.agent.policy.exceptions import (
    ExceptionError,
    ExceptionStore,
    PolicyException,
    device_overrides,
    group_overrides,
    normalize_device,
    parse_duration,
)
from tests.support.compiled import compiled_lists


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


@pytest.mark.parametrize(
    "change",
    [
        {"name": 42},
        {"name": "not a name!"},
        {"name": "a" * 300 + ".example"},
        {"name": ""},
        {"expires": "tomorrow"},
        {"expires": True},
        {"expires": float("inf")},
        {"expires": 1e300},
        {"created": float("nan")},
        {"created": None},
        {"action": "maybe"},
        {"group": ["ks2"]},
        {"id": None},
    ],
)
def test_a_hand_edited_entry_of_the_wrong_shape_is_skipped(
    tmp_path: Path, change: dict[str, object]
) -> None:
    store = ExceptionStore(tmp_path)
    store.path.parent.mkdir(parents=True)
    bad = {**store_entry("bad.example"), **change}
    entries = [bad, "not an object", store_entry("Good.Example.")]
    store.path.write_text(json.dumps({"exceptions": entries}))
    # The others stand, with their names in the one form the matcher knows.
    assert [e.name for e in store.load(now=0)] == ["good.example"]


def test_fields_a_newer_version_adds_are_ignored(tmp_path: Path) -> None:
    store = ExceptionStore(tmp_path)
    store.path.parent.mkdir(parents=True)
    entry = {**store_entry("a.example"), "request": "r-17"}
    store.path.write_text(json.dumps({"exceptions": [entry]}))
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
    by_category = {
        "games": "game.example\n",
        "terrorism": "locked.example\n",
        "self-harm": "harm.example\n",
    }
    with compiled_lists(tmp_path, by_category) as compiled:
        yield compiled


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


@pytest.mark.parametrize(
    ("kind", "action"), [("allow", Action.ALERT), ("deny", Action.BLOCK_ALERT)]
)
def test_allow_and_deny_entries_never_silence_a_safeguarding_alert(
    lists: CompiledLists, kind: str, action: Action
) -> None:
    group = Group("ks2", bundled().actions(AgeTier.KS2))
    entries: dict[str, list[str]] = {"allow": [], "deny": []}
    entries[kind].append("harm.example")
    group.set_overrides(group_overrides("ks2", exceptions=[], **entries))
    fast, slow = decide(lists, group, "support.harm.example")
    for decision in (fast, slow):
        assert decision.action is action
        assert decision.category == "self-harm"
        assert decision.rule == f"{kind} list" and decision.entry == "harm.example"


def test_an_exception_keeps_the_alert_too(lists: CompiledLists) -> None:
    group = Group("ks2", bundled().actions(AgeTier.KS2))
    group.set_overrides(group_overrides("ks2", [], [], [exception("harm.example")]))
    fast, slow = decide(lists, group, "harm.example")
    assert fast.action is slow.action is Action.ALERT
    assert fast.rule.startswith("exception e1")


def test_of_two_exceptions_for_one_name_the_newer_wins() -> None:
    older_block = PolicyException("b", "x.example", "ks2", "block", 4e9, "", 10.0, "t")
    newer_allow = PolicyException("a", "x.example", "ks2", "allow", 4e9, "", 20.0, "t")
    for order in ([older_block, newer_allow], [newer_allow, older_block]):
        found = group_overrides("ks2", [], [], order)
        assert found[text_to_wire("x.example")].action is Action.ALLOW
    newer_block = PolicyException("c", "x.example", "ks2", "block", 4e9, "", 30.0, "t")
    found = group_overrides("ks2", [], [], [newer_allow, newer_block])
    assert found[text_to_wire("x.example")].action is Action.BLOCK


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


# --- exceptions for one device ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "device"),
    [
        ("", ""),
        ("AA-BB-CC-00-00-01", "aa:bb:cc:00:00:01"),
        ("aabb.cc00.0001", "aa:bb:cc:00:00:01"),
        (" 10.1.0.7 ", "10.1.0.7"),
        ("2001:DB8::0:7", "2001:db8::7"),
        ("::ffff:10.1.0.7", "10.1.0.7"),
    ],
)
def test_a_device_is_named_one_way(text: str, device: str) -> None:
    assert normalize_device(text) == device


@pytest.mark.parametrize("text", ["ks2-laptop", "10.1.0.300", "aa:bb:cc", "<img src=x>"])
def test_a_device_that_is_neither_a_mac_nor_an_address_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="neither a MAC address nor an IP address"):
        normalize_device(text)


def test_the_store_keeps_the_device_and_reads_files_without_one(tmp_path: Path) -> None:
    store = ExceptionStore(tmp_path)
    granted = store.add("maths.example", "ks2", "allow", 60, "", "it", device="AA:BB:CC:00:00:01")
    assert granted.device == "aa:bb:cc:00:00:01"
    assert [e.device for e in ExceptionStore(tmp_path).load()] == ["aa:bb:cc:00:00:01"]
    # Written before devices could be named: for the whole group.
    store.path.write_text(json.dumps({"exceptions": [store_entry("a.example")]}))
    assert [e.device for e in store.load(now=0)] == [""]


@pytest.mark.parametrize("device", [42, None, "not-a-device"])
def test_an_entry_with_a_bad_device_is_skipped_not_widened(tmp_path: Path, device: object) -> None:
    # Read as the whole group's, a broken device would open the name to every pupil in it.
    store = ExceptionStore(tmp_path)
    store.path.parent.mkdir(parents=True)
    entries = [{**store_entry("bad.example"), "device": device}, store_entry("good.example")]
    store.path.write_text(json.dumps({"exceptions": entries}))
    assert [e.name for e in store.load(now=0)] == ["good.example"]


def for_device(name: str, device: str, created: float = 0.0, group: str = "ks2") -> PolicyException:
    return PolicyException("d1", name, group, "allow", 4e9, "why", created, "t", device)


def test_a_device_exception_is_the_devices_alone(lists: CompiledLists) -> None:
    laptop = "aa:bb:cc:00:00:01"
    exceptions = [
        for_device("game.example", laptop),
        for_device("other.example", laptop, group="staff"),  # another group's: not here
    ]
    shared = group_overrides("ks2", [], ["news.example"], exceptions)
    assert text_to_wire("game.example") not in shared
    personal = device_overrides("ks2", shared, exceptions)
    assert list(personal) == [laptop]
    assert text_to_wire("other.example") not in personal[laptop]
    group = Group("ks2", bundled().actions(AgeTier.KS2))
    group.set_overrides(shared)
    assert group.set_devices(personal)
    assert not group.set_devices(personal)  # the same devices: the clients stand
    mine = group.for_device(laptop, "10.1.0.7")
    assert mine is not group and mine.name == "ks2" and mine.tally is group.tally
    assert group.for_device("", "10.1.0.8") is group
    fast, slow = decide(lists, mine, "www.game.example")
    assert fast.action is slow.action is Action.ALLOW and fast.rule.startswith("exception d1")
    fast, _ = decide(lists, group, "www.game.example")
    assert fast.blocked  # the rest of the group
    fast, _ = decide(lists, mine, "news.example")
    assert fast.blocked and fast.rule == "deny list"  # the group's own entries still hold
    fast, _ = decide(lists, mine, "locked.example")
    assert fast.blocked and fast.category == "terrorism"


def test_a_device_is_found_by_mac_first_then_by_address() -> None:
    group = Group("ks2")
    group.set_devices({"aa:bb:cc:00:00:01": {}, "10.1.0.9": {}})
    by_mac = group.for_device("aa:bb:cc:00:00:01", "10.1.0.9")
    assert by_mac is group.devices["aa:bb:cc:00:00:01"]
    assert group.for_device("aa:bb:cc:00:00:02", "10.1.0.9") is group.devices["10.1.0.9"]


def test_between_the_group_and_the_device_the_newer_exception_wins() -> None:
    laptop = "10.1.0.7"
    group_block = PolicyException("g", "x.example", "ks2", "block", 4e9, "", 30.0, "t")
    device_allow = for_device("x.example", laptop, created=20.0)
    exceptions = [device_allow, group_block]
    shared = group_overrides("ks2", [], [], exceptions)
    assert device_overrides("ks2", shared, exceptions)[laptop][text_to_wire("x.example")].blocked
    device_allow = for_device("x.example", laptop, created=40.0)
    exceptions = [device_allow, group_block]
    shared = group_overrides("ks2", [], [], exceptions)
    found = device_overrides("ks2", shared, exceptions)[laptop][text_to_wire("x.example")]
    assert found.action is Action.ALLOW


def test_a_schedule_reaches_the_devices_copies() -> None:
    group = Group("ks2", {"games": Action.BLOCK})
    group.set_devices({"10.1.0.7": {}})
    copy = group.devices["10.1.0.7"]
    copy.memo[b"k"] = Decision(Action.BLOCK, "category")
    group.set_actions({"games": Action.ALLOW})
    assert copy.actions == {"games": Action.ALLOW} and copy.memo == {}
