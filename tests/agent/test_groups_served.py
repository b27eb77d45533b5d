"""Groups over real DNS: clients at different loopback addresses get their own group's answers."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import dns.message
import dns.query

from tests.conftest import AgentFactory
from tests.support.agent import AgentThread
from tests.support.process import run_agent_command
from tests.support.upstream import FakeUpstream
from tests.support.waiting import wait_for


def answer(agent: AgentThread, name: str, source: str) -> list[str]:
    query = dns.message.make_query(name, "A")
    reply = dns.query.udp(query, "127.0.0.1", port=agent.port, timeout=3, source=source)
    return [rr.to_text() for rrset in reply.answer for rr in rrset]


def allow(tmp_path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """``schoolgate-agent allow game.example --group ks2 OPTIONS`` on the test's agent."""
    config = ("--config", str(tmp_path / "agent.toml"))
    return run_agent_command("allow", "game.example", "--group", "ks2", *options, *config)


def groups(lease_file: Path) -> str:
    return f"""
[[groups]]
name = "ks2"
age_tier = "ks2"
addresses = ["127.0.0.2"]
hostnames = ["ks2-*"]

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
lease_files = ["{lease_file}"]

[[lists]]
name = "games"
category = "games"
path = "{lease_file.parent / "games.txt"}"
"""


def test_each_client_gets_its_groups_answer(make_agent: AgentFactory, tmp_path: Path) -> None:
    (tmp_path / "games.txt").write_text("game.example\n", encoding="utf-8")
    leases = tmp_path / "dnsmasq.leases"
    leases.write_text("0 aa:bb:cc:00:00:04 127.0.0.4 KS2-Lab-04 *\n", encoding="utf-8")
    agent = make_agent(groups(leases))
    assert answer(agent, "game.example", "127.0.0.2") == ["0.0.0.0"]  # ks2 by address
    assert answer(agent, "game.example", "127.0.0.3") == ["192.0.2.1"]  # staff may play
    assert answer(agent, "game.example", "127.0.0.4") == ["0.0.0.0"]  # ks2 by DHCP name
    assert answer(agent, "game.example", "127.0.0.5") == ["192.0.2.1"]  # guests: default
    assert answer(agent, "www.example.org", "127.0.0.2") == ["192.0.2.1"]

    # Another device gets the address: no group claims its name, so once the map is read
    # again it is a guest.
    leases.write_text("0 aa:bb:cc:00:00:09 127.0.0.4 visitor-phone *\n", encoding="utf-8")
    assert agent.agent is not None
    assert agent.call(agent.agent.refresh_devices())
    assert agent.call(agent.agent.refresh_devices()) is False  # nothing new the second time
    assert answer(agent, "game.example", "127.0.0.4") == ["192.0.2.1"]


def test_the_identity_job_reads_lease_files_by_itself(
    make_agent: AgentFactory, tmp_path: Path
) -> None:
    (tmp_path / "games.txt").write_text("game.example\n", encoding="utf-8")
    leases = tmp_path / "dnsmasq.leases"
    leases.write_text("", encoding="utf-8")
    agent = make_agent(
        groups(leases).replace("neighbours = false", "neighbours = false\nrefresh = 5")
    )
    assert answer(agent, "game.example", "127.0.0.6") == ["192.0.2.1"]
    leases.write_text("0 aa:bb:cc:00:00:06 127.0.0.6 ks2-tablet-6 *\n", encoding="utf-8")
    assert wait_for(lambda: answer(agent, "game.example", "127.0.0.6") == ["0.0.0.0"], 15)


def test_an_exception_granted_on_the_command_line_applies_and_expires(
    make_agent: AgentFactory, tmp_path: Path
) -> None:
    (tmp_path / "games.txt").write_text("game.example\n", encoding="utf-8")
    leases = tmp_path / "dnsmasq.leases"
    leases.write_text("", encoding="utf-8")
    agent = make_agent(groups(leases))
    assert answer(agent, "game.example", "127.0.0.2") == ["0.0.0.0"]
    granted = allow(tmp_path, "--for", "3s", "--reason", "club")
    assert granted.returncode == 0, granted.stderr
    assert "allowed for group ks2" in granted.stdout

    def now_allowed() -> bool:
        return answer(agent, "www.game.example", "127.0.0.2") == ["192.0.2.1"]

    assert wait_for(now_allowed, 5)
    assert wait_for(lambda: not now_allowed(), 10)  # expired by itself


