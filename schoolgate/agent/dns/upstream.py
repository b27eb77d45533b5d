"""Upstream resolvers: UDP, TCP and DNS-over-TLS clients, health tracking and failover.

Every UDP query goes out from a fresh socket, so the kernel picks a random source port, with a
random ID; the socket is connected, so the kernel drops datagrams from any other address, and an
answer is accepted only when ID and question match (anything else is counted and ignored, the
query keeps waiting). A truncated UDP answer is asked again over TCP. TCP and TLS connections are
kept open and pipelined: many queries in flight, answers matched by ID, in any order (RFC 7766).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import random
import socket
import ssl
import struct
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from schoolgate.agent.dns.wire import (
    FORMERR,
    NOTIMP,
    REFUSED,
    SERVFAIL,
    MalformedResponse,
    ScannedResponse,
    same_question,
    scan_response,
)
from schoolgate.agent.stats import Histogram

_DEFAULT_PORTS: Final = {"udp": 53, "tcp": 53, "tls": 853}
# Answers from an upstream that mean "ask another one".
_FAILURE_RCODES: Final = frozenset({SERVFAIL, REFUSED, NOTIMP, FORMERR})
_LEN: Final = struct.Struct("!H")
# After this many failures in a row an upstream is skipped while others are healthy; it is tried
# again after a back-off that doubles up to a minute.
_DOWN_AFTER: Final = 3
_BACKOFF_FIRST: Final = 5.0
_BACKOFF_MAX: Final = 60.0
# How often a pool looks for queries past their deadline.
_SWEEP: Final = 0.05


class UpstreamError(Exception):
    """One upstream failed to answer usefully."""


@dataclass(frozen=True)
class UpstreamSpec:
    """A parsed upstream URL: ``udp://9.9.9.9:53``, ``tcp://[2620:fe::fe]``, ``tls://9.9.9.9#dns.quad9.net``."""

    url: str
    scheme: str
    host: str
    port: int
    tls_name: str | None

    @property
    def label(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        name = f"#{self.tls_name}" if self.tls_name else ""
        return f"{self.scheme}://{host}:{self.port}{name}"


def parse_upstream(url: str) -> UpstreamSpec:
    """Parse an upstream URL; raise ``ValueError`` saying what is wrong with it."""
    parts = urlsplit(url if "://" in url else f"udp://{url}")
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"unknown scheme {scheme!r} (use udp://, tcp:// or tls://)")
    if parts.path not in ("", "/") or parts.query:
        raise ValueError("an upstream URL has no path or query")
    host = parts.hostname
    if not host:
        raise ValueError("no address")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        # The agent is the network's resolver; it cannot ask itself where its upstream is.
        raise ValueError(
            f"{host!r} is not an IP address; give the address and put a TLS name after '#'"
        ) from None
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        raise ValueError("bad port") from None
    tls_name = parts.fragment or None
    if tls_name and scheme != "tls":
        raise ValueError("a name after '#' only makes sense for tls://")
    return UpstreamSpec(url, scheme, host, port, tls_name)


class Health:
    """What we know of an upstream's recent behaviour, and its counters for the metrics. The
    agent keeps one per upstream across reloads, so neither the counters nor a back-off start
    again when the configuration is read again."""

    __slots__ = (
        "consecutive_failures",
        "down_until",
        "failures",
        "latency",
        "mismatched",
        "queries",
        "srtt",
    )

    def __init__(self) -> None:
        self.queries = 0
        self.failures = 0
        self.consecutive_failures = 0
        self.down_until = 0.0
        self.srtt = 0.0
        self.mismatched = 0
        self.latency = Histogram()

    def ok(self, rtt: float) -> bool:
        """Record an answer; True when this ends a run of failures that marked it down."""
        recovered = self.consecutive_failures >= _DOWN_AFTER
        self.consecutive_failures = 0
        self.down_until = 0.0
        self.srtt = rtt if not self.srtt else self.srtt * 0.8 + rtt * 0.2
        self.latency.observe(rtt)
        return recovered

    def failed(self, now: float) -> float:
        """Record a failure; the seconds it is now skipped for when this marks it down, else 0."""
        self.failures += 1
        self.consecutive_failures += 1
        if self.consecutive_failures < _DOWN_AFTER:
            return 0.0
        backoff = min(_BACKOFF_FIRST * 2 ** (self.consecutive_failures - _DOWN_AFTER), _BACKOFF_MAX)
        self.down_until = now + backoff
        return backoff if self.consecutive_failures == _DOWN_AFTER else 0.0

    def is_up(self, now: float) -> bool:
        return self.down_until <= now


