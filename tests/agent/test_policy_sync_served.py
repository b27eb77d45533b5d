"""The policy from the collector, end to end over real HTTP and real DNS: the district's groups
take effect, a central exception reaches the agent, the agent runs on its copy when the
collector is gone, unblock requests go up once, and a policy that does not fit is refused."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import pytest
from sqlalchemy import insert, select

from schoolgate.agent.blockpage.store import UnblockStore
from schoolgate.agent.policy.central import CentralFiles
from schoolgate.server.db import migrate
from schoolgate.server.db.engine import open_engine
from schoolgate.server.db.schema import PolicyRevision, UnblockRequest
from schoolgate.server.policies import PolicyStore
from schoolgate.server.repository import SiteRef, SqlRepository
from schoolgate.server.settings import parse
from tests.conftest import AgentFactory
from tests.support.agent import AgentThread
from tests.support.collector import CollectorThread
from tests.support.waiting import wait_for

PUPIL, STAFF = "127.0.0.2", "127.0.0.3"
BLOCKED, ALLOWED = ["0.0.0.0"], ["192.0.2.1"]

DISTRICT = f"""
[[groups]]
name = "staff"
age_tier = "staff"
addresses = ["{STAFF}"]
actions = {{ games = "allow" }}

[[groups]]
name = "pupils"
default = true
actions = {{ games = "block" }}
"""


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[CollectorThread]:
    engine = open_engine(f"sqlite:///{tmp_path / 'collector' / 'collector.sqlite'}")
    migrate.init(engine)
    settings = parse(f'[server]\nstate_dir = "{tmp_path / "collector"}"\n', "(test)", tmp_path)
    served = CollectorThread(SqlRepository(engine), settings).start()
    yield served
    served.stop()
    engine.dispose()


def agent_config(collector: CollectorThread, tmp_path: Path, site: SiteRef, token: str) -> str:
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n", encoding="utf-8")
    (tmp_path / "games.txt").write_text("game.example\n", encoding="utf-8")
    # The file's own policy lets games through: the collector's is what blocks them.
    return f"""
[policy]
actions = {{ games = "allow" }}

[identity]
neighbours = false

[blockpage]
enabled = true
listen = ["127.0.0.1:0"]

[collector]
url = "{collector.url}"
site = "{site.name}"
token_file = "{token_file}"

