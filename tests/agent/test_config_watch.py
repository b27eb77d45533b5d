"""A running agent reloads by itself when its configuration file or a list file changes."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import dns.message
import dns.query
import pytest

from tests.conftest import AgentFactory
from tests.support.agent import AgentThread
from tests.support.waiting import wait_for


def answer(agent: AgentThread, name: str) -> list[str]:
    query = dns.message.make_query(name, "A")
    reply = dns.query.udp(query, "127.0.0.1", port=agent.port, timeout=3)
    return [rr.to_text() for rrset in reply.answer for rr in rrset]


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")


def test_an_edited_configuration_is_taken_up(
    make_agent: AgentFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    agent = make_agent('[policy]\nage_tier = "staff"\n')
    config = tmp_path / "agent.toml"
    assert answer(agent, "www.maths.example") == ["192.0.2.1"]

    # A deny entry appears: the group's answers change without a signal.
    edit(
        config,
        'age_tier = "staff"\n',
        'age_tier = "staff"\n[[groups]]\nname = "all"\n'
        'age_tier = "staff"\ndefault = true\ndeny = ["maths.example"]\n',
    )
    assert wait_for(lambda: answer(agent, "www.maths.example") == ["0.0.0.0"], 15)

    # A broken edit keeps the running policy, and says why, once.
    caplog.set_level(logging.ERROR, logger="schoolgate.agent.app")
    edit(config, 'deny = ["maths.example"]', 'deny = ["maths.example"\n')
    assert wait_for(lambda: "reload refused" in caplog.text, 15)
    assert answer(agent, "www.maths.example") == ["0.0.0.0"]
    assert caplog.text.count("reload refused") == 1

    # Mended, it is taken up again.
    edit(config, 'deny = ["maths.example"\n', 'deny = ["science.example"]')
    assert wait_for(lambda: answer(agent, "www.maths.example") == ["192.0.2.1"], 15)
    assert answer(agent, "science.example") == ["0.0.0.0"]


def test_a_changed_list_file_is_compiled_and_served(
    make_agent: AgentFactory, blocklist: Path
) -> None:
    agent = make_agent()
    assert answer(agent, "new.example") == ["192.0.2.1"]
    # Replaced by a rename, as a deployment tool would: the watcher sees the new file.
    fresh = blocklist.with_name("adult.txt.new")
    fresh.write_text("blocked.test\nnew.example\n", encoding="utf-8")
    os.replace(fresh, blocklist)
    assert wait_for(lambda: answer(agent, "www.new.example") == ["0.0.0.0"], 15)
    assert answer(agent, "bad.example") == ["192.0.2.1"]  # no longer listed
