"""The policy routes for signed-in users over real HTTP: who may change what, for which
school, with a reason, audited; and what they change reaches the agents' endpoint."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from schoolgate.server.repository import SqlRepository
from schoolgate.server.settings import CollectorSettings
from tests.server.test_admin_api_served import World, make_world

DISTRICT = """
[[groups]]
name = "staff"
age_tier = "staff"
addresses = ["10.0.9.0/24"]

[[groups]]
name = "ks2"
default = true
"""


@pytest.fixture
def world(repo: SqlRepository, settings: CollectorSettings) -> Iterator[World]:
    made = make_world(repo, settings)
    yield made
    made.collector.stop()


def send(world: World, who: str, method: str, path: str, body: Any = None) -> httpx.Response:
    return httpx.request(
        method,
        world.collector.url + path,
        json=body,
        headers={"Authorization": f"Bearer {world.tokens[who]}"},
        timeout=30,
    )


def agent_policy(world: World, site: str) -> dict[str, Any]:
    answer = httpx.get(
        world.collector.url + "/api/v1/policy",
        headers={"Authorization": f"Bearer {world.site_tokens[site]}"},
    )
    assert answer.status_code == 200
    result: dict[str, Any] = answer.json()
    return result


def test_only_the_district_admin_sets_the_district_policy(world: World) -> None:
    body = {"text": DISTRICT, "reason": "the district's groups"}
    for who in ("tech-north", "lead-north", "viewer-north"):
        assert send(world, who, "PUT", "/api/v1/policies/district", body).status_code == 403
    made = send(world, "head", "PUT", "/api/v1/policies/district", body)
    assert made.status_code == 201
    assert made.json()["revision"]["author"] == "head"
    shown = send(world, "tech-north", "GET", "/api/v1/policies/district").json()
    assert shown["revision"]["reason"] == "the district's groups"
    groups = agent_policy(world, "north-primary")["policy"]["groups"]
    assert [g["name"] for g in groups] == ["staff", "ks2"]
    assert [e["action"] for e in world.audit()] == ["policy.change"]


def test_a_technician_changes_only_their_own_schools_policy(world: World) -> None:
    send(world, "head", "PUT", "/api/v1/policies/district", {"text": DISTRICT, "reason": "base"})
    own = {"text": "[[groups]]\nname = 'ks2'\ndeny = ['tiktok.com']\n", "reason": "parents asked"}
    assert (
        send(world, "tech-north", "PUT", "/api/v1/policies/sites/north-primary", own).status_code
        == 201
    )
    other = send(world, "tech-north", "PUT", "/api/v1/policies/sites/south-academy", own)
    assert other.status_code == 403
    nowhere = send(world, "tech-north", "PUT", "/api/v1/policies/sites/no-such-school", own)
    assert nowhere.status_code == 403  # the same answer: names of schools cannot be probed
    north = agent_policy(world, "north-primary")["policy"]["groups"][1]
    assert north["deny"] == ["tiktok.com"]
    assert "deny" not in agent_policy(world, "south-academy")["policy"]["groups"][1]
    history = send(world, "tech-north", "GET", "/api/v1/policies/sites/north-primary/history")
    assert [r["reason"] for r in history.json()["revisions"]] == ["parents asked"]


def test_a_policy_that_would_not_run_is_a_422_with_the_reason(world: World) -> None:
    bad = {"text": '[policy]\nactions = { child-abuse = "allow" }\n', "reason": "x"}
    answer = send(world, "head", "PUT", "/api/v1/policies/district", bad)
    assert answer.status_code == 422 and "locked category" in answer.json()["error"]
    no_reason = send(world, "head", "PUT", "/api/v1/policies/district", {"text": "", "reason": ""})
    assert no_reason.status_code == 422 and "reason" in no_reason.json()["error"]
    malformed = send(world, "head", "PUT", "/api/v1/policies/district", {"text": 3})
    assert malformed.status_code == 400


def test_exceptions_are_granted_and_revoked_for_a_school(world: World) -> None:
    path = "/api/v1/sites/north-primary/exceptions"
    grant = {"name": "khanacademy.org", "group": "ks2", "duration": "2h", "reason": "lesson"}
    assert send(world, "viewer-north", "POST", path, grant).status_code == 403
    assert send(world, "lead-south", "POST", path, grant).status_code == 403
    made = send(world, "tech-north", "POST", path, grant)
    assert made.status_code == 201
    granted = made.json()["exception"]
    assert granted["by"] == "tech-north"
    assert [x["name"] for x in agent_policy(world, "north-primary")["exceptions"]] == [
        "khanacademy.org"
    ]
    assert agent_policy(world, "south-academy")["exceptions"] == []
    bad = send(world, "tech-north", "POST", path, {**grant, "duration": "forever"})
    assert bad.status_code == 400
    gone = send(world, "tech-north", "DELETE", f"{path}/{granted['id']}")
    assert gone.status_code == 204
    assert send(world, "tech-north", "DELETE", f"{path}/{granted['id']}").status_code == 404
    assert agent_policy(world, "north-primary")["exceptions"] == []
    assert [e["action"] for e in world.audit()] == [
        "exceptions.grant",
        "exceptions.revoke",
        "exceptions.revoke",
    ]


def test_a_safeguarding_lead_decides_requests_of_their_school(world: World) -> None:
    approve = {"approve": True, "duration": "1d", "note": "project on volcanoes"}
    path = "/api/v1/requests/north-primary/north-0/decision"
    assert send(world, "tech-north", "POST", path, approve).status_code == 403
    assert send(world, "lead-south", "POST", path, approve).status_code == 403
    decided = send(world, "lead-north", "POST", path, approve)
    assert decided.status_code == 200
    assert decided.json()["status"] == "approved"
    assert decided.json()["exception"]["group"] == "ks2"
    again = send(world, "lead-north", "POST", path, approve)
    assert again.status_code == 422 and "approved already" in again.json()["error"]
    refused = send(
        world,
        "lead-north",
        "POST",
        "/api/v1/requests/north-primary/north-1/decision",
        {"approve": False, "note": "not for school"},
    )
    assert refused.json() == {"request": "north-1", "status": "refused", "exception": None}
    listed = send(
        world,
        "lead-north",
        "GET",
        "/api/v1/requests",
    )
    statuses = {r["id"]: r["status"] for r in listed.json()["requests"]}
    assert statuses["north-0"] == "approved" and statuses["north-1"] == "refused"
    names = [x["name"] for x in agent_policy(world, "north-primary")["exceptions"]]
    assert names == ["north-games.example"]
    decisions = [e for e in world.audit() if e["action"] == "requests.decide"]
    assert [e["user_name"] for e in decisions] == ["lead-north", "lead-north", "lead-north"]