[[lists]]
name = "games"
category = "games"
path = "{tmp_path / "games.txt"}"
"""


def answer(agent: AgentThread, name: str, source: str) -> list[str]:
    query = dns.message.make_query(name, "A")
    reply = dns.query.udp(query, "127.0.0.1", port=agent.port, timeout=3, source=source)
    return [rr.to_text() for rrset in reply.answer for rr in rrset]


def sync(agent: AgentThread) -> None:
    """What the agent does every policy_interval, now."""
    assert agent.agent is not None and agent.agent.policy_sync is not None
    agent.call(agent.agent.policy_sync.sync_once())


def central_revision(agent: AgentThread) -> int | None:
    assert agent.agent is not None
    central = agent.agent.config.central
    return None if central is None else central.district_revision


def test_the_collectors_policy_and_exceptions_reach_the_agent(
    collector: CollectorThread, make_agent: AgentFactory, tmp_path: Path
) -> None:
    repo = collector.repo
    site, token = repo.add_site("north")
    store = PolicyStore(repo.engine)
    revision = store.save(None, DISTRICT, "ana", "the district's groups")
    agent = make_agent(agent_config(collector, tmp_path, site, token))

    # Fetched at start, written to disk, and taken by the reload that follows.
    assert wait_for(lambda: central_revision(agent) == revision.id, timeout=15)
    assert answer(agent, "game.example", PUPIL) == BLOCKED
    assert answer(agent, "game.example", STAFF) == ALLOWED

    granted = store.grant(site, "game.example", "pupils", "allow", 3600, "club", "ana")
    sync(agent)
    assert wait_for(lambda: answer(agent, "game.example", PUPIL) == ALLOWED, timeout=5)
    assert agent.agent is not None
    assert granted.id in [x.id for x in agent.agent.exceptions]

    assert store.revoke(site, granted.id, "ana")
    sync(agent)
    assert wait_for(lambda: answer(agent, "game.example", PUPIL) == BLOCKED, timeout=5)
    counts = agent.agent.policy_sync.counters.policy if agent.agent.policy_sync else {}
    assert counts["updated"] >= 3 and counts["failed"] == 0


def test_the_agent_runs_on_its_copy_when_the_collector_is_gone(
    collector: CollectorThread, tmp_path: Path
) -> None:
    repo = collector.repo
    site, token = repo.add_site("north")
    revision = PolicyStore(repo.engine).save(None, DISTRICT, "ana", "groups")
    (tmp_path / "state").mkdir()
    config = tmp_path / "agent.toml"
    config.write_text(
        agent_config(collector, tmp_path, site, token)
        + f'\n[server]\nlisten = ["127.0.0.1:0"]\nstate_dir = "{tmp_path / "state"}"\n'
        + '[sources]\ndefaults = false\n[upstream]\nservers = ["udp://127.0.0.1:9"]\n',
        encoding="utf-8",
    )
    first = AgentThread.from_file(config).start()
    try:
        assert wait_for(lambda: central_revision(first) == revision.id, timeout=15)
    finally:
        first.stop()
    collector.stop()
    again = AgentThread.from_file(config).start()
    try:
        # Straight from the copy on disk, before the collector could have been asked.
        assert central_revision(again) == revision.id
        assert again.agent is not None
        assert [g.name for g in again.agent.config.groups] == ["staff", "pupils"]
        sync(again)
        assert again.agent.policy_sync is not None
        assert again.agent.policy_sync.counters.policy["failed"] >= 1
        assert central_revision(again) == revision.id
    finally:
        again.stop()


def test_unblock_requests_go_up_once_and_an_approval_comes_back(
    collector: CollectorThread, make_agent: AgentFactory, tmp_path: Path
) -> None:
    repo = collector.repo
    site, token = repo.add_site("north")
    store = PolicyStore(repo.engine)
    store.save(None, DISTRICT, "ana", "the district's groups")
    agent = make_agent(agent_config(collector, tmp_path, site, token))
    assert wait_for(lambda: central_revision(agent) is not None, timeout=15)
    asked = UnblockStore(tmp_path / "state").add(
        client_ip=PUPIL, name="game.example", group="pupils", language="en", reason="club"
    )
    sync(agent)
    sync(agent)  # nothing left to send the second time
    with repo.engine.connect() as conn:
        rows = conn.execute(select(UnblockRequest.__table__)).all()
    assert [(r.id, r.status, r.name) for r in rows] == [(asked.id, "pending", "game.example")]
    assert agent.agent is not None and agent.agent.policy_sync is not None
    assert agent.agent.policy_sync.counters.requests_shipped == 1

    store.decide(site, asked.id, True, "sam", "chess club on Friday", 3600)
    sync(agent)
    assert wait_for(lambda: answer(agent, "game.example", PUPIL) == ALLOWED, timeout=5)


def test_a_policy_that_does_not_fit_is_refused_and_the_last_one_kept(
    collector: CollectorThread, make_agent: AgentFactory, tmp_path: Path
) -> None:
    repo = collector.repo
    site, token = repo.add_site("north")
    good = PolicyStore(repo.engine).save(None, DISTRICT, "ana", "groups")
    agent = make_agent(agent_config(collector, tmp_path, site, token))
    assert wait_for(lambda: central_revision(agent) == good.id, timeout=15)
    # Written past the collector's own checks (an older collector, a hand edit of its
    # database): the agent checks again and will not allow a locked category.
    with repo.engine.begin() as conn:
        conn.execute(
            insert(PolicyRevision).values(
                site_id=None,
                text='[policy]\nactions = { child-abuse = "allow" }\n',
                created=time.time(),
                author="intruder",
                reason="x",
            )
        )
    sync(agent)
    assert agent.agent is not None and agent.agent.policy_sync is not None
    assert agent.agent.policy_sync.counters.policy["refused"] == 1
    # Nothing was written for the reload to pick up: the copy on disk is the good one.
    kept = CentralFiles(tmp_path / "state").read_policy()
    assert kept is not None and kept.district_revision == good.id
    assert central_revision(agent) == good.id
    assert answer(agent, "game.example", PUPIL) == BLOCKED
