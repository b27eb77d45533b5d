"""Agent to collector over real HTTP on loopback: every event arrives once, whatever happens
to the collector in between."""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import pytest
from sqlalchemy import select

from schoolgate.agent.activity.events import Event as AgentEvent
from schoolgate.agent.activity.events import EventKind
from schoolgate.agent.activity.store import ActivityStore, EventFilter
from schoolgate.agent.collector_http import backoff, retry_after
from schoolgate.event_batch import data_limit
from schoolgate.server.db import migrate
from schoolgate.server.db.engine import open_engine
from schoolgate.server.db.schema import Event
from schoolgate.server.repository import SqlRepository
from schoolgate.server.settings import parse
from tests.conftest import AgentFactory
from tests.support.agent import AgentThread
from tests.support.collector import CollectorThread
from tests.support.waiting import wait_for


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[CollectorThread]:
    engine = open_engine(f"sqlite:///{tmp_path / 'collector' / 'collector.sqlite'}")
    migrate.init(engine)
    settings = parse(f'[server]\nstate_dir = "{tmp_path / "collector"}"\n', "(test)", tmp_path)
    served = CollectorThread(SqlRepository(engine), settings).start()
    yield served
    served.stop()
    engine.dispose()


def shipping(collector: CollectorThread, tmp_path: Path, site: str = "north-primary") -> str:
    _ref, token = collector.repo.add_site(site)
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n", encoding="utf-8")
    token_file.chmod(0o600)
    return f"""
[activity]
write_interval = 0.05

[identity]
neighbours = false

[collector]
url = "{collector.url}"
site = "{site}"
token_file = "{token_file}"
"""


def ask(agent: AgentThread, name: str) -> None:
    query = dns.message.make_query(name, "A")
    dns.query.udp(query, "127.0.0.1", port=agent.port, timeout=3)


def arrived(collector: CollectorThread) -> list[tuple[int, str]]:
    """The queries that reached the collector (the agent's status events go there too)."""
    t = Event.__table__
    query = select(t.c.seq, t.c.name).where(t.c.kind == "dns").order_by(t.c.seq)
    with collector.repo.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(query)]


def seq_of(agent: AgentThread, **where: object) -> int:
    """The sequence number of the one event of the agent's log that matches."""
    assert agent.agent is not None
    store = ActivityStore(agent.agent.config.state_dir)
    try:
        (found,) = store.search(EventFilter(**where))  # type: ignore[arg-type]
    finally:
        store.close()
    return found.seq


def test_every_query_reaches_the_collector_once(
    make_agent: AgentFactory, collector: CollectorThread, tmp_path: Path
) -> None:
    agent = make_agent(shipping(collector, tmp_path))
    names = [f"n{i}.example.org" for i in range(200)]
    for name in names:
        ask(agent, name)
    assert wait_for(lambda: len(arrived(collector)) >= 200, timeout=30)
    got = arrived(collector)
    assert sorted(name for _, name in got) == sorted(names)
    assert len({seq for seq, _ in got}) == len(got) == 200


def test_a_collector_that_stops_and_comes_back_loses_and_doubles_nothing(
    make_agent: AgentFactory, collector: CollectorThread, tmp_path: Path
) -> None:
    agent = make_agent(shipping(collector, tmp_path))
    sent: list[str] = []
    for i in range(100):
        sent.append(f"before{i}.example.org")
        ask(agent, sent[-1])
    assert wait_for(lambda: len(arrived(collector)) >= 50, timeout=30)
    collector.stop()  # mid-stream: some of the first hundred may still be on their way
    for i in range(150):
        sent.append(f"during{i}.example.org")
        ask(agent, sent[-1])
    uploader = agent.agent.uploader if agent.agent is not None else None
    assert uploader is not None
    # The uploader meets the closed port before the collector comes back.
    assert wait_for(lambda: uploader.counters.batches["retried"] >= 1, timeout=30)
    collector.start()  # the same port
    for i in range(50):
        sent.append(f"after{i}.example.org")
        ask(agent, sent[-1])
    assert wait_for(lambda: len(arrived(collector)) >= len(sent), timeout=60)
    time.sleep(0.5)
    got = arrived(collector)
    assert sorted(name for _, name in got) == sorted(sent)  # all of them, each once


def test_server_errors_and_retry_after_are_waited_out(
    make_agent: AgentFactory, collector: CollectorThread, tmp_path: Path
) -> None:
    collector.faults.extend(
        [(503, {}), (500, {}), (429, {"Retry-After": "1"}), (408, {}), (502, {})]
    )
    agent = make_agent(shipping(collector, tmp_path))
    names = [f"n{i}.example.org" for i in range(30)]
    for name in names:
        ask(agent, name)
    assert wait_for(lambda: len(arrived(collector)) >= 30, timeout=60)
    assert collector.faulted == 5
    assert sorted(name for _, name in arrived(collector)) == sorted(names)


def test_a_batch_refused_as_malformed_is_quarantined_and_the_rest_go_on(
    make_agent: AgentFactory, collector: CollectorThread, tmp_path: Path
) -> None:
    agent = make_agent(shipping(collector, tmp_path))
    ask(agent, "first.example.org")
    assert wait_for(lambda: len(arrived(collector)) == 1, timeout=30)
    collector.faults.append((400, {}))
    ask(agent, "refused.example.org")
    assert wait_for(lambda: collector.faulted == 1, timeout=30)
    ask(agent, "later.example.org")
    assert wait_for(lambda: len(arrived(collector)) == 2, timeout=30)
    assert [name for _, name in arrived(collector)] == ["first.example.org", "later.example.org"]
    assert agent.agent is not None and agent.agent.uploader is not None
    spool = agent.agent.uploader.spool
    ((_, first, last, count, reason),) = spool.quarantined()
    refused = seq_of(agent, name="refused.example.org")
    assert (first, last, count) == (refused, refused, 1) and reason.startswith("HTTP 400")


