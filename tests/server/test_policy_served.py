"""``GET /api/v1/policy`` and ``POST /api/v1/requests`` over real HTTP, as agents use them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from schoolgate.server.policies import PolicyStore
from schoolgate.server.repository import SiteRef, SqlRepository
from schoolgate.server.settings import CollectorSettings
from tests.support.collector import CollectorThread

DISTRICT = """
[[groups]]
name = "staff"
age_tier = "staff"
addresses = ["10.0.9.0/24"]

[[groups]]
name = "pupils"
default = true
"""


@pytest.fixture
def collector(repo: SqlRepository, settings: CollectorSettings) -> Iterator[CollectorThread]:
    served = CollectorThread(repo, settings).start()
    yield served
    served.stop()


def unblock(request_id: str, **fields: object) -> dict[str, object]:
    return {
        "id": request_id,
        "created": time.time(),
        "client_ip": "10.0.2.15",
        "group": "pupils",
        "name": "maths.example",
        "language": "en",
        "reason": "homework",
        **fields,
    }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_policy_comes_with_an_etag_and_304_while_unchanged(
    collector: CollectorThread, repo: SqlRepository
) -> None:
    site, token = repo.add_site("north")
    store = PolicyStore(repo.engine)
    store.save(None, DISTRICT, "ana", "first")
    first = httpx.get(f"{collector.url}/api/v1/policy", headers=bearer(token))
    assert first.status_code == 200
    etag = first.headers["etag"]
    assert etag.startswith('"') and first.headers["cache-control"] == "no-cache"
    doc = first.json()
    assert doc["site"] == "north" and doc["district_revision"] == 1
    assert [g["name"] for g in doc["policy"]["groups"]] == ["staff", "pupils"]

    again = httpx.get(
        f"{collector.url}/api/v1/policy", headers={**bearer(token), "If-None-Match": etag}
    )
    assert again.status_code == 304 and again.content == b""

    store.grant(site, "khan.example", "pupils", "allow", 600, "lesson", "ana")
    changed = httpx.get(
        f"{collector.url}/api/v1/policy", headers={**bearer(token), "If-None-Match": etag}
    )
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert [x["name"] for x in changed.json()["exceptions"]] == ["khan.example"]


def test_each_site_gets_its_own_policy_only(
    collector: CollectorThread, repo: SqlRepository
) -> None:
    north, north_token = repo.add_site("north")
    south, south_token = repo.add_site("south")
    store = PolicyStore(repo.engine)
    store.grant(north, "north-only.example", "pupils", "allow", 600, "x", "ana")
    for token, name in ((north_token, "north"), (south_token, "south")):
        doc = httpx.get(f"{collector.url}/api/v1/policy", headers=bearer(token)).json()
        assert doc["site"] == name
        assert [x["name"] for x in doc["exceptions"]] == (
            ["north-only.example"] if name == "north" else []
        )
    assert isinstance(south, SiteRef)


@pytest.mark.parametrize("path", ["/api/v1/policy", "/api/v1/requests"])
def test_a_sites_token_is_needed(collector: CollectorThread, path: str) -> None:
    for headers in ({}, bearer("sgs_not-a-token"), {"Authorization": "Basic eDp5"}):
        answer = httpx.request(
            "GET" if path.endswith("policy") else "POST",
            f"{collector.url}{path}",
            headers=headers,
            json={"requests": []},
        )
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"] == 'Bearer realm="api"'


def test_requests_are_received_once(collector: CollectorThread, repo: SqlRepository) -> None:
    _site, token = repo.add_site("north")
    url = f"{collector.url}/api/v1/requests"
    body = {"requests": [unblock("a" * 32), unblock("b" * 32, mac="aa:bb:cc:dd:ee:ff")]}
    first = httpx.post(url, json=body, headers=bearer(token))
    assert first.status_code == 200 and first.json() == {"received": 2, "new": 2}
    again = httpx.post(url, json=body, headers=bearer(token))
    assert again.json() == {"received": 2, "new": 0}


@pytest.mark.parametrize(
    ("body", "status", "said"),
    [
        (b"not json", 400, "not a list of unblock requests"),
        (json.dumps({"requests": [{"id": "x"}]}).encode(), 400, "missing required field"),
        (
            json.dumps({"requests": [unblock("x", name="a" * 300)]}).encode(),
            400,
            "requests[0].name",
        ),
        (json.dumps({"requests": [unblock("x", reason="a\x00b")]}).encode(), 400, "NUL"),
        (json.dumps({"requests": [unblock("")]}).encode(), 400, "an id and a name"),
        (json.dumps({"requests": [unblock("x", created=-5)]}).encode(), 400, "not a time"),
        (
            json.dumps({"requests": [unblock(str(i)) for i in range(1001)]}).encode(),
            413,
            "over 1,000 requests",
        ),
    ],
)
def test_bad_requests_are_refused_with_a_reason(
    collector: CollectorThread, repo: SqlRepository, body: bytes, status: int, said: str
) -> None:
    _site, token = repo.add_site("north")
    answer = httpx.post(
        f"{collector.url}/api/v1/requests",
        content=body,
        headers={**bearer(token), "Content-Type": "application/json"},
    )
    assert answer.status_code == status
    assert said in answer.json()["error"]
