"""Group membership: by address, MAC or DHCP name; order; overlaps the config shows."""

from __future__ import annotations

import fnmatch
import ipaddress
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schoolgate.agent.policy.groups import GroupMatcher, GroupRule, overlaps, patterns_may_meet
from schoolgate.agent.policy.identity import Device

ip = ipaddress.ip_address
net = ipaddress.ip_network

KS2 = GroupRule("ks2", networks=(net("10.20.2.0/24"),), hostnames=("ks2-*",))
STAFF = GroupRule("staff", networks=(net("10.20.9.0/24"),), macs=frozenset({"aa:bb:cc:00:00:01"}))
LAB = GroupRule("lab", networks=(net("10.20.2.128/25"),))


def test_members_of_each_kind() -> None:
    m = GroupMatcher([KS2, STAFF], "guests")
    assert m.match(ip("10.20.2.7"), None) == "ks2"
    assert m.match(ip("10.30.0.1"), Device("", "ks2-lab-01")) == "ks2"
    assert m.match(ip("10.30.0.1"), Device("aa:bb:cc:00:00:01", "")) == "staff"
    assert m.match(ip("10.30.0.1"), Device("aa:bb:cc:00:00:02", "visitor")) == "guests"


def test_the_lower_order_wins() -> None:
    first = GroupRule("ks2", networks=(net("10.20.2.0/24"),), order=2)
    lab = GroupRule("lab", networks=(net("10.20.2.128/25"),), order=1)
    m = GroupMatcher([first, lab], "guests")
    assert m.match(ip("10.20.2.200"), None) == "lab"
    assert m.match(ip("10.20.2.5"), None) == "ks2"


def test_without_order_the_most_specific_member_wins_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    m = GroupMatcher([KS2, STAFF, LAB], "guests")
    teacher_in_lab = Device("aa:bb:cc:00:00:01", "")
    with caplog.at_level(logging.WARNING):
        assert m.match(ip("10.20.2.200"), teacher_in_lab) == "staff"  # MAC over address
        assert m.match(ip("10.20.2.200"), teacher_in_lab) == "staff"
        assert m.match(ip("10.20.2.200"), None) == "lab"  # the longer prefix
    warnings = [r for r in caplog.records if "matches the groups" in r.getMessage()]
    assert len(warnings) == 2


@pytest.mark.parametrize(
    ("a", "b", "shared"),
    [
        (
            GroupRule("a", macs=frozenset({"aa:aa:aa:aa:aa:aa"})),
            GroupRule("b", macs=frozenset({"aa:aa:aa:aa:aa:aa"})),
            "MAC address",
        ),
        (
            GroupRule("a", networks=(net("10.0.0.0/8"),)),
            GroupRule("b", networks=(net("10.1.0.0/16"),)),
            "networks",
        ),
        (
            GroupRule("a", hostnames=("ks2-*",)),
            GroupRule("b", hostnames=("ks2-lab-*",)),
            "name patterns",
        ),
        (GroupRule("a", hostnames=("pc1",)), GroupRule("b", hostnames=("pc1",)), "name patterns"),
    ],
)
def test_overlaps_the_configuration_shows(a: GroupRule, b: GroupRule, shared: str) -> None:
    found = overlaps(a, b)
    assert found is not None and found.startswith(shared)


def test_disjoint_groups_do_not_overlap() -> None:
    assert overlaps(KS2, STAFF) is None
    v4 = GroupRule("a", networks=(net("10.0.0.0/8"),))
    v6 = GroupRule("b", networks=(net("fd00::/8"),))
    assert overlaps(v4, v6) is None


@pytest.mark.parametrize(
    ("p", "q", "meet"),
    [
        ("ks2-*", "*-laptop", True),  # ks2-laptop
        ("ks2-*", "ks2-lab-?", True),
        ("*-ipad", "*-laptop", False),
        ("ks2-*", "staff-*", False),
        ("ks2-*-laptop", "ks2-*-tablet", False),
        ("pc?", "pc1", True),
        ("pc?", "pc12", False),
        ("pc1", "pc2", False),
        ("lab[12]-*", "lab3-*", True),  # erring towards yes: only the fixed parts are compared
    ],
)
def test_name_patterns_that_may_meet(p: str, q: str, meet: bool) -> None:
    assert patterns_may_meet(p, q) is meet
    assert patterns_may_meet(q, p) is meet


@given(
    st.text(alphabet="ab-*?", min_size=1, max_size=6),
    st.text(alphabet="ab-*?", min_size=1, max_size=6),
    st.text(alphabet="ab-", min_size=1, max_size=8),
)
def test_patterns_one_name_matches_are_always_said_to_meet(p: str, q: str, name: str) -> None:
    if fnmatch.fnmatchcase(name, p) and fnmatch.fnmatchcase(name, q):
        assert patterns_may_meet(p, q)
