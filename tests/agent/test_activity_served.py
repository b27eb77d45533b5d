"""The activity log over real DNS: every query a client makes becomes an event in the store,
alerts arrive at once, and ``schoolgate-agent log`` finds them."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
from pathlib import Path

import dns.message
import dns.query
import dns.rcode

from schoolgate.agent.activity.events import EventKind, Severity, StoredEvent
from schoolgate.agent.activity.store import ActivityStore, EventFilter
from tests.conftest import AgentFactory
from tests.support.agent import AgentThread
from tests.support.process import run_agent_command
from tests.support.waiting import wait_for


def ask(agent: AgentThread, name: str, source: str, qtype: str = "A") -> int:
    query = dns.message.make_query(name, qtype)
    reply = dns.query.udp(query, "127.0.0.1", port=agent.port, timeout=3, source=source)
    return reply.rcode()


def policy(tmp_path: Path, activity: str = "write_interval = 0.05") -> str:
    (tmp_path / "harm.txt").write_text("harm.example\n", encoding="utf-8")
    (tmp_path / "games.txt").write_text("game.example\n", encoding="utf-8")
    return f"""
[[groups]]
name = "ks2"
age_tier = "ks2"
addresses = ["127.0.0.2"]

[[groups]]
name = "staff"
age_tier = "staff"
addresses = ["127.0.0.3"]

[[groups]]
name = "guests"
age_tier = "guest"
default = true

[identity]
neighbours = false

[activity]
{activity}

[alerts]
repeated_blocks = 3
repeated_minutes = 1

[[lists]]
name = "harm"
category = "self-harm"
path = "{tmp_path / "harm.txt"}"

