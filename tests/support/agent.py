"""Runs a real agent in a thread with its own event loop, for tests that act as DNS clients."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import uvloop

from schoolgate.agent import config as config_mod
from schoolgate.agent.app import Agent
from schoolgate.agent.config import AgentConfig, ConfigLoader
from schoolgate.agent.policy.central import CentralPolicy


def write_config(directory: Path, text: str) -> Path:
    path = directory / "agent.toml"
    path.write_text(text, encoding="utf-8")
    return path


class AgentThread:
    """An ``Agent`` serving from a background thread until ``stop``."""

    def __init__(self, load: ConfigLoader) -> None:
        self._load = load
        # The agent runs on uvloop in production (see cli._install_uvloop); so do the tests.
        self.loop = uvloop.new_event_loop()
        self.agent: Agent | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    @classmethod
    def from_file(cls, path: Path) -> AgentThread:
        def load(candidate: CentralPolicy | None = None, /) -> AgentConfig:
            return config_mod.load(path, candidate=candidate)

        return cls(load)

    def start(self) -> AgentThread:
        self._thread.start()

        async def start() -> Agent:
            agent = Agent(self._load)
            await agent.start()
            return agent

        self.agent = self.call(start())
        return self

    def call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=timeout)

    @property
    def port(self) -> int:
        assert self.agent is not None
        return self.agent.addresses[0][1]

    def address(self, index: int = 0) -> tuple[str, int]:
        assert self.agent is not None
        return self.agent.addresses[index]

    def reload(self) -> bool:
        assert self.agent is not None
        return bool(self.call(self.agent.reload()))

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        if self.agent is not None:
            self.call(self.agent.stop(grace=1.0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()