class _IdSource:
    """Query IDs from the kernel's CSPRNG, read in blocks: one syscall per 2048 IDs."""

    def __init__(self) -> None:
        self._block = b""
        self._at = 0

    def __call__(self) -> int:
        at = self._at
        if at >= len(self._block):
            self._block = os.urandom(4096)
            at = 0
        self._at = at + 2
        return (self._block[at] << 8) | self._block[at + 1]


_random_id = _IdSource()

# Called once per query sent through a pool: with the raw answer, or with the reason it failed.
Done = Callable[[bytes | UpstreamError], None]


class _PoolSocket:
    """One connected socket of a pool, with the queries waiting on it by ID."""

    __slots__ = ("fd", "pending", "sock", "uses")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        # ID -> (question, done, serial); the serial tells this query from a later one that
        # was given the same ID once this one was answered.
        self.pending: dict[int, tuple[bytes, Done, int]] = {}
        self.uses = 0


class UdpPool:
    """UDP queries to one upstream over a rotating pool of connected sockets.

    Each socket is bound by the kernel to a random port; each query goes out from a socket
    picked at random, with a random ID, and each socket is retired after ``uses`` queries, so
    source ports keep changing (RFC 5452) without paying for a socket, a poll registration and a
    close on every query. Being connected, a socket only hears from the upstream's address; an
    answer counts only when its ID and question match one in flight. Timeouts are swept every
    ``_SWEEP`` seconds instead of arming a timer per query.
    """

    def __init__(
        self, host: str, port: int, health: Health, timeout: float, size: int = 8, uses: int = 64
    ) -> None:
        self._addr = (host, port)
        self._family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._health = health
        self._timeout = timeout
        self._size = size
        self._uses = uses
        self._active: list[_PoolSocket] = []
        self._retiring: list[_PoolSocket] = []
        # (deadline, socket, ID, serial) of every query sent, answered or not: a deadline holds
        # no reference to the query's callback, so an answered query's state is freed at once
        # rather than when its timeout comes round (at thousands of misses a second, that was
        # tens of thousands of finished queries kept alive).
        self._deadlines: deque[tuple[float, _PoolSocket, int, int]] = deque()
        self._serial = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeping: asyncio.TimerHandle | None = None
        self._pick = random.Random(os.urandom(16)).randrange

    def send(self, wire: bytes, question: bytes, done: Done) -> None:
        """Send ``wire`` (its ID is replaced) and call ``done`` once, with the answer or why not."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        try:
            while len(self._active) < self._size:
                self._active.append(self._open())
        except OSError as exc:
            done(UpstreamError(f"socket error: {exc.strerror or exc}"))
            return
        entry = self._active[self._pick(len(self._active))]
        qid = _random_id()
        while qid in entry.pending:
            qid = _random_id()
        try:
            entry.sock.send(_LEN.pack(qid) + wire[2:])
        except OSError as exc:
            self._retire(entry)
            done(UpstreamError(f"socket error: {exc.strerror or exc}"))
            return
        self._serial = serial = self._serial + 1
        entry.pending[qid] = (question, done, serial)
        self._deadlines.append((time.monotonic() + self._timeout, entry, qid, serial))
        if self._sweeping is None:
            self._sweeping = self._loop.call_later(_SWEEP, self._sweep)
        entry.uses += 1
        if entry.uses >= self._uses:
            self._retire(entry)

    def _open(self) -> _PoolSocket:
        sock = socket.socket(self._family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect(self._addr)  # the kernel binds a random ephemeral port
        except OSError:
            sock.close()
            raise
        entry = _PoolSocket(sock)
        assert self._loop is not None
        self._loop.add_reader(entry.fd, self._readable, entry)
        return entry

    def _retire(self, entry: _PoolSocket) -> None:
        """Take ``entry`` out of use; it closes once its queries are answered or timed out."""
        if entry in self._active:
            self._active.remove(entry)
            self._retiring.append(entry)
        self._close_if_idle(entry)

    def _close_if_idle(self, entry: _PoolSocket) -> None:
        if not entry.pending and entry in self._retiring:
            self._retiring.remove(entry)
            self._close(entry)

    def _close(self, entry: _PoolSocket) -> None:
        if self._loop is not None:
            self._loop.remove_reader(entry.fd)
        entry.sock.close()

    def _readable(self, entry: _PoolSocket) -> None:
        recv = entry.sock.recv
        pending = entry.pending
        health = self._health
        for _ in range(64):
            try:
                data = recv(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # ICMP port unreachable and the like: fails what is waiting
                self._fail_all(entry, UpstreamError(f"socket error: {exc.strerror or exc}"))
                break
            if len(data) < 12:
                health.mismatched += 1
                continue
            waiting = pending.get((data[0] << 8) | data[1])
            if waiting is None:
                health.mismatched += 1
                continue
            question, done, _serial = waiting
            q = data[12 : 12 + len(question)]
            if not same_question(q, question):
                health.mismatched += 1
                continue
            del pending[(data[0] << 8) | data[1]]
            done(data)
        self._close_if_idle(entry)

    def _fail_all(self, entry: _PoolSocket, error: UpstreamError) -> None:
        waiting = list(entry.pending.values())
        entry.pending.clear()
        self._retire(entry)
        for _question, done, _serial in waiting:
            done(error)

    def _sweep(self) -> None:
        self._sweeping = None
        now = time.monotonic()
        deadlines = self._deadlines
        # Every query to this upstream has the same timeout, so deadlines come in order.
        while deadlines and deadlines[0][0] <= now:
            _deadline, entry, qid, serial = deadlines.popleft()
            waiting = entry.pending.get(qid)
            # The ID may have been answered and reused since: only this very query times out.
            if waiting is not None and waiting[2] == serial:
                del entry.pending[qid]
                waiting[1](UpstreamError("timed out"))
                self._close_if_idle(entry)
        if deadlines and self._loop is not None:
            self._sweeping = self._loop.call_later(_SWEEP, self._sweep)

    def close(self) -> None:
        if self._sweeping is not None:
            self._sweeping.cancel()
            self._sweeping = None
        for entry in self._active + self._retiring:
            waiting = list(entry.pending.values())
            entry.pending.clear()
            self._close(entry)
            for _question, done, _serial in waiting:
                done(UpstreamError("closed"))
        self._active.clear()
        self._retiring.clear()
        self._deadlines.clear()


class _Connection:
    """One open TCP or TLS stream with its in-flight queries."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.pending: dict[int, tuple[asyncio.Future[bytes], bytes]] = {}
        self.closed = False
        self.used = 0
        self.task: asyncio.Task[None] | None = None

    async def read_loop(self, health: Health) -> None:
        try:
            while True:
                head = await self.reader.readexactly(2)
                (length,) = _LEN.unpack(head)
                msg = await self.reader.readexactly(length)
                if length < 12:
                    continue
                qid = (msg[0] << 8) | msg[1]
                waiting = self.pending.get(qid)
                if waiting is None:
                    health.mismatched += 1
                    continue
                fut, question = waiting
                q = msg[12 : 12 + len(question)]
                if same_question(q, question):
                    if not fut.done():
                        fut.set_result(msg)
                else:
                    health.mismatched += 1
        except (asyncio.IncompleteReadError, OSError, ssl.SSLError) as exc:
            self.fail(
                UpstreamError(f"connection closed: {exc!s}" if str(exc) else "connection closed")
            )
        except asyncio.CancelledError:
            self.fail(UpstreamError("connection closed"))
            raise

    def fail(self, exc: Exception) -> None:
        self.closed = True
        for fut, _question in self.pending.values():
            if not fut.done():
                fut.set_exception(exc)
        self.pending.clear()
        self.writer.close()


