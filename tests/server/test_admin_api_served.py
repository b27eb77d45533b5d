"""The admin API over real HTTP on loopback, against SQLite and PostgreSQL: who may see what,
of which sites, and that every search, export and alert list is audited first."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert, text

from schoolgate.agent.activity.events import EventKind, Severity
from schoolgate.event_batch import CONTENT_TYPE, ShippedEvent, encode_batch
from schoolgate.server.auth import Role
from schoolgate.server.db.schema import UnblockRequest
from schoolgate.server.repository import SiteRef, SqlRepository
from schoolgate.server.settings import CollectorSettings
from schoolgate.server.users import CredentialKind, UserStore
from tests.support.collector import CollectorThread
from tests.support.users import PASSWORD, user_store

NOW = time.time()
ENDPOINTS = (
    "/api/v1/sites",
    "/api/v1/events",
    "/api/v1/events.csv",
    "/api/v1/stats/daily",
    "/api/v1/stats/top-blocked",
    "/api/v1/devices",
    "/api/v1/alerts",
    "/api/v1/requests",
)
SITE_FILTERED = tuple(e for e in ENDPOINTS if e != "/api/v1/sites")


def site_events(prefix: str, net: str) -> list[ShippedEvent]:
    """A site's morning: lookups allowed and blocked, a safeguarding alert, a new device."""
    made = [
        ShippedEvent(
            seq=seq,
            kind=EventKind.DNS,
            time=NOW - 3600 + seq,
            client_ip=f"{net}.{seq % 3}",
            mac=f"aa:bb:cc:00:00:0{seq % 3}",
            hostname=f"{prefix}-laptop-{seq % 3}",
            group="ks2",
            name=f"www.{prefix}-{seq % 4}.example",
            action="block" if seq % 2 else "allow",
            categories=("games",) if seq % 2 else (),
        )
        for seq in range(1, 21)
    ]
    made.append(
        ShippedEvent(
            seq=21,
            kind=EventKind.ALERT,
            time=NOW - 1800,
            client_ip=f"{net}.1",
            group="ks2",
            name=f"{prefix}-harm.example",
            action="alert",
            categories=("self-harm",),
            severity=Severity.HIGH,
        )
    )
    made.append(
        ShippedEvent(
            seq=22, kind=EventKind.DEVICE, time=NOW - 1700, client_ip=f"{net}.9", mac="de:ad:00"
        )
    )
    return made


@dataclass
class World:
    collector: CollectorThread
    repo: SqlRepository
    users: UserStore
    north: SiteRef
    south: SiteRef
    site_tokens: dict[str, str]
    tokens: dict[str, str]

    def get(self, who: str | None, path: str, **params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return httpx.get(self.collector.url + path, params=params, headers=headers, timeout=30)

    def audit(self) -> list[dict[str, Any]]:
        with self.repo.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT user_name, action, sites, detail FROM audit_log ORDER BY id")
            ).mappings()
            return [{**row, "detail": json.loads(row["detail"])} for row in rows]

    def sign_in_counts(self) -> dict[str, float]:
        """The sign-in counters as ``/metrics`` shows them: each outcome's, and "sign-out"."""
        page = httpx.get(self.collector.url + "/metrics", timeout=30)
        assert page.status_code == 200
        counts: dict[str, float] = {}
        for family in text_string_to_metric_families(page.text):
            for sample in family.samples:
                if sample.name == "schoolgate_collector_sign_ins_total":
                    counts[sample.labels["outcome"]] = sample.value
                elif sample.name == "schoolgate_collector_sign_outs_total":
                    counts["sign-out"] = sample.value
        return counts


def _requests(site: SiteRef, prefix: str) -> list[dict[str, Any]]:
    return [
        {
            "site_id": site.id,
            "id": f"{prefix}-{n}",
            "created": NOW - 100 * n,
            "received": NOW,
            "client_ip": "10.0.0.1",
            "mac": "",
            "hostname": "",
            "grp": "ks2",
            "name": f"{prefix}-games.example",
            "category": "games",
            "reason": "for a project",
            "language": "en",
            "status": "pending",
        }
        for n in range(3)
    ]


