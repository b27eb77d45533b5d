"""The block page's web server, running in the agent's own event loop.

uvicorn serves the Starlette app on sockets bound here (so a test can ask for port 0 and read
the port back, and a bind failure names its address). It runs as a task beside the DNS
listeners: a request to the page never blocks the loop (the store is called in a thread), and
nothing a request does stops the agent. uvicorn would take SIGINT and SIGTERM for itself and
re-raise them when it stops; the agent has its own handlers, so that is switched off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import tzinfo
from typing import Final

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from schoolgate.agent.blockpage.info import Explain
from schoolgate.agent.blockpage.pages import Pages
from schoolgate.agent.blockpage.store import DEFAULT_MAX_PER_HOUR, UnblockStore
from schoolgate.agent.blockpage.texts import LANGUAGES
from schoolgate.agent.blockpage.web import BlockPageCounters, Handlers, make_app

log = logging.getLogger(__name__)

# Pupils' browsers only: a school's worth of devices at once, a few connections each.
_MAX_CONCURRENCY: Final = 128
# Connections are counted and capped when they are accepted, not when a request arrives, and
# none lives longer than a page visit needs: otherwise one device opening sockets and sending
# nothing would hold every slot, and then every file descriptor the agent has (DNS over TCP
# included). A browser opens six at most to one host.
MAX_CONNECTIONS: Final = 256
MAX_CONNECTIONS_PER_CLIENT: Final = 16
CONNECTION_LIFETIME: Final = 30.0
_BACKLOG: Final = 128
_KEEP_ALIVE: Final = 5
# Request line and headers: big enough for the cookies a browser still sends to a site it
# visited before the block, small enough that nobody can park large buffers here.
_MAX_HEADERS: Final = 16 * 1024
_GRACE: Final = 2


class BlockPageError(OSError):
    """The block page cannot listen where it was told; the message names the address."""


@dataclass(frozen=True)
class BlockPageSettings:
    listen: tuple[tuple[str, int], ...]
    language: str = "en"  # when the browser asks for none of the page's languages
    max_requests_per_hour: int = DEFAULT_MAX_PER_HOUR
    school_name: str = ""  # empty: not shown
    contact: str = ""  # empty: not shown
    timezone: tzinfo | None = None  # the site's, for the time on the page; None: the machine's

    def __post_init__(self) -> None:
        if self.language not in LANGUAGES:
            raise ValueError(f"language {self.language!r}: expected one of {', '.join(LANGUAGES)}")
        if self.max_requests_per_hour < 1:
            raise ValueError("max_requests_per_hour must be at least 1")


class _EmbeddedServer(uvicorn.Server):
    """uvicorn's server as a guest in somebody else's event loop."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()
        self._exit = asyncio.Event()

    def exit(self) -> None:
        self.should_exit = True
        self._exit.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn would replace the process's SIGINT and SIGTERM handlers while it serves and
        # raise the signals again when it stops: the agent's own handling must stay in charge.
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()

    async def main_loop(self) -> None:
        # uvicorn wakes ten times a second to look for should_exit; on the agent's small box
        # once a second is plenty, and exit() wakes it at once. on_tick(0) refreshes the Date
        # header (it does on every tenth tick) and says whether to stop.
        while not await self.on_tick(0):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exit.wait(), timeout=1.0)


@dataclass
class ConnectionLimits:
    total: int = MAX_CONNECTIONS
    per_client: int = MAX_CONNECTIONS_PER_CLIENT
    lifetime: float = CONNECTION_LIFETIME


