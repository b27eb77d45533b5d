"""UDP and TCP listeners.

UDP reads straight from a non-blocking socket registered with the event loop and drains up to a
batch of datagrams per wake-up: that is what lets a Python server keep up with dnsmasq (the
stock datagram transport reads one datagram per loop iteration). TCP follows RFC 7766:
length-prefixed messages, many queries per connection, answers written as soon as each is ready
and so possibly out of order, an idle timeout and caps on connections and queries in flight.

Neither listener ever stops on bad input: a handler exception is counted, logged (rate-limited)
and the next datagram is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections.abc import Callable
from typing import Any, Final, Protocol, cast

from schoolgate.agent.stats import Counters
from schoolgate.agent.throttle import Throttle

log = logging.getLogger(__name__)

_BATCH: Final = 128
_RECV_SIZE: Final = 65535
_LEN: Final = struct.Struct("!H")
_ERROR_LOG_INTERVAL: Final = 10.0

Address = Any  # (host, port) or (host, port, flowinfo, scope_id)


class Reply(Protocol):
    """Where an answer goes: a UDP socket or a TCP connection."""

    udp: bool

    def send(self, data: bytes, addr: Address) -> None: ...


# A handler returns the answer, None when it will call ``reply.send`` later, or b"" when there is
# nothing to send (a datagram dropped on purpose).
Handler = Callable[[bytes, Address, Reply], bytes | None]


class _ErrorLog:
    """Logs a handler failure at most every few seconds, with a count of those skipped."""

    def __init__(self) -> None:
        self._throttle = Throttle(_ERROR_LOG_INTERVAL)

    def __call__(self, what: str) -> None:
        if self._throttle():
            log.exception("%s (%d similar errors not logged)", what, self._throttle.take_skipped())


def bind_udp(host: str, port: int, receive_buffer: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        with contextlib.suppress(OSError):
            # A larger buffer absorbs bursts (a classroom of tablets waking up) without drops.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


class UdpListener:
    """Serves one UDP socket."""

    udp = True

    def __init__(self, sock: socket.socket, handler: Handler, counters: Counters) -> None:
        self.sock = sock
        self._handler = handler
        self._counters = counters
        self._errors = _ErrorLog()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return host, port

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self.sock.fileno(), self._readable)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
            self._loop = None
        self.sock.close()

    def set_handler(self, handler: Handler) -> None:
        self._handler = handler

    def _readable(self) -> None:
        recv = self.sock.recvfrom
        send = self.sock.sendto
        handler = self._handler
        counters = self._counters
        for _ in range(_BATCH):
            try:
                data, addr = recv(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                counters.receive_errors += 1
                continue
            try:
                answer = handler(data, addr, self)
            except Exception:
                counters.internal_errors += 1
                self._errors("query handler failed")
                continue
            if answer:
                try:
                    send(answer, addr)
                except OSError:
                    counters.send_errors += 1

    def send(self, data: bytes, addr: Address) -> None:
        try:
            self.sock.sendto(data, addr)
        except OSError:
            self._counters.send_errors += 1


class TcpServer:
    """Accepts DNS-over-TCP connections and keeps count of them."""

    def __init__(
        self,
        handler: Handler,
        counters: Counters,
        idle_timeout: float,
        max_connections: int,
        max_in_flight: int,
    ) -> None:
        self.handler = handler
        self.counters = counters
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.max_in_flight = max_in_flight
        self.connections: set[TcpConnection] = set()
        self.errors = _ErrorLog()
        self._servers: list[asyncio.Server] = []

    async def listen(self, host: str, port: int) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        server = await loop.create_server(lambda: TcpConnection(self), sock=sock, backlog=128)
        self._servers.append(server)
        bound = sock.getsockname()
        return bound[0], bound[1]

    async def close(self, grace: float) -> None:
        """Stop accepting; give connections with queries in flight up to ``grace`` seconds."""
        for server in self._servers:
            server.close()
        deadline = time.monotonic() + grace
        while any(c.in_flight for c in self.connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.close()
        for server in self._servers:
            await server.wait_closed()


class TcpConnection(asyncio.Protocol):
    udp = False

    def __init__(self, server: TcpServer) -> None:
        self._server = server
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._peer: Address = None
        self._idle: asyncio.TimerHandle | None = None
        self._paused = False
        self.in_flight = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        server = self._server
        if len(server.connections) >= server.max_connections:
            server.counters.tcp_refused += 1
            transport.abort()
            return
        self._transport = transport
        self._peer = transport.get_extra_info("peername")
        server.connections.add(self)
        server.counters.tcp_connections += 1
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        if self._idle is not None:
            self._idle.cancel()
        self._transport = None

    def data_received(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        server = self._server
        while len(buf) >= 2:
            (length,) = _LEN.unpack_from(buf)
            if len(buf) < 2 + length:
                break
            message = bytes(buf[2 : 2 + length])
            del buf[: 2 + length]
            try:
                answer = server.handler(message, self._peer, self)
            except Exception:
                server.counters.internal_errors += 1
                server.errors("query handler failed")
                continue
            if answer is None:
                self.in_flight += 1
                if self.in_flight >= server.max_in_flight and not self._paused:
                    # Back-pressure: stop reading until answers go out.
                    self._paused = True
                    if self._transport is not None:
                        self._transport.pause_reading()
            elif answer:
                self._write(answer)
        self._arm_idle()

    def send(self, data: bytes, addr: Address) -> None:
        """A delayed answer (after an upstream query) for a query read earlier."""
        self.in_flight -= 1
        if self._paused and self.in_flight < self._server.max_in_flight:
            self._paused = False
            if self._transport is not None:
                self._transport.resume_reading()
        self._write(data)
        self._arm_idle()

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(_LEN.pack(len(data)) + data)

    def _arm_idle(self) -> None:
        if self._transport is None:
            return
        if self._idle is not None:
            self._idle.cancel()
        loop = asyncio.get_running_loop()
        self._idle = loop.call_later(self._server.idle_timeout, self._idle_expired)

    def _idle_expired(self) -> None:
        if self.in_flight:
            self._arm_idle()
            return
        self._server.counters.tcp_idle_closed += 1
        self.close()

    def eof_received(self) -> bool | None:
        # The client is done sending; keep the connection open until our answers are out.
        if not self.in_flight:
            return None
        return True

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