def make_world(repo: SqlRepository, settings: CollectorSettings) -> World:
    north, north_token = repo.add_site("north-primary")
    south, south_token = repo.add_site("south-academy")
    repo.ingest(north, "n1", site_events("north", "10.1.0"), keep_after=0)
    repo.ingest(south, "s1", site_events("south", "10.2.0"), keep_after=0)
    with repo.engine.begin() as conn:
        conn.execute(insert(UnblockRequest), _requests(north, "north") + _requests(south, "south"))
    users = user_store(repo.engine)
    for name, role, sites in (
        ("head", Role.ADMIN, []),
        ("lead-north", Role.SAFEGUARDING_LEAD, ["north-primary"]),
        ("tech-north", Role.TECHNICIAN, ["north-primary"]),
        ("viewer-north", Role.VIEWER, ["north-primary"]),
        ("lead-south", Role.SAFEGUARDING_LEAD, ["south-academy"]),
    ):
        users.add(name, PASSWORD, role, sites)
    tokens = {
        name: users.issue(name, CredentialKind.SESSION, "", lifetime=3600).token
        for name in ("head", "lead-north", "tech-north", "viewer-north", "lead-south")
    }
    return World(
        CollectorThread(repo, settings).start(),
        repo,
        users,
        north,
        south,
        {"north-primary": north_token, "south-academy": south_token},
        tokens,
    )


@pytest.fixture
def world(repo: SqlRepository, settings: CollectorSettings) -> Iterator[World]:
    made = make_world(repo, settings)
    yield made
    made.collector.stop()


# --- who is signed in ---------------------------------------------------------------------------


def test_without_a_users_token_every_endpoint_is_401(world: World) -> None:
    for authorization in (
        None,
        "Bearer",
        "Basic dXNlcjpwYXNz",
        "Bearer sgu_not-a-real-token",
        "Bearer sgs_x",
    ):
        headers = {"Authorization": authorization} if authorization else {}
        for path in ENDPOINTS:
            answer = httpx.get(world.collector.url + path, headers=headers)
            assert answer.status_code == 401, (authorization, path)
            assert answer.headers["www-authenticate"].startswith("Bearer")
            assert "error" in answer.json()


def test_a_sites_agent_token_is_not_a_users_token_and_the_other_way_round(world: World) -> None:
    agent = {"Authorization": f"Bearer {world.site_tokens['north-primary']}"}
    answer = httpx.get(world.collector.url + "/api/v1/events", headers=agent)
    assert answer.status_code == 401 and answer.json()["error"] == "not a user's token"
    before = world.repo.count_events()
    sent = httpx.post(
        world.collector.url + "/api/v1/events",
        content=encode_batch(site_events("north", "10.1.0")),
        headers={
            "Authorization": f"Bearer {world.tokens['head']}",
            "Idempotency-Key": "k",
            "Content-Type": CONTENT_TYPE,
            "Content-Encoding": "gzip",
        },
    )
    assert sent.status_code == 401
    assert world.repo.count_events() == before


def test_sign_in_use_and_sign_out(world: World, settings: CollectorSettings) -> None:
    url = world.collector.url + "/api/v1/sessions"
    wrong = httpx.post(url, json={"name": "lead-north", "password": "not the password"})
    assert wrong.status_code == 401
    unknown = httpx.post(url, json={"name": "nobody", "password": PASSWORD})
    assert unknown.status_code == 401 and unknown.json() == wrong.json()
    signed = httpx.post(url, json={"name": "Lead-North", "password": PASSWORD})
    assert signed.status_code == 201, signed.text
    body = signed.json()
    assert body["user"] == "lead-north" and body["role"] == "safeguarding-lead"
    assert body["token"].startswith("sgu_")
    assert abs(body["expires"] - (time.time() + settings.session_seconds)) < 60
    mine = {"Authorization": f"Bearer {body['token']}"}
    assert httpx.get(world.collector.url + "/api/v1/sites", headers=mine).status_code == 200
    assert httpx.delete(url, headers=mine).status_code == 204
    assert httpx.get(world.collector.url + "/api/v1/sites", headers=mine).status_code == 401
    assert httpx.delete(url).status_code == 401