def guarded_protocol(limits: ConnectionLimits) -> type[H11Protocol]:
    """uvicorn's HTTP/1.1 protocol with the connection caps and lifetime of ``limits``: a
    connection over a cap is closed as it is accepted, and every connection is closed
    ``lifetime`` seconds after it was opened, whatever it is doing."""
    open_by_client: dict[str, int] = {}
    open_total = [0]

    class GuardedH11Protocol(H11Protocol):
        _counted_as: str | None = None
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            peer = self.client[0] if self.client else ""
            if open_total[0] >= limits.total or open_by_client.get(peer, 0) >= limits.per_client:
                transport.abort()
                return
            open_total[0] += 1
            open_by_client[peer] = open_by_client.get(peer, 0) + 1
            self._counted_as = peer
            self._deadline = self.loop.call_later(limits.lifetime, transport.abort)

        def connection_lost(self, exc: Exception | None) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            peer = self._counted_as
            if peer is not None:
                self._counted_as = None
                open_total[0] -= 1
                left = open_by_client[peer] - 1
                if left:
                    open_by_client[peer] = left
                else:
                    del open_by_client[peer]
            super().connection_lost(exc)

    return GuardedH11Protocol


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # Naming the protocol lets the event loop see these as TCP and set TCP_NODELAY on every
    # connection; without it a page's headers and body wait on the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # An IPv6 socket must not also take the IPv4 port another entry may want.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(_BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _label(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class BlockPageServer:
    def __init__(
        self,
        settings: BlockPageSettings,
        explain: Explain,
        store: UnblockStore,
        clock: Callable[[], float] = time.time,
        limits: ConnectionLimits | None = None,
    ) -> None:
        self.settings = settings
        self.limits = limits or ConnectionLimits()
        self.counters = BlockPageCounters()
        handlers = Handlers(
            explain,
            store,
            Pages(settings.school_name, settings.contact),
            self.counters,
            settings.language,
            settings.max_requests_per_hour,
            clock,
            settings.timezone,
        )
        self._app = make_app(handlers, self.counters)
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._addresses: list[tuple[str, int]] = []

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Where it listens, with the ports the system chose for port 0."""
        return list(self._addresses)

    async def start(self) -> None:
        """Bind every address and serve. Raises ``BlockPageError`` naming the address that
        cannot be bound; then nothing is left listening."""
        if self._task is not None:
            raise RuntimeError("the block page server is already running")
        sockets: list[socket.socket] = []
        for host, port in self.settings.listen:
            try:
                sockets.append(_bind(host, port))
            except OSError as exc:
                for sock in sockets:
                    sock.close()
                raise BlockPageError(
                    f"cannot listen on {_label(host, port)} for the block page: "
                    f"{exc.strerror or exc}"
                ) from None
        addresses = [(s.getsockname()[0], s.getsockname()[1]) for s in sockets]
        config = uvicorn.Config(
            self._app,
            http=guarded_protocol(self.limits),
            ws="none",
            interface="asgi3",
            lifespan="off",
            log_config=None,  # the agent's logging stays as the agent set it up
            # uvicorn's start and stop lines name a "server process" that is the agent's;
            # its warnings (malformed requests, the concurrency limit) still come through.
            log_level=logging.WARNING,
            access_log=False,
            proxy_headers=False,  # the client is the connection's peer, whatever it claims
            server_header=False,
            limit_concurrency=_MAX_CONCURRENCY,
            backlog=_BACKLOG,
            timeout_keep_alive=_KEEP_ALIVE,
            timeout_graceful_shutdown=_GRACE,
            h11_max_incomplete_event_size=_MAX_HEADERS,
        )
        server = _EmbeddedServer(config)
        task = asyncio.get_running_loop().create_task(
            server.serve(sockets=sockets), name="blockpage"
        )
        ready = asyncio.ensure_future(server.ready.wait())
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if not server.ready.is_set():
            ready.cancel()
            for sock in sockets:
                sock.close()
            reason = task.exception() if not task.cancelled() else "cancelled"
            raise BlockPageError(f"the block page server did not start: {reason}")
        task.add_done_callback(self._ended)
        self._server, self._task, self._addresses = server, task, addresses
        log.info("block page serving on %s", ", ".join(_label(h, p) for h, p in addresses))

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("the block page server stopped: %s", task.exception())

    async def stop(self) -> None:
        """Stop listening, let requests in flight finish (briefly), close."""
        server, task = self._server, self._task
        if server is None or task is None:
            return
        self._server = self._task = None
        self._addresses = []
        server.exit()
        # The task's own failure, if it had one, was logged by _ended.
        done, _ = await asyncio.wait({task}, timeout=_GRACE + 1)
        if not done:
            server.force_exit = True
            task.cancel()
            await asyncio.wait({task})
        log.info("block page stopped; counters: %s", self.counters.snapshot())