def test_an_exception_for_one_device_follows_its_mac_and_no_one_else(
    make_agent: AgentFactory, tmp_path: Path
) -> None:
    (tmp_path / "games.txt").write_text("game.example\n", encoding="utf-8")
    leases = tmp_path / "dnsmasq.leases"
    leases.write_text("0 aa:bb:cc:00:00:04 127.0.0.4 ks2-lab-04 *\n", encoding="utf-8")
    agent = make_agent(groups(leases))
    assert agent.agent is not None
    granted = allow(tmp_path, "--device", "AA-BB-CC-00-00-04", "--for", "1h")
    assert granted.returncode == 0, granted.stderr
    assert "allowed for device aa:bb:cc:00:00:04 in group ks2" in granted.stdout
    assert wait_for(lambda: answer(agent, "game.example", "127.0.0.4") == ["192.0.2.1"], 5)
    assert answer(agent, "game.example", "127.0.0.2") == ["0.0.0.0"]  # the rest of ks2
    # A new lease moves the laptop to another address: the exception goes with it.
    leases.write_text("0 aa:bb:cc:00:00:04 127.0.0.6 ks2-lab-04 *\n", encoding="utf-8")
    assert agent.call(agent.agent.refresh_devices())
    assert answer(agent, "game.example", "127.0.0.6") == ["192.0.2.1"]
    listed = run_agent_command("exceptions", "list", "--config", str(tmp_path / "agent.toml"))
    assert "allow game.example for device aa:bb:cc:00:00:04 in group ks2" in listed.stdout
    refused = allow(tmp_path, "--device", "ks2-lab-04", "--for", "1h")
    assert refused.returncode == 2 and "neither a MAC address nor an IP address" in refused.stderr


def test_a_cached_cname_answer_is_checked_for_each_group(
    make_agent: AgentFactory, upstream: FakeUpstream, tmp_path: Path
) -> None:
    # Staff may reach the games the alias points at; the cached answer, shared by every group,
    # must not carry that to a ks2 pupil asking the same question a moment later.
    upstream.add("play.alias.org", "CNAME", "game.example.")
    (tmp_path / "games.txt").write_text("game.example\n", encoding="utf-8")
    leases = tmp_path / "dnsmasq.leases"
    leases.write_text("", encoding="utf-8")
    agent = make_agent(groups(leases))
    for _ in range(2):
        assert "game.example." in answer(agent, "play.alias.org", "127.0.0.3")
    assert answer(agent, "play.alias.org", "127.0.0.2") == ["0.0.0.0"]
    assert "game.example." in answer(agent, "play.alias.org", "127.0.0.3")


def test_a_damaged_exceptions_file_does_not_stop_the_agent(
    make_agent: AgentFactory, tmp_path: Path
) -> None:
    (tmp_path / "games.txt").write_text("game.example\n", encoding="utf-8")
    leases = tmp_path / "dnsmasq.leases"
    leases.write_text("", encoding="utf-8")
    stored = tmp_path / "state" / "policy" / "exceptions.json"
    stored.parent.mkdir(parents=True)
    good = {
        "id": "e1",
        "name": "GAME.example.",
        "group": "ks2",
        "action": "allow",
        "expires": 4e9,
        "reason": "",
        "created": 0,
        "by": "it",
    }
    hostile = [{**good, "name": 42}, {**good, "name": "bad name!"}, {**good, "expires": "x"}]
    stored.write_text(json.dumps({"exceptions": [*hostile, good]}), encoding="utf-8")
    agent = make_agent(groups(leases))
    assert answer(agent, "game.example", "127.0.0.2") == ["192.0.2.1"]  # the sound entry