def test_a_malformed_sign_in_is_refused(world: World) -> None:
    for body in (
        b"",
        b"not json",
        b"[]",
        b'{"name": "x"}',
        b'{"name": 1, "password": "x"}',
        b'{"name": "x", "password": ""}',
    ):
        answer = httpx.post(world.collector.url + "/api/v1/sessions", content=body)
        assert answer.status_code == 400, body
        assert "error" in answer.json()
    huge = httpx.post(world.collector.url + "/api/v1/sessions", content=b"{" * 9000)
    assert huge.status_code == 413


def test_an_expired_session_is_401(world: World) -> None:
    old = world.users.issue(
        "lead-north", CredentialKind.SESSION, "", lifetime=3600, now=time.time() - 7200
    )
    world.tokens["old"] = old.token
    answer = world.get("old", "/api/v1/sites")
    assert answer.status_code == 401 and "expired" in answer.json()["error"]


def test_a_disabled_user_is_refused_at_once(world: World) -> None:
    api = world.users.issue("tech-north", CredentialKind.API, "script", lifetime=None)
    world.tokens["api"] = api.token
    assert world.get("api", "/api/v1/events").status_code == 200
    assert world.get("tech-north", "/api/v1/events").status_code == 200
    world.users.disable("tech-north")  # as the command line does, from another process
    assert world.get("api", "/api/v1/events").status_code == 401
    assert world.get("tech-north", "/api/v1/events").status_code == 401
    signed = httpx.post(
        world.collector.url + "/api/v1/sessions", json={"name": "tech-north", "password": PASSWORD}
    )
    assert signed.status_code == 401


def test_failed_sign_ins_are_limited(world: World) -> None:
    url = world.collector.url + "/api/v1/sessions"
    for _ in range(10):
        answer = httpx.post(url, json={"name": "lead-north", "password": "guess guess guess"})
        assert answer.status_code == 401
    refused = httpx.post(url, json={"name": "lead-north", "password": PASSWORD})
    assert refused.status_code == 429
    assert 0 < int(refused.headers["retry-after"]) <= 900
    # Another user at the same address is not locked out by somebody else's guesses.
    other = httpx.post(url, json={"name": "lead-south", "password": PASSWORD})
    assert other.status_code == 201


def test_sign_ins_and_outs_are_counted_without_saying_who(world: World) -> None:
    url = world.collector.url + "/api/v1/sessions"
    # Every outcome is there from the start, at zero, and nothing else is.
    assert world.sign_in_counts() == {"success": 0, "rejected": 0, "throttled": 0, "sign-out": 0}
    assert httpx.post(url, json={"name": "lead-north", "password": "wrong"}).status_code == 401
    assert httpx.post(url, json={"name": "nobody", "password": PASSWORD}).status_code == 401
    assert httpx.post(url, content=b'{"name": "lead-north"}').status_code == 400
    signed = httpx.post(url, json={"name": "lead-north", "password": PASSWORD})
    assert signed.status_code == 201
    mine = {"Authorization": f"Bearer {signed.json()['token']}"}
    assert httpx.delete(url, headers=mine).status_code == 204
    assert httpx.delete(url, headers=mine).status_code == 401
    # The unknown name and the wrong password are one outcome, as they are one answer; a
    # malformed body and a sign-out with a dead token are not counted.
    assert world.sign_in_counts() == {"success": 1, "rejected": 2, "throttled": 0, "sign-out": 1}


# --- what each role may do ----------------------------------------------------------------------

ALLOWED = {
    "head": set(ENDPOINTS),
    "lead-north": set(ENDPOINTS),
    "tech-north": {
        "/api/v1/sites",
        "/api/v1/events",
        "/api/v1/stats/daily",
        "/api/v1/stats/top-blocked",
        "/api/v1/devices",
        "/api/v1/requests",
    },
    "viewer-north": {"/api/v1/sites", "/api/v1/stats/daily", "/api/v1/stats/top-blocked"},
}


