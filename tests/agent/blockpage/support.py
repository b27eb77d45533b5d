"""A stand-in for the agent's decisions, and a block page running on loopback for a test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
from markupsafe import escape

from schoolgate.agent.blockpage import (
    BlockInfo,
    BlockPageServer,
    BlockPageSettings,
    UnblockStore,
)

# 2026-11-21 14:05:00 UTC: tests read it back through the local time zone, as the page does.
NOW = 1_795_269_900.0
GAMES = {"en": "Games", "vi": "Trò chơi", "zh": "游戏"}


@dataclass
class FakePolicy:
    """Blocks ``blocked`` names for every client except those in ``strangers``."""

    blocked: dict[str, BlockInfo] = field(default_factory=dict)
    strangers: set[str] = field(default_factory=set)
    calls: list[tuple[str, str]] = field(default_factory=list)

    def block(self, asked: str, **changes: object) -> BlockInfo:
        """Block ``asked``; ``changes`` replace fields of what explain returns for it."""
        values: dict[str, object] = {
            "name": asked,
            "category": "games",
            "category_names": GAMES,
            "group": "ks2",
            "blocked": True,
            "rule": "category",
            "mac": "02:00:00:00:00:01",
            "hostname": "ks2-laptop-7",
        }
        values.update(changes)
        info = BlockInfo(**values)  # type: ignore[arg-type]
        self.blocked[asked] = info
        return info

    def explain(self, name: str, client: str) -> BlockInfo | None:
        self.calls.append((name, client))
        if client in self.strangers:
            return None
        found = self.blocked.get(name)
        if found is not None:
            return found
        return BlockInfo(name, None, {}, "ks2", False, "no list matched")


@asynccontextmanager
async def serving(
    store: UnblockStore,
    explain: Callable[[str, str], BlockInfo | None],
    *,
    listen: Iterable[tuple[str, int]] = (("127.0.0.1", 0),),
    clock: Callable[[], float] = lambda: NOW,
    **settings: object,
) -> AsyncIterator[tuple[BlockPageServer, httpx.AsyncClient]]:
    """A started server and a client for its first address; both closed afterwards."""
    server = BlockPageServer(
        BlockPageSettings(tuple(listen), **settings),  # type: ignore[arg-type]
        explain,
        store,
        clock=clock,
    )
    await server.start()
    host, port = server.addresses[0]
    base = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            yield server, client
    finally:
        await server.stop()


def shown(text: str) -> str:
    """``text`` as an HTML page shows it: escaped as the templates escape."""
    return str(escape(text))


async def raw_request(port: int, data: bytes) -> bytes:
    """Send bytes no HTTP client would, read the answer until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
        await writer.wait_closed()