def test_one_bad_event_is_quarantined_alone_and_those_around_it_arrive(
    make_agent: AgentFactory, collector: CollectorThread, tmp_path: Path
) -> None:
    agent = make_agent(shipping(collector, tmp_path))
    ask(agent, "first.example.org")
    assert wait_for(lambda: len(arrived(collector)) == 1, timeout=30)
    assert agent.agent is not None and agent.agent.uploader is not None
    before = [f"before{i}.example.org" for i in range(10)]
    after = [f"after{i}.example.org" for i in range(10)]
    for name in before:
        ask(agent, name)
    # An event the collector refuses (its data is over the batch format's limit for its
    # kind): one a faulty agent might make, in the middle of the others.
    oversized = {"x": "y" * (data_limit(EventKind.STATUS) + 1)}
    agent.agent.activity.buffer.append(
        AgentEvent(kind=EventKind.STATUS, time=time.time(), action="test", data=oversized)
    )
    for name in after:
        ask(agent, name)
    spool = agent.agent.uploader.spool
    assert wait_for(lambda: len(arrived(collector)) == 21 and spool.quarantined(), timeout=60)
    assert sorted(name for _, name in arrived(collector)) == sorted(
        ["first.example.org", *before, *after]
    )
    ((_, first, last, count, reason),) = spool.quarantined()
    bad = seq_of(agent, kinds=(EventKind.STATUS,), action="test")
    assert first == last == bad and count == 1 and reason.startswith("HTTP 400")


def test_a_wrong_url_or_proxy_answer_is_retried_not_quarantined(
    make_agent: AgentFactory, collector: CollectorThread, tmp_path: Path
) -> None:
    collector.faults.extend([(404, {}), (407, {}), (301, {"Location": "https://elsewhere/"})])
    agent = make_agent(shipping(collector, tmp_path))
    ask(agent, "kept.example.org")
    assert wait_for(lambda: len(arrived(collector)) == 1, timeout=60)
    assert collector.faulted == 3
    assert agent.agent is not None and agent.agent.uploader is not None
    assert agent.agent.uploader.spool.quarantined() == []


def test_a_slow_collector_times_out_and_the_batch_is_not_doubled(
    make_agent: AgentFactory, collector: CollectorThread, tmp_path: Path
) -> None:
    # Slower than the agent's timeout: the first attempts are abandoned by the agent but
    # recorded by the collector; the retries find them there.
    collector.delay = 2.5
    agent = make_agent(
        shipping(collector, tmp_path).replace("[collector]", "[collector]\ntimeout = 1")
    )
    names = [f"slow{i}.example.org" for i in range(20)]
    for name in names:
        ask(agent, name)
    assert agent.agent is not None and agent.agent.uploader is not None
    uploader = agent.agent.uploader
    assert wait_for(lambda: uploader.counters.batches["retried"] >= 1, timeout=30)
    collector.delay = 0
    assert wait_for(lambda: uploader.counters.events_sent >= 20, timeout=60)
    assert sorted(name for _, name in arrived(collector)) == sorted(names)


def test_a_full_spool_gives_up_on_the_oldest_and_says_so(
    make_agent: AgentFactory, collector: CollectorThread, tmp_path: Path
) -> None:
    # A week without a collector: the agent logged more than its spool may hold.
    offline = make_agent("[activity]\nwrite_interval = 0.05\n[identity]\nneighbours = false\n")
    names = [f"n{i}.example.org" for i in range(1_100)]
    for name in names:
        ask(offline, name)
    assert offline.agent is not None
    assert wait_for(
        lambda: offline.agent is not None and offline.agent.activity.writer.written >= 1_100,
        timeout=30,
    )
    offline.stop()
    config = shipping(collector, tmp_path).replace(
        "[collector]", "[collector]\nspool_max_events = 1000"
    )
    agent = make_agent(config)
    # The newest 1,000 are kept, and a status event says how many were given up on: the 100
    # over the limit, and as many more as the agent's own first status events (a heartbeat, a
    # policy test) if they were written before the spool was first looked at.
    t = Event.__table__

    def reports() -> list[dict[str, int]]:
        query = select(t.c.data).where(t.c.kind == "status", t.c.action == "spool-dropped")
        with collector.repo.engine.connect() as conn:
            return [json.loads(data) for (data,) in conn.execute(query)]

    assert wait_for(lambda: len(reports()) == 1, timeout=60)
    (report,) = reports()
    gone = report["too_many"]
    assert report["events"] == gone and 100 <= gone <= 102
    assert wait_for(lambda: len(arrived(collector)) >= len(names) - gone, timeout=60)
    got = arrived(collector)
    assert sorted(name for _, name in got) == sorted(names[gone:])
    assert agent.agent is not None and agent.agent.uploader is not None
    assert agent.agent.uploader.counters.events_dropped == gone


def test_retry_after_and_backoff() -> None:
    assert retry_after("7", 0) == 7
    assert retry_after("999999", 0) == 3600  # capped
    now = 1_792_567_670.0
    assert retry_after(email.utils.formatdate(now + 10, usegmt=True), now) == 10
    assert retry_after("soon", 0) is None and retry_after(None, 0) is None
    for failures in range(1, 30):
        assert 0.5 <= backoff(failures) <= 300