@pytest.mark.parametrize("who", sorted(ALLOWED))
def test_each_role_reaches_what_its_permissions_allow(world: World, who: str) -> None:
    for path in ENDPOINTS:
        answer = world.get(who, path)
        expected = 200 if path in ALLOWED[who] else 403
        assert answer.status_code == expected, (who, path, answer.text)
        if expected == 403:
            assert "role does not allow" in answer.json()["error"]


def test_a_technician_searches_events_without_the_alerts(world: World) -> None:
    found = world.get("tech-north", "/api/v1/events", limit=1000).json()["events"]
    assert found and {e["kind"] for e in found} == {"dns", "device"}
    assert world.get("tech-north", "/api/v1/events", kind="alert").status_code == 403
    lead = world.get("lead-north", "/api/v1/events", limit=1000).json()["events"]
    assert {e["kind"] for e in lead} == {"dns", "device", "alert"}


# --- which sites ---------------------------------------------------------------------------------


def _everything(world: World, who: str, **params: Any) -> str:
    """Every endpoint's answer to ``who``, as one text to look for the other site in."""
    texts = []
    for path in ENDPOINTS:
        answer = world.get(who, path, **params) if path != "/api/v1/sites" else world.get(who, path)
        assert answer.status_code == 200, (path, answer.text)
        texts.append(answer.text)
    return "\n".join(texts)


def test_a_user_of_one_site_sees_nothing_of_another(world: World) -> None:
    seen = _everything(world, "lead-north")
    assert "north" in seen
    for trace in ("south", "10.2.0"):
        assert trace not in seen
    # Each list has the site's own rows.
    assert world.get("lead-north", "/api/v1/devices").json()["devices"]
    assert world.get("lead-north", "/api/v1/alerts").json()["alerts"]
    assert world.get("lead-north", "/api/v1/requests").json()["requests"]
    assert world.get("lead-north", "/api/v1/stats/daily").json()["days"]
    assert world.get("lead-north", "/api/v1/stats/top-blocked").json()["names"]
    assert [s["name"] for s in world.get("lead-north", "/api/v1/sites").json()["sites"]] == [
        "north-primary"
    ]
    south_seen = _everything(world, "lead-south")
    assert "south" in south_seen and "north" not in south_seen


@pytest.mark.parametrize("site", ["south-academy", "no-such-school"])
def test_naming_a_site_one_does_not_see_is_403(world: World, site: str) -> None:
    for path in SITE_FILTERED:
        answer = world.get("lead-north", path, site=site)
        assert answer.status_code == 403, path
        assert answer.json()["error"] == f"site {site!r} is not one of the sites you may see"
        assert "10.2.0" not in answer.text
    both = world.get("lead-north", "/api/v1/events", site=["north-primary", "south-academy"])
    assert both.status_code == 403


def test_an_admin_sees_every_site_and_can_narrow_to_one(world: World) -> None:
    seen = _everything(world, "head")
    assert "north" in seen and "south" in seen
    south = world.get("head", "/api/v1/events", site="south-academy", limit=1000).json()
    assert {e["site"] for e in south["events"]} == {"south-academy"}
    unknown = world.get("head", "/api/v1/events", site="no-such-school")
    assert unknown.status_code == 400 and unknown.json()["error"].startswith("site:")


# --- the audit log ------------------------------------------------------------------------------


