"""Fixtures shared by every test: an in-process upstream and agents built from config text."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.support.agent import AgentThread, write_config
from tests.support.lists_server import ListServer
from tests.support.upstream import FakeUpstream

# CI must be repeatable: the same examples every run. Elsewhere hypothesis explores anew each
# time, which is how new cases are found.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

AgentFactory = Callable[..., AgentThread]


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream().start()
    yield server
    server.stop()


@pytest.fixture
def list_server() -> Iterator[ListServer]:
    server = ListServer().start()
    yield server
    server.stop()


@pytest.fixture
def blocklist(tmp_path: Path) -> Path:
    path = tmp_path / "adult.txt"
    path.write_text("# test list\nblocked.test\nbad.example\nevil.example\n", encoding="utf-8")
    return path


@pytest.fixture
def make_agent(tmp_path: Path, upstream: FakeUpstream, blocklist: Path) -> Iterator[AgentFactory]:
    """Start agents on a free port, with the test upstream and block list unless told otherwise.

    ``extra`` is TOML appended after the generated sections; ``server`` and ``upstream_extra``
    are keys added inside the generated [server] and [upstream] tables.
    """
    started: list[AgentThread] = []

    def make(
        extra: str = "",
        *,
        upstreams: list[str] | None = None,
        lists: str | None = None,
        listen: str = '"127.0.0.1:0"',
        networks: str = '"127.0.0.0/8", "::1/128"',
        server: str = "",
        upstream_extra: str = "",
    ) -> AgentThread:
        servers = ", ".join(f'"{u}"' for u in (upstreams or [upstream.url]))
        if "[sources]" not in extra:
            # Only the lists a test names: no bundled lists, nothing to download.
            extra += "\n[sources]\ndefaults = false\n"
        if lists is None:
            lists = f'[[lists]]\nname = "adult-test"\ncategory = "adult"\npath = "{blocklist}"\n'
        text = (
            f'[server]\nlisten = [{listen}]\nstate_dir = "{tmp_path / "state"}"\n{server}\n'
            f"[clients]\nnetworks = [{networks}]\n"
            f"[upstream]\nservers = [{servers}]\ntimeout = 0.5\n{upstream_extra}\n"
            f"{extra}\n{lists}"
        )
        agent = AgentThread.from_file(write_config(tmp_path, text)).start()
        started.append(agent)
        return agent

    yield make
    for agent in started:
        agent.stop()
