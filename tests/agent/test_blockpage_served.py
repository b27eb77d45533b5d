"""The block page in the running agent: a blocked name leads a browser to the page, the page
explains the block in the browser's language, and an unblock request is stored."""

from __future__ import annotations

import json
from pathlib import Path

import dns.message
import dns.query
import httpx

from tests.conftest import AgentFactory
from tests.support.agent import AgentThread
from tests.support.process import run_agent_command
from tests.support.upstream import FakeUpstream

CONFIG = """
[filter]
block_response = "blockpage"
blockpage_ipv4 = ["127.0.0.1"]

[blockpage]
enabled = true
listen = ["127.0.0.1:0"]
school_name = "Hillside Primary"

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

[[lists]]
name = "games"
category = "games"
path = "{games}"
"""


def resolve(agent: AgentThread, name: str, source: str) -> list[str]:
    query = dns.message.make_query(name, "A")
    reply = dns.query.udp(query, "127.0.0.1", port=agent.port, timeout=3, source=source)
    return [rr.to_text() for rrset in reply.answer for rr in rrset]


def browser(source: str) -> httpx.Client:
    """A browser on the device at ``source``: the page knows the device by its address."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=5)


def start(make_agent: AgentFactory, tmp_path: Path) -> tuple[AgentThread, str]:
    games = tmp_path / "games.txt"
    games.write_text("game.example\n", encoding="utf-8")
    agent = make_agent(CONFIG.format(games=games), lists="")
    assert agent.agent is not None and agent.agent.blockpage is not None
    host, port = agent.agent.blockpage.addresses[0]
    return agent, f"http://{host}:{port}"


def test_a_blocked_name_leads_to_the_page_and_a_request_is_stored(
    make_agent: AgentFactory, tmp_path: Path
) -> None:
    agent, page = start(make_agent, tmp_path)
    # DNS sends the pupil's browser to the block page's address ...
    assert resolve(agent, "www.game.example", "127.0.0.2") == ["127.0.0.1"]
    with browser("127.0.0.2") as pupil:
        # ... which it asks for the blocked site by name.
        headers = {"Host": "www.game.example", "Accept-Language": "vi-VN,vi;q=0.9,en;q=0.5"}
        shown = pupil.get(f"{page}/play?level=2", headers=headers)
        assert shown.status_code == 200
        assert shown.headers["cache-control"] == "no-store"
        assert 'lang="vi"' in shown.text
        assert "www.game.example" in shown.text and "ks2" in shown.text
        assert "Trò chơi" in shown.text  # the category in plain Vietnamese
        assert "Hillside Primary" in shown.text

        asked = pupil.post(
            f"{page}/_schoolgate/unblock",
            headers={"Host": "www.game.example", "Accept-Language": "en-GB"},
            data={"name": "www.game.example", "reason": "maths homework <b>now</b>"},
        )
        assert asked.status_code == 200
        assert "Thank you" in asked.text
        assert "<b>now</b>" not in asked.text

    listed = run_agent_command(
        "requests",
        "--format",
        "json",
        "--config",
        str(tmp_path / "agent.toml"),
    )
    assert listed.returncode == 0, listed.stderr
    (request,) = json.loads(listed.stdout)
    assert request["name"] == "www.game.example" and request["group"] == "ks2"
    assert request["category"] == "games" and request["client_ip"] == "127.0.0.2"
    assert request["reason"] == "maths homework <b>now</b>" and request["shipped"] is False


def test_a_name_blocked_through_its_cname_is_explained(
    make_agent: AgentFactory, upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.add("cdn.school-ok.example", "CNAME", "edge.game.example.")
    agent, page = start(make_agent, tmp_path)
    assert resolve(agent, "cdn.school-ok.example", "127.0.0.2") == ["127.0.0.1"]
    with browser("127.0.0.2") as pupil:
        shown = pupil.get(f"{page}/", headers={"Host": "cdn.school-ok.example"})
        assert shown.status_code == 200
        assert "Games" in shown.text and "not blocked" not in shown.text
        asked = pupil.post(
            f"{page}/_schoolgate/unblock",
            headers={"Host": "cdn.school-ok.example"},
            data={"name": "cdn.school-ok.example"},
        )
        assert asked.status_code == 200
    assert agent.agent is not None and agent.agent.unblock_requests is not None
    (request,) = agent.agent.unblock_requests.list()
    assert (request.name, request.category) == ("cdn.school-ok.example", "games")


def test_the_page_follows_the_policy_for_each_device(
    make_agent: AgentFactory, tmp_path: Path
) -> None:
    agent, page = start(make_agent, tmp_path)
    with browser("127.0.0.3") as teacher:
        # Staff may play: for them the page says the site is not blocked.
        shown = teacher.get(f"{page}/", headers={"Host": "game.example"})
        assert shown.status_code == 200 and "not blocked" in shown.text
        refused = teacher.post(
            f"{page}/_schoolgate/unblock",
            headers={"Host": "game.example"},
            data={"name": "game.example"},
        )
        assert refused.status_code == 400
    assert agent.agent is not None and agent.agent.unblock_requests is not None
    assert agent.agent.unblock_requests.list() == []


def test_a_reload_moves_the_page_when_its_settings_change(
    make_agent: AgentFactory, tmp_path: Path
) -> None:
    agent, _ = start(make_agent, tmp_path)
    config = tmp_path / "agent.toml"
    config.write_text(
        config.read_text(encoding="utf-8").replace(
            'school_name = "Hillside Primary"', 'school_name = "Hillside Academy"'
        ),
        encoding="utf-8",
    )
    assert agent.reload()
    assert agent.agent is not None and agent.agent.blockpage is not None
    host, port = agent.agent.blockpage.addresses[0]
    with browser("127.0.0.2") as pupil:
        shown = pupil.get(f"http://{host}:{port}/", headers={"Host": "game.example"})
    assert "Hillside Academy" in shown.text