def test_searches_exports_and_alert_lists_are_audited(world: World) -> None:
    assert world.get("lead-north", "/api/v1/events", client="10.1.0.1", limit=5).status_code == 200
    export = world.get("lead-north", "/api/v1/events.csv", name="north-1.example")
    assert export.status_code == 200
    assert world.get("lead-north", "/api/v1/alerts", severity="high").status_code == 200
    # Counts and lists without pupils' lookups are not audited.
    for path in ("/api/v1/stats/daily", "/api/v1/devices", "/api/v1/requests", "/api/v1/sites"):
        assert world.get("lead-north", path).status_code == 200
    search, exported, alerts = world.audit()
    north = f",{world.north.id},"
    assert search["user_name"] == "lead-north" and search["action"] == "events.search"
    assert search["sites"] == north
    assert search["detail"] == {"filters": {"client": "10.1.0.1", "limit": "5"}, "rows": 5}
    assert exported["action"] == "events.export" and exported["sites"] == north
    assert exported["detail"]["filters"] == {"name": "north-1.example"}
    rows = list(csv.reader(io.StringIO(export.text)))
    assert exported["detail"]["rows"] == len(rows) - 1 == 5
    assert exported["detail"]["capped"] is False
    assert alerts["action"] == "alerts.list"
    assert alerts["detail"] == {"filters": {"severity": "high"}, "rows": 1}
    world.get("head", "/api/v1/events")
    assert world.audit()[-1]["sites"] == f",{world.north.id},{world.south.id},"


def test_nothing_is_answered_unaudited(world: World) -> None:
    with world.repo.engine.begin() as conn:
        conn.execute(text("DROP TABLE audit_log"))
    for path in ("/api/v1/events", "/api/v1/events.csv", "/api/v1/alerts"):
        answer = world.get("lead-north", path)
        assert answer.status_code == 503, path
        assert answer.headers["retry-after"].isdigit()
        assert "north" not in answer.text
    assert world.get("lead-north", "/api/v1/stats/daily").status_code == 200


# --- the answers --------------------------------------------------------------------------------


def test_events_come_in_pages_through_the_cursor(world: World) -> None:
    seen: list[tuple[str, int]] = []
    params: dict[str, Any] = {"limit": 3, "site": "north-primary"}
    while True:
        page = world.get("lead-north", "/api/v1/events", **params).json()
        seen.extend((e["site"], e["seq"]) for e in page["events"])
        if page["next"] is None:
            break
        params["cursor"] = page["next"]
    assert sorted(seq for _, seq in seen) == list(range(1, 23))
    bad = world.get("lead-north", "/api/v1/events", cursor="bm90IGEgY3Vyc29y")
    assert bad.status_code == 400 and bad.json()["error"].startswith("cursor:")


BAD_PARAMETERS: list[tuple[str, dict[str, Any], str]] = [
    ("/api/v1/events", {"limit": "0"}, "limit"),
    ("/api/v1/events", {"limit": "1001"}, "limit"),
    ("/api/v1/events", {"limit": "ten"}, "limit"),
    ("/api/v1/events", {"since": "yesterday"}, "since"),
    ("/api/v1/events", {"since": "nan"}, "since"),
    ("/api/v1/events", {"since": "2026-11-20", "until": "2026-11-19"}, "until"),
    ("/api/v1/events", {"kind": "everything"}, "kind"),
    ("/api/v1/events", {"name": ".."}, "name"),
    ("/api/v1/events", {"categroy": "adult"}, "categroy"),
    ("/api/v1/events", {"hostname": "a\x00b"}, "hostname"),
    ("/api/v1/events", {"group": ["ks1", "ks2"]}, "group"),
    ("/api/v1/alerts", {"severity": "dire"}, "severity"),
    ("/api/v1/requests", {"status": "maybe"}, "status"),
    ("/api/v1/devices", {"name": "x.example"}, "name"),
    ("/api/v1/stats/top-blocked", {"limit": "-1"}, "limit"),
    ("/api/v1/sites", {"site": "north-primary"}, "site"),
]


def test_a_bad_parameter_is_a_400_naming_it(world: World) -> None:
    for path, params, named in BAD_PARAMETERS:
        answer = world.get("head", path, **params)
        assert answer.status_code == 400, (path, params, answer.text)
        assert answer.json()["error"].startswith(f"{named}:"), (path, params)


