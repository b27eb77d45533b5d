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
import secrets
import socket
import ssl
import struct
import time
from collections.abc import Sequence
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
    build_query,
    scan_response,
)

_DEFAULT_PORTS: Final = {"udp": 53, "tcp": 53, "tls": 853}
# Answers from an upstream that mean "ask another one".
_FAILURE_RCODES: Final = frozenset({SERVFAIL, REFUSED, NOTIMP, FORMERR})
_LEN: Final = struct.Struct("!H")
# After this many failures in a row an upstream is skipped while others are healthy; it is tried
# again after a back-off that doubles up to a minute.
_DOWN_AFTER: Final = 3
_BACKOFF_FIRST: Final = 5.0
_BACKOFF_MAX: Final = 60.0


class UpstreamError(Exception):
    """One upstream failed to answer usefully."""


class AllUpstreamsFailed(Exception):
    """Every upstream failed; the message lists why, one per upstream."""


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
        return f"{self.scheme}://{host}:{self.port}"


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
    """What we know of an upstream's recent behaviour."""

    __slots__ = ("consecutive_failures", "down_until", "failures", "mismatched", "queries", "srtt")

    def __init__(self) -> None:
        self.queries = 0
        self.failures = 0
        self.consecutive_failures = 0
        self.down_until = 0.0
        self.srtt = 0.0
        self.mismatched = 0

    def ok(self, rtt: float) -> None:
        self.consecutive_failures = 0
        self.down_until = 0.0
        self.srtt = rtt if not self.srtt else self.srtt * 0.8 + rtt * 0.2

    def failed(self, now: float) -> None:
        self.failures += 1
        self.consecutive_failures += 1
        if self.consecutive_failures >= _DOWN_AFTER:
            backoff = _BACKOFF_FIRST * 2 ** (self.consecutive_failures - _DOWN_AFTER)
            self.down_until = now + min(backoff, _BACKOFF_MAX)

    def is_up(self, now: float) -> bool:
        return self.down_until <= now


def _random_id() -> int:
    return secrets.randbits(16)


class UdpClient:
    """One connected socket per query."""

    def __init__(self, host: str, port: int, health: Health) -> None:
        self._addr = (host, port)
        self._family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._health = health

    async def exchange(self, wire: bytes, question: bytes, timeout: float) -> bytes:
        loop = asyncio.get_running_loop()
        sock = socket.socket(self._family, socket.SOCK_DGRAM)
        fd = sock.fileno()
        done: asyncio.Future[bytes] = loop.create_future()
        qid = wire[:2]
        qlen = len(question)
        health = self._health

        def readable() -> None:
            while not done.done():
                try:
                    data = sock.recv(65535)
                except BlockingIOError:
                    return
                except OSError as exc:  # ICMP port unreachable and the like
                    done.set_exception(UpstreamError(f"socket error: {exc.strerror or exc}"))
                    return
                # Case may differ if the upstream plays with 0x20; compare the name lowercased.
                q = data[12 : 12 + qlen]
                if data[:2] == qid and (q == question or q[:-4].lower() + q[-4:] == question):
                    done.set_result(data)
                    return
                health.mismatched += 1

        try:
            sock.setblocking(False)
            sock.connect(self._addr)
            loop.add_reader(fd, readable)
            try:
                sock.send(wire)
                async with asyncio.timeout(timeout):
                    return await done
            finally:
                loop.remove_reader(fd)
        except TimeoutError:
            raise UpstreamError("timed out") from None
        except OSError as exc:
            raise UpstreamError(f"socket error: {exc.strerror or exc}") from None
        finally:
            sock.close()


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
                if q == question or q[:-4].lower() + q[-4:] == question:
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
    """One configured upstream: its transport(s) and its health."""

    def __init__(
        self, spec: UpstreamSpec, timeout: float, tls_context: ssl.SSLContext | None = None
    ) -> None:
        self.spec = spec
        self.timeout = timeout
        self.health = Health()
        tls = None
        if spec.scheme == "tls":
            tls = tls_context or ssl.create_default_context()
        self._udp = UdpClient(spec.host, spec.port, self.health) if spec.scheme == "udp" else None
        self._stream = StreamClient(spec.host, spec.port, self.health, tls, spec.tls_name)

    async def query(self, question: bytes, flags: int, do: bool) -> ScannedResponse:
        """Ask this upstream; raise ``UpstreamError`` for anything that is not a usable answer."""
        wire = build_query(_random_id(), question, flags, do)
        if self._udp is not None:
            raw = await self._udp.exchange(wire, question, self.timeout)
            scanned = _scan(raw, question)
            if scanned.truncated:
                raw = await self._stream.exchange(wire, question, self.timeout)
                scanned = _scan(raw, question)
        else:
            raw = await self._stream.exchange(wire, question, self.timeout)
            scanned = _scan(raw, question)
        if scanned.rcode in _FAILURE_RCODES:
            raise UpstreamError(f"answered rcode {scanned.rcode}")
        return scanned

    async def aclose(self) -> None:
        await self._stream.aclose()


def _scan(raw: bytes, question: bytes) -> ScannedResponse:
    try:
        return scan_response(raw, question)
    except MalformedResponse as exc:
        raise UpstreamError(f"malformed answer: {exc}") from None


class UpstreamGroup:
    """The configured upstreams, tried in order; those that keep failing are tried last."""

    def __init__(self, upstreams: Sequence[Upstream]) -> None:
        if not upstreams:
            raise ValueError("at least one upstream is needed")
        self.upstreams = tuple(upstreams)

    def _order(self, now: float) -> list[Upstream]:
        up = [u for u in self.upstreams if u.health.is_up(now)]
        down = [u for u in self.upstreams if not u.health.is_up(now)]
        return up + down

    async def resolve(
        self, question: bytes, flags: int, do: bool
    ) -> tuple[ScannedResponse, Upstream]:
        errors = []
        for upstream in self._order(time.monotonic()):
            health = upstream.health
            health.queries += 1
            started = time.monotonic()
            try:
                scanned = await upstream.query(question, flags, do)
            except UpstreamError as exc:
                health.failed(time.monotonic())
                errors.append(f"{upstream.spec.label}: {exc}")
                continue
            health.ok(time.monotonic() - started)
            return scanned, upstream
        raise AllUpstreamsFailed("; ".join(errors))

    async def aclose(self) -> None:
        for upstream in self.upstreams:
            await upstream.aclose()
