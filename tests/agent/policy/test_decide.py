"""Decisions: the strongest action among a name's categories wins, with its reasons."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from schoolgate.agent.dns.wire import name_labels, text_to_wire
from schoolgate.agent.filter.compiled import CompiledLists
from schoolgate.agent.policy.categories import AgeTier, bundled
from schoolgate.agent.policy.clients import Group
from schoolgate.agent.policy.decide import Decider
from schoolgate.agent.policy.decision import Action, Decision
from tests.support.compiled import compiled_lists

LISTS = {
    "games": "both.example\ngame.example\n",
    "adult": "both.example\n",
    "self-harm": "sh.example\ngame.example\n",
    "child-abuse": "locked.example\n",
    "mystery": "mystery.example\n",
}


@pytest.fixture
def lists(tmp_path: Path) -> Iterator[CompiledLists]:
    with compiled_lists(tmp_path, LISTS, suffix="-list") as compiled:
        yield compiled


def decide(lists: CompiledLists, group: Group, name: str) -> Decision:
    wire = text_to_wire(name)
    return Decider(lists, bundled()).explain(group, wire, name_labels(wire))


def test_the_strongest_action_wins(lists: CompiledLists) -> None:
    staff = Group("staff", bundled().actions(AgeTier.STAFF))
    d = decide(lists, staff, "www.both.example")
    assert d.action is Action.BLOCK  # games allowed for staff, adult blocked
    assert (d.category, d.entry, d.lists) == ("adult", "both.example", ("adult-list",))


def test_a_blocking_and_an_alerting_category_give_block_and_alert(lists: CompiledLists) -> None:
    staff = Group("staff", {**bundled().actions(AgeTier.STAFF), "games": Action.BLOCK})
    d = decide(lists, staff, "game.example")
    assert d.action is Action.BLOCK_ALERT and d.blocked and d.alert
    assert d.category == "games"  # the blocking one is the one that mattered most


def test_alert_lets_through(lists: CompiledLists) -> None:
    staff = Group("staff", bundled().actions(AgeTier.STAFF))
    d = decide(lists, staff, "sh.example")
    assert d.action is Action.ALERT and not d.blocked and d.alert
    assert d.category == "self-harm"


def test_an_allowed_category_is_still_named(lists: CompiledLists) -> None:
    guests = Group("guests", {**bundled().actions(AgeTier.GUEST), "self-harm": Action.ALLOW})
    d = decide(lists, guests, "game.example")
    assert d.action is Action.ALLOW and d.rule == "category allowed"
    assert d.category in ("games", "self-harm")


def test_the_locked_tier_blocks_for_everyone(lists: CompiledLists) -> None:
    for age in AgeTier:
        group = Group(age.value, bundled().actions(age, {"child-abuse": Action.ALLOW}))
        d = decide(lists, group, "x.locked.example")
        assert d.blocked and d.category == "child-abuse"


def test_a_category_the_policy_does_not_know_is_blocked(lists: CompiledLists) -> None:
    group = Group("g", bundled().actions(AgeTier.STAFF))
    assert decide(lists, group, "mystery.example").blocked


def test_the_fast_path_agrees_with_the_explanation(lists: CompiledLists) -> None:
    decider = Decider(lists, bundled())
    for age in AgeTier:
        group = Group(age.value, bundled().actions(age))
        for name in ("both.example", "game.example", "sh.example", "none.example"):
            wire = text_to_wire(name)
            fast = decider.decide_name(group, wire)
            slow = decider.explain(group, wire, name_labels(wire))
            assert fast.blocked == slow.blocked and fast.alert == slow.alert, (age, name)