def test_times_may_be_iso_8601_or_epoch_seconds(world: World) -> None:
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - 1750))
    iso = world.get("head", "/api/v1/events", since=since, site="north-primary").json()
    epoch = world.get("head", "/api/v1/events", since=str(NOW - 1750), site="north-primary")
    assert [e["seq"] for e in iso["events"]] == [e["seq"] for e in epoch.json()["events"]] == [22]
    old = world.get("head", "/api/v1/events", since="2020-01-01", until="2020-01-02").json()
    assert old["events"] == []
    # Without since, the day before until.
    before = world.get("head", "/api/v1/events", until=str(NOW - 1750), site="north-primary")
    assert [e["seq"] for e in before.json()["events"]] == [21, *range(20, 0, -1)]


def test_names_from_the_network_are_only_data(world: World) -> None:
    hostile = "<script>alert(1)</script>"
    world.repo.ingest(
        world.north,
        "hostile",
        [
            ShippedEvent(
                seq=100, kind=EventKind.DNS, time=NOW - 10, hostname=hostile, client_ip="10.1.0.7"
            )
        ],
        keep_after=0,
    )
    answer = world.get("lead-north", "/api/v1/events", client="10.1.0.7")
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["cache-control"] == "no-store"
    assert answer.json()["events"][0]["hostname"] == hostile
    assert (
        world.get("lead-north", "/api/v1/devices", client="10.1.0.7").json()["devices"][0][
            "hostname"
        ]
        == hostile
    )


def test_the_export_guards_every_cell_against_formulas(world: World) -> None:
    world.repo.ingest(
        world.north,
        "formulas",
        [
            ShippedEvent(
                seq=200,
                kind=EventKind.DNS,
                time=NOW - 5,
                client_ip="10.1.0.8",
                hostname='=HYPERLINK("http://evil.example","x")',
                name="-cmd.example",
                group="+ks2",
                rule="@SUM(1)",
                rcode="\tNOERROR",
                data={"note": "\rx"},
            )
        ],
        keep_after=0,
    )
    export = world.get("lead-north", "/api/v1/events.csv", client="10.1.0.8")
    assert export.headers["content-type"] == "text/csv; charset=utf-8"
    assert export.headers["content-disposition"].startswith("attachment; filename=")
    header, row = list(csv.reader(io.StringIO(export.text)))
    cells = dict(zip(header, row, strict=True))
    assert cells["hostname"] == '\'=HYPERLINK("http://evil.example","x")'
    assert cells["name"] == "'-cmd.example"
    assert cells["group"] == "'+ks2"
    assert cells["rule"] == "'@SUM(1)"
    assert cells["rcode"] == "'\tNOERROR"
    assert cells["site"] == "north-primary" and cells["client_ip"] == "10.1.0.8"


def test_the_export_is_capped_and_says_so(repo: SqlRepository, settings: CollectorSettings) -> None:
    made = make_world(repo, dataclasses.replace(settings, max_export_rows=7))
    try:
        export = made.get("lead-north", "/api/v1/events.csv")
        rows = list(csv.reader(io.StringIO(export.text)))
        assert len(rows) == 1 + 7
        assert export.headers["x-schoolgate-rows"] == "7"
        assert export.headers["x-schoolgate-capped"] == "7"
        assert made.audit()[-1]["detail"]["rows"] == 7
        assert made.audit()[-1]["detail"]["capped"] is True
        # The newest first, as the search.
        search = made.get("lead-north", "/api/v1/events", limit=7).json()["events"]
        assert [int(r[2]) for r in rows[1:]] == [e["seq"] for e in search]
    finally:
        made.collector.stop()


def test_the_export_holds_more_than_a_page(world: World) -> None:
    many = [
        ShippedEvent(seq=1000 + n, kind=EventKind.DNS, time=NOW - 30, client_ip="10.1.0.50")
        for n in range(6_000)
    ]
    world.repo.ingest(world.north, "many", many, keep_after=0)
    export = world.get("lead-north", "/api/v1/events.csv", client="10.1.0.50")
    rows = list(csv.reader(io.StringIO(export.text)))[1:]
    assert len(rows) == len({r[2] for r in rows}) == 6_000
    assert export.headers["x-schoolgate-rows"] == "6000"
