"""The central policy store: revisions, the checks across district and schools, exceptions,
unblock requests and their decisions; on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time

import pytest

from schoolgate.server.policies import PolicyError, PolicyStore
from schoolgate.server.repository import SqlRepository

DISTRICT = """
[policy]
actions = { social = "block" }

[[groups]]
name = "staff"
age_tier = "staff"
addresses = ["10.0.9.0/24"]

[[groups]]
name = "pupils"
default = true
"""


def request(request_id: str, name: str = "maths.example") -> dict[str, object]:
    return {
        "id": request_id,
        "created": time.time() - 60,
        "client_ip": "10.0.2.15",
        "mac": "",
        "hostname": "ks2-lab-04",
        "group": "pupils",
        "name": name,
        "category": "games",
        "reason": "for the homework",
        "language": "en",
    }


def test_revisions_are_kept_and_the_newest_is_in_force(repo: SqlRepository) -> None:
    store = PolicyStore(repo.engine)
    assert store.current(None) is None
    first = store.save(None, DISTRICT, "ana", "the district's first policy")
    second = store.save(None, DISTRICT.replace("block", "alert"), "ben", "social to alert")
    assert store.current(None) == second
    assert [r.id for r in store.history(None)] == [second.id, first.id]
    assert [(r.author, r.reason) for r in store.history(None)] == [
        ("ben", "social to alert"),
        ("ana", "the district's first policy"),
    ]


def test_a_change_needs_a_reason(repo: SqlRepository) -> None:
    with pytest.raises(PolicyError, match="a reason is needed"):
        PolicyStore(repo.engine).save(None, DISTRICT, "ana", "  ")


def test_a_school_policy_is_checked_on_top_of_the_district_one(repo: SqlRepository) -> None:
    store = PolicyStore(repo.engine)
    site, _token = repo.add_site("north")
    store.save(None, DISTRICT, "ana", "first")
    with pytest.raises(PolicyError, match="default"):
        store.save(site, "[[groups]]\nname = 'guests'\ndefault = true\n", "tom", "guests")
    store.save(site, "[[groups]]\nname = 'pupils'\nactions = { games = 'block' }\n", "tom", "g")
    effective = store.effective(site.id)
    assert effective.sections["policy"] == {"actions": {"social": "block"}}
    assert effective.sections["groups"][1]["actions"] == {"games": "block"}
    assert effective.district_revision is not None and effective.site_revision is not None


def test_a_district_change_that_breaks_a_school_is_refused_naming_it(
    repo: SqlRepository,
) -> None:
    store = PolicyStore(repo.engine)
    site, _token = repo.add_site("north")
    first = store.save(None, DISTRICT, "ana", "first")
    store.save(site, "[[groups]]\nname = 'ict'\naddresses = ['10.0.5.0/24']\n", "tom", "ict")
    # Staff everywhere in 10.0.0.0/16 would overlap the school's ICT suite, with no order
    # to say which group wins: refused, and the district's policy stays as it was.
    wider = DISTRICT.replace("10.0.9.0/24", "10.0.0.0/16")
    with pytest.raises(PolicyError, match="with the policy of north on top"):
        store.save(None, wider, "ana", "all staff")
    assert store.current(None) == first


def test_exceptions_are_granted_revoked_and_end(repo: SqlRepository) -> None:
    store = PolicyStore(repo.engine)
    site, _token = repo.add_site("north")
    other, _token = repo.add_site("south")
    granted = store.grant(site, "Khan.Example.", "pupils", "allow", 3600, "lesson", "ana")
    assert granted.name == "khan.example"
    store.grant(other, "elsewhere.example", "pupils", "allow", 3600, "lesson", "ana")
    assert [x.id for x in store.live_exceptions(site.id)] == [granted.id]
    assert store.live_exceptions(site.id, now=granted.expires + 1) == []
    assert not store.revoke(other, granted.id, "ana")  # not that school's
    assert store.revoke(site, granted.id, "ana")
    assert not store.revoke(site, granted.id, "ana")
    assert store.live_exceptions(site.id) == []


@pytest.mark.parametrize(
    ("name", "group", "action", "seconds", "said"),
    [
        ("not a name!", "pupils", "allow", 60, "not a domain name"),
        ("ok.example", "pup ils", "allow", 60, "group"),
        ("ok.example", "pupils", "watch", 60, "allow or block"),
        ("ok.example", "pupils", "allow", 0, "between one second and a year"),
    ],
)
def test_an_unusable_exception_is_refused(
    repo: SqlRepository, name: str, group: str, action: str, seconds: int, said: str
) -> None:
    site, _token = repo.add_site("north")
    with pytest.raises(PolicyError, match=said):
        PolicyStore(repo.engine).grant(site, name, group, action, seconds, "why", "ana")


def test_what_the_agent_gets_and_its_etag(repo: SqlRepository) -> None:
    store = PolicyStore(repo.engine)
    site, _token = repo.add_site("north")
    store.save(None, DISTRICT, "ana", "first")
    body, etag = store.for_agent(site)
    assert store.for_agent(site) == (body, etag)  # stable while nothing changes
    doc = json.loads(body)
    assert doc["site"] == "north" and doc["exceptions"] == []
    assert [g["name"] for g in doc["policy"]["groups"]] == ["staff", "pupils"]
    granted = store.grant(site, "khan.example", "pupils", "allow", 3600, "lesson", "ana")
    body2, etag2 = store.for_agent(site)
    assert etag2 != etag
    assert json.loads(body2)["exceptions"] == [granted.for_agent()]


def test_requests_are_kept_once_and_decided_once(repo: SqlRepository) -> None:
    store = PolicyStore(repo.engine)
    site, _token = repo.add_site("north")
    assert store.receive_requests(site, [request("a" * 32), request("b" * 32)]) == 2
    assert store.receive_requests(site, [request("a" * 32), request("c" * 32)]) == 1
    decision = store.decide(site, "a" * 32, True, "sam", "homework site", 7200)
    assert decision.status == "approved" and decision.exception is not None
    assert decision.exception.name == "maths.example" and decision.exception.group == "pupils"
    assert decision.exception.request_id == "a" * 32
    with pytest.raises(PolicyError, match="approved already by sam"):
        store.decide(site, "a" * 32, False, "kim", "no")
    refused = store.decide(site, "b" * 32, False, "kim", "not for school")
    assert refused.status == "refused" and refused.exception is None
    with pytest.raises(PolicyError, match="no unblock request"):
        store.decide(site, "z" * 32, False, "kim", "no")
    assert [x.request_id for x in store.live_exceptions(site.id)] == ["a" * 32]


def test_a_request_approved_for_its_device_names_the_mac_else_the_address(
    repo: SqlRepository,
) -> None:
    store = PolicyStore(repo.engine)
    site, _token = repo.add_site("north")
    with_mac = {**request("a" * 32), "mac": "AA:BB:CC:00:00:04"}
    garbled_mac = {**request("b" * 32), "mac": "<img src=x>"}
    store.receive_requests(site, [with_mac, garbled_mac, request("c" * 32)])
    devices = [
        store.decide(site, r * 32, True, "sam", "homework", 3600, for_device=True).exception
        for r in "abc"
    ]
    assert [(x.device, x.group) for x in devices if x is not None] == [
        ("aa:bb:cc:00:00:04", "pupils"),
        ("10.0.2.15", "pupils"),  # a MAC the agent garbled: the address it came from
        ("10.0.2.15", "pupils"),
    ]
    sent = json.loads(store.for_agent(site)[0])["exceptions"]
    assert [x["device"] for x in sent] == ["aa:bb:cc:00:00:04", "10.0.2.15", "10.0.2.15"]
    assert [x.device for x in store.live_exceptions(site.id)] == [x["device"] for x in sent]


def test_a_central_exception_for_a_device_is_checked(repo: SqlRepository) -> None:
    store = PolicyStore(repo.engine)
    site, _token = repo.add_site("north")
    with pytest.raises(PolicyError, match=r"device: .* neither a MAC address nor an IP"):
        store.grant(site, "a.example", "pupils", "allow", 60, "r", "ana", device="laptop-7")
    granted = store.grant(site, "a.example", "pupils", "allow", 60, "r", "ana", device="::1")
    assert granted.device == "::1" and granted.for_agent()["device"] == "::1"
    group_wide = store.grant(site, "b.example", "pupils", "allow", 60, "r", "ana")
    assert group_wide.for_agent()["device"] == ""