[[lists]]
name = "games"
category = "games"
path = "{tmp_path / "games.txt"}"
"""


def events(agent: AgentThread, **where: object) -> list[StoredEvent]:
    assert agent.agent is not None
    store = ActivityStore(agent.agent.config.state_dir)
    try:
        return store.search(EventFilter(**where), newest_first=False)  # type: ignore[arg-type]
    finally:
        store.close()


def test_every_query_becomes_an_event_with_what_the_filter_did(
    make_agent: AgentFactory, tmp_path: Path
) -> None:
    agent = make_agent(policy(tmp_path))
    assert ask(agent, "www.example.org", "127.0.0.2") == dns.rcode.NOERROR  # upstream
    assert ask(agent, "WWW.Example.org", "127.0.0.2") == dns.rcode.NOERROR  # cache
    assert ask(agent, "game.example", "127.0.0.2") == dns.rcode.NOERROR  # blocked: 0.0.0.0
    assert ask(agent, "game.example", "127.0.0.3", "AAAA") == dns.rcode.NOERROR  # staff
    wait_for(lambda: len(events(agent, kinds=(EventKind.DNS,))) == 4)

    first, hit, blocked, staff = (s.event for s in events(agent, kinds=(EventKind.DNS,)))
    assert (first.client_ip, first.group, first.name, first.qtype) == (
        "127.0.0.2",
        "ks2",
        "www.example.org",
        "A",
    )
    assert (first.action, first.rcode, first.cache_hit) == ("allow", "NOERROR", False)
    assert first.latency_ms is not None and first.latency_ms >= 0
    assert (hit.name, hit.cache_hit) == ("www.example.org", True)
    assert hit.time >= first.time
    assert (blocked.action, blocked.categories, blocked.rule) == ("block", ("games",), "category")
    # Staff may play: let through, and still in its category for the reports.
    assert (staff.group, staff.qtype, staff.action, staff.categories) == (
        "staff",
        "AAAA",
        "allow",
        ("games",),
    )
    assert staff.rule == "category allowed"

    state = agent.agent.config.state_dir if agent.agent else Path()
    mode = stat.S_IMODE(os.stat(state / "activity").st_mode)
    assert mode == 0o700  # the log names pupils' devices


def test_alerts_are_written_at_once_and_not_repeated_per_lookup(
    make_agent: AgentFactory, tmp_path: Path
) -> None:
    # Ordinary events wait a minute here: the alert must not wait with them.
    agent = make_agent(policy(tmp_path, "write_interval = 60"))
    for qtype in ("A", "AAAA", "HTTPS"):  # one visit: a browser asks three times
        ask(agent, "harm.example", "127.0.0.2", qtype)
    ask(agent, "www.harm.example", "127.0.0.3")  # staff: let through, and alerted
    wait_for(lambda: len(events(agent, kinds=(EventKind.ALERT,))) == 3, timeout=10)

    alerts = [s.event for s in events(agent, kinds=(EventKind.ALERT,))]
    pupil = [a for a in alerts if a.group == "ks2"]
    assert [a.name for a in pupil] == ["harm.example", "harm.example"]  # A, then repeated
    category, repeated = pupil
    assert category.severity is Severity.HIGH  # the safeguarding tier
    assert (category.action, category.categories) == ("block+alert", ("self-harm",))
    assert category.data == {"reason": "category"}
    assert repeated.data == {"reason": "repeated-attempts", "blocked": 3, "minutes": 1.0}
    assert repeated.severity is Severity.HIGH
    (staff,) = [a for a in alerts if a.group == "staff"]
    assert (staff.name, staff.action, staff.client_ip) == ("www.harm.example", "alert", "127.0.0.3")

    assert agent.agent is not None
    raised = agent.agent.activity.alerts
    assert raised.suppressed == 2  # AAAA and HTTPS of the same visit


def test_blocked_only_keeps_blocked_and_alerting_queries(
    make_agent: AgentFactory, tmp_path: Path
) -> None:
    agent = make_agent(policy(tmp_path, 'write_interval = 0.05\nqueries = "blocked"'))
    ask(agent, "www.example.org", "127.0.0.2")
    ask(agent, "game.example", "127.0.0.2")
    ask(agent, "harm.example", "127.0.0.3")  # staff: allowed, but alerting
    wait_for(lambda: len(events(agent)) == 3)
    kept = [(s.event.kind, s.event.name) for s in events(agent)]
    assert (EventKind.DNS, "game.example") in kept
    assert (EventKind.DNS, "harm.example") in kept and (EventKind.ALERT, "harm.example") in kept
    assert agent.agent is not None and agent.agent.activity.maker.skipped == 1


def test_pseudonymised_clients_are_found_by_their_address(
    make_agent: AgentFactory, tmp_path: Path
) -> None:
    agent = make_agent(policy(tmp_path, "write_interval = 0.05\npseudonymise = true"))
    ask(agent, "game.example", "127.0.0.2")
    ask(agent, "www.example.org", "127.0.0.3")
    wait_for(lambda: len(events(agent)) == 2)
    stored = [s.event for s in events(agent)]
    assert all(e.client_ip.startswith("p-") and len(e.client_ip) == 18 for e in stored)
    assert stored[0].client_ip != stored[1].client_ip
    assert agent.agent is not None
    key = agent.agent.config.state_dir / "activity" / "pseudonym.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600

    config = agent.agent.config.config_file
    assert config is not None
    found = run_agent_command("log", "--config", str(config), "--client", "127.0.0.2")
    assert found.returncode == 0, found.stderr
    assert "game.example" in found.stdout and "www.example.org" not in found.stdout
    assert "127.0.0.2" not in found.stdout  # shown as its pseudonym


def test_the_log_command_searches_and_prints_table_csv_and_json(
    make_agent: AgentFactory, tmp_path: Path
) -> None:
    agent = make_agent(policy(tmp_path))
    ask(agent, "www.example.org", "127.0.0.2")
    ask(agent, "game.example", "127.0.0.2")
    ask(agent, "=cmd.example", "127.0.0.3")  # a name a spreadsheet would run as a formula
    ask(agent, "sub.game.example", "127.0.0.3")
    wait_for(lambda: len(events(agent)) == 4)
    assert agent.agent is not None and agent.agent.config.config_file is not None
    config = str(agent.agent.config.config_file)

    table = run_agent_command("log", "--config", config)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert len(lines) == 4
    assert "ks2" in lines[1] and "block" in lines[1] and "game.example" in lines[1]
    assert "games" in lines[1]

    by_name = run_agent_command(
        "log", "--config", config, "--name", "game.example", "--format", "json"
    )
    found = [json.loads(line) for line in by_name.stdout.splitlines()]
    assert [f["name"] for f in found] == ["game.example", "sub.game.example"]
    assert found[0]["time"].endswith("+00:00") and found[0]["seq"] < found[1]["seq"]
    assert {f["group"] for f in found} == {"ks2", "staff"}

    blocked = run_agent_command(
        "log", "--config", config, "--action", "block", "--group", "ks2", "--format", "csv"
    )
    rows = list(csv.DictReader(io.StringIO(blocked.stdout)))
    assert [(r["name"], r["categories"], r["cache_hit"]) for r in rows] == [
        ("game.example", "games", "false")
    ]

    everything = run_agent_command("log", "--config", config, "--format", "csv", "--limit", "0")
    names = [r["name"] for r in csv.DictReader(io.StringIO(everything.stdout))]
    assert "'=cmd.example" in names  # never a live formula

    client = run_agent_command(
        "log", "--config", config, "--client", "127.0.0.3", "--format", "json"
    )
    assert len(client.stdout.splitlines()) == 2

    since = run_agent_command("log", "--config", config, "--since", "1h", "--until", "2000-01-01")
    assert since.returncode == 0 and since.stdout == "" and "no events match" in since.stderr

    bad = run_agent_command("log", "--config", config, "--since", "yesterday")
    assert bad.returncode == 1 and "expected 'YYYY-MM-DD'" in bad.stderr


def test_the_log_command_says_when_nothing_was_recorded(tmp_path: Path) -> None:
    found = run_agent_command("log", "--state-dir", str(tmp_path / "none"))
    assert found.returncode == 0
    assert "no activity recorded yet" in found.stderr
    assert not (tmp_path / "none").exists()  # reading never creates the store


def test_lookups_of_bypass_names_raise_bypass_events_whatever_the_action(
    make_agent: AgentFactory, tmp_path: Path
) -> None:
    (tmp_path / "vpn.txt").write_text("vpn.example\n", encoding="utf-8")
    extra = f'\n[[lists]]\nname = "vpn"\ncategory = "proxy-vpn"\npath = "{tmp_path / "vpn.txt"}"\n'
    agent = make_agent(policy(tmp_path) + extra)
    ask(agent, "www.vpn.example", "127.0.0.2")  # a pupil: blocked
    ask(agent, "www.vpn.example", "127.0.0.2", "AAAA")  # the same attempt: one event
    ask(agent, "vpn.example", "127.0.0.3")  # staff: let through with an alert
    ask(agent, "game.example", "127.0.0.2")  # blocked, but no way round anything
    wait_for(lambda: len(events(agent, kinds=(EventKind.BYPASS,))) == 2)
    found = [s.event for s in events(agent, kinds=(EventKind.BYPASS,))]
    assert [(e.group, e.name, e.action, e.categories) for e in found] == [
        ("ks2", "www.vpn.example", "block", ("proxy-vpn",)),
        ("staff", "vpn.example", "alert", ("proxy-vpn",)),
    ]
    assert all(e.client_ip and e.data == {"via": "lookup"} for e in found)
