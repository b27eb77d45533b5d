"""The SafeSearch table and the decisions it gives a group."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from schoolgate.agent.dns.wire import name_labels, text_to_wire, wire_to_text
from schoolgate.agent.filter.compiled import CompiledLists
from schoolgate.agent.policy.categories import AgeTier, bundled
from schoolgate.agent.policy.clients import Group
from schoolgate.agent.policy.decide import Decider
from schoolgate.agent.policy.decision import Action
from schoolgate.agent.policy.safesearch import YouTubeMode, parse_table
from schoolgate.agent.policy.safesearch import bundled as bundled_table
from tests.support.compiled import compiled_lists


def test_the_bundled_table_has_defaults_for_every_age_tier() -> None:
    table = bundled_table()
    assert set(table.defaults) == set(AgeTier)
    assert table.defaults[AgeTier.STAFF].safesearch is False
    assert table.defaults[AgeTier.KS2].youtube is YouTubeMode.STRICT
    assert "youtube" not in table.search_engines and "google" in table.search_engines


def test_rewrites_lead_each_name_to_its_engines_host() -> None:
    found = bundled_table().rewrites(["bing"], YouTubeMode.MODERATE)
    bing = found[text_to_wire("www.bing.com")]
    assert bing.rewrite == text_to_wire("strict.bing.com") and bing.special
    assert not bing.blocked and bing.action is Action.ALLOW
    youtube = found[text_to_wire("m.youtube.com")]
    assert youtube.rewrite == text_to_wire("restrictmoderate.youtube.com")
    assert text_to_wire("www.google.com") not in found


@pytest.mark.parametrize(
    ("text", "fault"),
    [
        (
            '[[engine]]\nid = "x"\nname = "X"\nnames = ["x.example"]\ntargets = { loose = "a" }\n',
            "no strict target",
        ),
        (
            '[[engine]]\nid = "x"\nname = "X"\nnames = []\ntargets = { strict = "a" }\n',
            "youtube needs",
        ),
    ],
)
def test_an_unsound_table_is_refused(text: str, fault: str) -> None:
    with pytest.raises(ValueError, match=fault):
        parse_table(text)


@pytest.fixture
def lists(tmp_path: Path) -> Iterator[CompiledLists]:
    by_category = {"streaming": "youtube.com\n", "self-harm": "bing.com\n"}
    with compiled_lists(tmp_path, by_category) as compiled:
        yield compiled


def decide(lists: CompiledLists, group: Group, name: str) -> tuple[str, str, str]:
    wire = text_to_wire(name)
    decider = Decider(lists, bundled())
    fast = decider._decide(group, wire, name_labels(wire))
    slow = decider.explain(group, wire, name_labels(wire))
    assert (fast.action, fast.rewrite) == (slow.action, slow.rewrite)
    target = wire_to_text(fast.rewrite) if fast.rewrite else "-"
    return fast.action.value, target, fast.category or "-"


def test_blocking_comes_before_the_safe_mode_and_alerts_are_kept(lists: CompiledLists) -> None:
    rewrites = bundled_table().rewrites(["bing", "google"], YouTubeMode.STRICT)
    ks2 = Group("ks2", bundled().actions(AgeTier.KS2), rewrites)
    staff = Group("staff", bundled().actions(AgeTier.STAFF), rewrites)
    assert decide(lists, ks2, "www.google.com") == ("allow", "forcesafesearch.google.com.", "-")
    assert decide(lists, ks2, "www.youtube.com") == ("block", "-", "streaming")
    staff_youtube = decide(lists, staff, "www.youtube.com")
    assert staff_youtube == ("allow", "restrict.youtube.com.", "-")
    # Staff get an alert for self-harm and are still led to the safe host.
    assert decide(lists, staff, "www.bing.com") == ("alert", "strict.bing.com.", "self-harm")