class StreamClient:
    """A pipelined TCP or TLS client holding one connection open while it is in use."""

    def __init__(
        self,
        host: str,
        port: int,
        health: Health,
        tls: ssl.SSLContext | None = None,
        tls_name: str | None = None,
        idle_timeout: float = 10.0,
    ) -> None:
        self._host = host
        self._port = port
        self._health = health
        self._tls = tls
        self._tls_name = tls_name
        self._idle_timeout = idle_timeout
        self._conn: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._closing: list[_Connection] = []

    async def _connection(self, timeout: float) -> tuple[_Connection, bool]:
        """The open connection, or a new one; the flag says whether it is new."""
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn, False
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        connecting = self._connecting
        try:
            async with asyncio.timeout(timeout):
                conn = await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None
        return conn, True

    async def _open(self) -> _Connection:
        try:
            reader, writer = await asyncio.open_connection(
                self._host,
                self._port,
                ssl=self._tls,
                server_hostname=(self._tls_name or self._host) if self._tls else None,
            )
        except ssl.SSLCertVerificationError as exc:
            raise UpstreamError(f"TLS certificate rejected: {exc.verify_message}") from None
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamError(f"cannot connect: {exc}") from None
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Connection(reader, writer)
        conn.task = asyncio.get_running_loop().create_task(conn.read_loop(self._health))
        self._conn = conn
        return conn

    async def exchange(self, wire: bytes, question: bytes, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        try:
            for attempt in (0, 1):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                conn, fresh = await self._connection(remaining)
                try:
                    return await self._send(conn, wire, question, deadline - time.monotonic())
                except UpstreamError:
                    # A kept-open connection may have been closed by the server just as we
                    # wrote; that is worth one more try on a new connection, nothing else is.
                    if fresh or attempt:
                        raise
            raise AssertionError("unreachable")
        except TimeoutError:
            raise UpstreamError("timed out") from None

    async def _send(self, conn: _Connection, wire: bytes, question: bytes, timeout: float) -> bytes:
        loop = asyncio.get_running_loop()
        qid = (wire[0] << 8) | wire[1]
        while qid in conn.pending:
            qid = _random_id()
        wire = _LEN.pack(qid) + wire[2:]
        fut: asyncio.Future[bytes] = loop.create_future()
        conn.pending[qid] = (fut, question)
        conn.used += 1
        self._cancel_idle()
        try:
            conn.writer.write(_LEN.pack(len(wire)) + wire)
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            conn.pending.pop(qid, None)
            if not conn.pending:
                self._idle = loop.call_later(self._idle_timeout, self._close_idle, conn)

    def _cancel_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _close_idle(self, conn: _Connection) -> None:
        if conn is self._conn and not conn.pending:
            self.close()

    def close(self) -> None:
        """Close the connection now; ``aclose`` also waits until it is gone."""
        self._cancel_idle()
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if not conn.closed:
            conn.fail(UpstreamError("closed"))
        if conn.task is not None:
            conn.task.cancel()
        self._closing.append(conn)

    async def aclose(self) -> None:
        self.close()
        closing, self._closing = self._closing, []
        for conn in closing:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                if conn.task is not None:
                    await conn.task
            with contextlib.suppress(Exception):
                await conn.writer.wait_closed()


class Upstream:
    """One configured upstream: its transports and its health."""

    def __init__(
        self,
        spec: UpstreamSpec,
        timeout: float,
        tls_context: ssl.SSLContext | None = None,
        health: Health | None = None,
    ) -> None:
        self.spec = spec
        self.timeout = timeout
        self.health = health if health is not None else Health()
        tls = None
        if spec.scheme == "tls":
            tls = tls_context or ssl.create_default_context()
        self.udp = (
            UdpPool(spec.host, spec.port, self.health, timeout) if spec.scheme == "udp" else None
        )
        # TCP is this upstream's transport for tcp:// and tls://, and the retry for a truncated
        # UDP answer.
        self.stream = StreamClient(spec.host, spec.port, self.health, tls, spec.tls_name)

    async def aclose(self) -> None:
        if self.udp is not None:
            self.udp.close()
        await self.stream.aclose()


def usable_answer(raw: bytes, question: bytes) -> ScannedResponse:
    """Scan an upstream's answer; ``UpstreamError`` if it is malformed or a failure to answer.

    A truncated answer is returned as it is: the caller asks again over TCP.
    """
    try:
        scanned = scan_response(raw, question)
    except MalformedResponse as exc:
        raise UpstreamError(f"malformed answer: {exc}") from None
    if scanned.rcode in _FAILURE_RCODES and not scanned.truncated:
        raise UpstreamError(f"answered rcode {scanned.rcode}")
    return scanned


class UpstreamGroup:
    """The configured upstreams, tried in order; those that keep failing are tried last."""

    def __init__(self, upstreams: Sequence[Upstream]) -> None:
        if not upstreams:
            raise ValueError("at least one upstream is needed")
        self.upstreams = tuple(upstreams)

    def order(self, now: float) -> list[Upstream]:
        up = [u for u in self.upstreams if u.health.is_up(now)]
        if len(up) == len(self.upstreams):
            return up
        return up + [u for u in self.upstreams if not u.health.is_up(now)]

    async def aclose(self) -> None:
        for upstream in self.upstreams:
            await upstream.aclose()
