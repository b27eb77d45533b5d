"""Policy documents: what a document may hold, how a school's extends the district's, and the
agent's own checks applied to the result."""

from __future__ import annotations

import pytest

from schoolgate.server.policy_documents import (
    PolicyDocumentError,
    check_policy,
    merge,
    read_document,
)

DISTRICT = """
[site]
timezone = "Europe/London"

[policy]
actions = { social = "block", games = "block" }

[[schedules]]
name = "lessons"
days = ["mon-fri"]
times = ["08:45-15:15"]

[[groups]]
name = "staff"
age_tier = "staff"
addresses = ["10.0.9.0/24"]
actions = { social = "alert" }
schedules = { lessons = { streaming = "block" } }

[[groups]]
name = "pupils"
age_tier = "secondary"
default = true
deny = ["district-banned.example"]
"""

SCHOOL = """
[policy]
actions = { games = "allow" }
youtube = "strict"

[[schedules]]
name = "lessons"
days = ["mon-fri"]
times = ["09:00-15:30"]

[[groups]]
name = "staff"
addresses = ["10.1.9.0/24"]
schedules = { lessons = { social = "block" } }

[[groups]]
name = "pupils"
deny = ["school-banned.example"]
allow = ["maths.example"]

[[groups]]
name = "ict-suite"
age_tier = "secondary"
addresses = ["10.1.5.0/24"]
order = 1
"""


def test_a_school_document_extends_the_district_one() -> None:
    merged = merge(read_document(DISTRICT, "district"), read_document(SCHOOL, "school"))
    assert merged["site"] == {"timezone": "Europe/London"}
    assert merged["policy"] == {
        "actions": {"social": "block", "games": "allow"},
        "youtube": "strict",
    }
    assert [s["times"] for s in merged["schedules"]] == [["09:00-15:30"]]  # replaced by name
    staff, pupils, ict = merged["groups"]
    assert staff["addresses"] == ["10.0.9.0/24", "10.1.9.0/24"]  # added to
    assert staff["actions"] == {"social": "alert"}  # kept
    assert staff["schedules"] == {"lessons": {"streaming": "block", "social": "block"}}
    assert pupils["deny"] == ["district-banned.example", "school-banned.example"]
    assert pupils["allow"] == ["maths.example"] and pupils["default"] is True
    assert ict["name"] == "ict-suite"
    check_policy(merged, "merged")


def test_merging_leaves_both_documents_as_they_were() -> None:
    district, school = read_document(DISTRICT, "d"), read_document(SCHOOL, "s")
    before = (repr(district), repr(school))
    merge(district, school)
    assert (repr(district), repr(school)) == before


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("[server]\nlisten = ['0.0.0.0:53']\n", "[server] cannot come from the collector"),
        ("[[lists]]\nname = 'x'\n", "[lists] cannot come from the collector"),
        ("groups = 'staff'\n", "groups must be tables"),
        ("[[groups]]\nage_tier = 'staff'\n", "groups[0].name: a name is needed"),
        ("policy = 3\n", "policy must be a table"),
        ("[policy\n", "not valid TOML"),
    ],
)
def test_a_document_holds_only_the_policy_sections(text: str, said: str) -> None:
    with pytest.raises(PolicyDocumentError, match=said.replace("[", r"\[")):
        read_document(text, "the district policy")


def test_the_agents_checks_refuse_a_locked_category_with_its_line() -> None:
    text = '[policy]\n# a comment\nactions = { child-abuse = "allow" }\n'
    doc = read_document(text, "the district policy")
    with pytest.raises(PolicyDocumentError) as caught:
        check_policy(doc, "the district policy", text, doc)
    assert str(caught.value).startswith("the district policy:3: policy.actions.child-abuse")
    assert "locked category" in str(caught.value)


def test_two_default_groups_are_refused() -> None:
    school = read_document("[[groups]]\nname = 'guests'\ndefault = true\n", "school")
    with pytest.raises(PolicyDocumentError, match="default"):
        check_policy(merge(read_document(DISTRICT, "district"), school), "merged")


def test_an_oversized_document_is_refused() -> None:
    with pytest.raises(PolicyDocumentError, match="over 256 KiB"):
        read_document("# " + "x" * 300_000, "the district policy")
