"""Schedules over real DNS: a group's answers change when a schedule starts and ends."""

from __future__ import annotations

from pathlib import Path

import dns.message
import dns.query

from schoolgate.agent.app import Agent
from tests.conftest import AgentFactory
from tests.support.agent import AgentThread


def answer(agent: AgentThread, name: str, source: str) -> list[str]:
    query = dns.message.make_query(name, "A")
    reply = dns.query.udp(query, "127.0.0.1", port=agent.port, timeout=3, source=source)
    return [rr.to_text() for rrset in reply.answer for rr in rrset]


def test_a_schedule_switches_a_groups_actions(make_agent: AgentFactory, tmp_path: Path) -> None:
    (tmp_path / "social.txt").write_text("social.example\n", encoding="utf-8")
    agent = make_agent(
        """
[site]
timezone = "Europe/London"

[[schedules]]
name = "lessons"
days = ["mon-fri"]
times = ["08:45-15:15"]

[[groups]]
name = "staff"
age_tier = "staff"
addresses = ["127.0.0.3"]
schedules = { lessons = { social = "block" } }

[[groups]]
name = "guests"
age_tier = "guest"
default = true

[identity]
neighbours = false
""",
        lists=f'[[lists]]\nname = "s"\ncategory = "social"\npath = "{tmp_path / "social.txt"}"\n',
    )
    assert agent.agent is not None
    core = agent.agent
    # The clock is injected: the per-second job is stopped, and the schedules on are set as it
    # would set them.
    assert core.jobs.scheduler is not None
    assert core.jobs.scheduler.get_job("policy") is not None
    core.jobs.scheduler.remove_job("policy")
    agent.call(switch(core, frozenset()))
    assert answer(agent, "social.example", "127.0.0.3") == ["192.0.2.1"]
    assert agent.call(switch(core, frozenset({"lessons"})))
    assert answer(agent, "www.social.example", "127.0.0.3") == ["0.0.0.0"]
    assert answer(agent, "social.example", "127.0.0.4") == ["192.0.2.1"]  # guests: no schedule
    assert agent.call(switch(core, frozenset()))
    assert answer(agent, "www.social.example", "127.0.0.3") == ["192.0.2.1"]


async def switch(core: Agent, active: frozenset[str]) -> bool:
    return core.apply_schedules(active)
