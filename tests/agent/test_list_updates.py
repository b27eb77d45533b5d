"""List updates in a running agent: the scheduled job, ``lists update`` beside it, status."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import dns.message
import dns.query

from schoolgate.agent.filter.store import WorkerResult
from tests.conftest import AgentFactory
from tests.support.agent import AgentThread
from tests.support.lists_server import ListServer, tarball
from tests.support.process import run_agent_command
from tests.support.waiting import wait_for


def blocked(agent: AgentThread, name: str) -> bool:
    reply = dns.query.udp(
        dns.message.make_query(name, "A"), "127.0.0.1", port=agent.port, timeout=3
    )
    return [rr.to_text() for rrset in reply.answer for rr in rrset] == ["0.0.0.0"]


def url_lists(server: ListServer, updates: str = "enabled = false") -> str:
    adult, games = server.url("/adult.tar.gz"), server.url("/games.txt")
    return (
        f'[[lists]]\nname = "remote-adult"\ncategory = "adult"\nurl = "{adult}"\n'
        'format = "ut1"\nmember = "adult/domains"\n'
        f'[[lists]]\nname = "remote-games"\ncategory = "games"\nurl = "{games}"\n'
        f"[updates]\n{updates}\njitter = 0\n"
    )


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_agent_command(*args, "--config", str(config))


def test_the_scheduled_update_fetches_on_first_start(
    make_agent: AgentFactory, list_server: ListServer
) -> None:
    list_server.serve("/adult.tar.gz", tarball({"adult/domains": "porn.example\n"}))
    list_server.serve("/games.txt", "game.example\n")
    agent = make_agent(url_lists(list_server, "enabled = true"))
    # Nothing downloaded yet: DNS answers at once, and the first update follows in seconds.
    assert not blocked(agent, "porn.example")
    assert wait_for(lambda: blocked(agent, "www.porn.example"))
    assert blocked(agent, "game.example")  # games are blocked for secondary pupils
    # A source that fails is tried again well before the next daily run.
    assert agent.agent is not None
    jobs = agent.agent.jobs
    assert jobs.scheduler is not None
    assert wait_for(lambda: jobs.last_update is not None)
    list_server.serve("/games.txt", status=500)
    agent.call(jobs.run_update())
    retry = jobs.scheduler.get_job("lists-retry")
    daily = jobs.scheduler.get_job("lists-update")
    assert retry is not None and daily is not None
    assert retry.next_run_time < daily.next_run_time


def test_an_update_swaps_the_new_build_in(
    make_agent: AgentFactory, list_server: ListServer
) -> None:
    list_server.serve("/adult.tar.gz", tarball({"adult/domains": "one.example\n"}))
    list_server.serve("/games.txt", "game.example\n")
    agent = make_agent(url_lists(list_server))
    assert agent.agent is not None
    result: WorkerResult = agent.call(agent.agent.jobs.run_update())
    assert result.sources["remote-adult"]["status"] == "updated"
    assert blocked(agent, "one.example")
    # An update that finds nothing new leaves the pipeline (and its memos) as it is.
    pipeline = agent.agent.pipeline
    agent.call(agent.agent.jobs.run_update())
    assert agent.agent.pipeline is pipeline
    list_server.serve("/adult.tar.gz", tarball({"adult/domains": "one.example\ntwo.example\n"}))
    agent.call(agent.agent.jobs.run_update())
    assert agent.agent.pipeline is not pipeline
    assert blocked(agent, "two.example")


def test_a_failed_update_keeps_every_list_in_service(
    make_agent: AgentFactory, list_server: ListServer
) -> None:
    list_server.serve("/adult.tar.gz", tarball({"adult/domains": "one.example\n"}))
    list_server.serve("/games.txt", "game.example\n")
    agent = make_agent(url_lists(list_server))
    assert agent.agent is not None
    agent.call(agent.agent.jobs.run_update())
    list_server.serve("/adult.tar.gz", tarball({"adult/domains": "x"})[:100])  # truncated
    list_server.serve("/games.txt", status=503)
    result: WorkerResult = agent.call(agent.agent.jobs.run_update())
    assert {n: s["status"] for n, s in result.sources.items()} == {
        "remote-adult": "failed",
        "remote-games": "failed",
    }
    assert blocked(agent, "one.example") and blocked(agent, "game.example")
    # With updates switched off, nothing is retried behind the operator's back.
    scheduler = agent.agent.jobs.scheduler
    assert scheduler is not None and scheduler.get_job("lists-retry") is None


def test_a_restart_without_internet_serves_the_last_good_copies(
    make_agent: AgentFactory, list_server: ListServer
) -> None:
    list_server.serve("/adult.tar.gz", tarball({"adult/domains": "kept.example\n"}))
    list_server.serve("/games.txt", "game.example\n")
    first = make_agent(url_lists(list_server))
    assert first.agent is not None
    first.call(first.agent.jobs.run_update())
    first.stop()
    list_server.stop()
    second = make_agent(url_lists(list_server))
    assert blocked(second, "kept.example")


def test_lists_update_beside_a_running_agent(
    make_agent: AgentFactory, list_server: ListServer, tmp_path: Path
) -> None:
    list_server.serve("/adult.tar.gz", tarball({"adult/domains": "late.example\n"}))
    list_server.serve("/games.txt", status=500)
    agent = make_agent(url_lists(list_server))
    config = tmp_path / "agent.toml"
    assert not blocked(agent, "late.example")
    result = cli(config, "lists", "update")
    assert result.returncode == 3, result.stdout + result.stderr  # built, one source failed
    assert "remote-adult: updated, 1 entries in service" in result.stdout
    assert "remote-games: failed, 0 entries in service (HTTP 500" in result.stdout
    # The running agent notices the new build by itself.
    assert wait_for(lambda: blocked(agent, "late.example"))

    status = cli(config, "lists", "status")
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    adult = next(line for line in lines if line.startswith("remote-adult"))
    assert " adult " in adult and " 1 " in adult and adult.endswith("ok")
    games = next(line for line in lines if line.startswith("remote-games"))
    assert games.split()[3] == "never" and "HTTP 500" in games
    as_json = json.loads(cli(config, "lists", "status", "--format", "json").stdout)
    by_name = {s["name"]: s for s in as_json["sources"]}
    assert by_name["remote-adult"]["entries"] == 1 and by_name["remote-adult"]["in_build"]
    assert by_name["remote-games"]["failures"] == 1
    categories = {c["id"]: c for c in as_json["categories"]}
    # One name downloaded, three from the test's local adult list.
    assert categories["adult"]["names"] == 4 and categories["adult"]["action"] == "block"
    assert as_json["build"]["current"] is True


def test_lists_update_refuses_a_shrink_unless_forced(
    make_agent: AgentFactory, list_server: ListServer, tmp_path: Path
) -> None:
    many = "".join(f"n{i}.example\n" for i in range(10))
    list_server.serve("/adult.tar.gz", tarball({"adult/domains": many}))
    list_server.serve("/games.txt", "game.example\n")
    make_agent(url_lists(list_server))
    config = tmp_path / "agent.toml"
    assert cli(config, "lists", "update").returncode == 0
    list_server.serve("/adult.tar.gz", tarball({"adult/domains": "n1.example\n"}))
    refused = cli(config, "lists", "update")
    assert refused.returncode == 3
    assert "remote-adult: refused, 10 entries in service (shrank from 10 to 1" in refused.stdout
    forced = cli(config, "lists", "update", "--force")
    assert forced.returncode == 0
    assert "remote-adult: updated, 1 entries in service" in forced.stdout
