"""A real DNS server on loopback that plays the upstream in tests.

It answers over UDP and TCP from a small zone of records, and can be told to misbehave the ways
real upstreams do: time out, SERVFAIL, truncate every UDP answer, answer with the wrong ID or
question first, or go away entirely. It runs its own event loop in a thread, so tests talk to it
exactly as the agent would talk to a remote server.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import threading
from dataclasses import dataclass, field
from typing import Any

from dnslib import AAAA, CNAME, QTYPE, RCODE, RR, SOA, TXT, A, DNSRecord


@dataclass
class Behaviour:
    """Knobs a test turns; read for every query."""

    silent: bool = False  # never answer (timeouts)
    servfail: bool = False
    truncate_udp: bool = False
    spoof_first: bool = False  # send a wrong-ID and a wrong-question answer before the right one
    delay: float = 0.0
    slow: set[str] = field(default_factory=set)  # when set, only these names are delayed
    ttl: int = 300
    big_txt: int = 0  # bytes of TXT data for txt.* names (to force truncation)


@dataclass
class Seen:
    transport: str
    name: str
    qtype: str
    do: bool
    has_edns: bool


@dataclass
class FakeUpstream:
    behaviour: Behaviour = field(default_factory=Behaviour)
    records: dict[tuple[str, str], list[RR]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 0

    tls: ssl.SSLContext | None = None
    tls_port: int = 0

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._udp: Any = None
        self._tcp: asyncio.AbstractServer | None = None
        self._tls_server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def delay_for(self, data: bytes) -> float:
        b = self.behaviour
        if not b.delay:
            return 0.0
        if not b.slow:
            return b.delay
        return b.delay if str(DNSRecord.parse(data).q.qname).lower() in b.slow else 0.0

    # -- zone -------------------------------------------------------------------------------

    def add(self, name: str, qtype: str, *rdata: str, ttl: int | None = None) -> None:
        """Add records, e.g. add('www.example.com', 'A', '192.0.2.10')."""
        name = name.rstrip(".").lower() + "."
        kinds = {"A": A, "AAAA": AAAA, "CNAME": CNAME, "TXT": TXT}
        rrs = self.records.setdefault((name, qtype), [])
        for value in rdata:
            rrs.append(
                RR(
                    name,
                    getattr(QTYPE, qtype),
                    rdata=kinds[qtype](value),
                    ttl=self.behaviour.ttl if ttl is None else ttl,
                )
            )

    def record(self, request: DNSRecord, transport: str) -> None:
        opt = [r for r in request.ar if r.rtype == QTYPE.OPT]
        name = str(request.q.qname).lower()
        do = bool(opt and opt[0].edns_do)
        self.seen.append(Seen(transport, name, QTYPE[request.q.qtype], do, bool(opt)))

    def answer(self, request: DNSRecord, transport: str) -> DNSRecord:
        qname = str(request.q.qname).lower()
        qtype = QTYPE[request.q.qtype]
        self.record(request, transport)
        reply = request.reply()
        if self.behaviour.servfail:
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        name = qname
        # Follow CNAMEs inside the zone, as a recursive resolver would.
        for _ in range(8):
            cname = self.records.get((name, "CNAME"))
            if not cname or qtype == "CNAME":
                break
            reply.add_answer(*cname)
            name = str(cname[0].rdata.label).lower()
        found = self.records.get((name, qtype))
        if found:
            reply.add_answer(*found)
        elif qtype == "TXT" and name.startswith("txt.") and self.behaviour.big_txt:
            for i in range(self.behaviour.big_txt // 200):
                chunk = f"{i:04d}" + "x" * 196  # distinct, or clients merge them into one
                reply.add_answer(RR(name, QTYPE.TXT, rdata=TXT(chunk), ttl=self.behaviour.ttl))
        elif name.endswith("nx.test.") or name.startswith("nx."):
            reply.header.rcode = RCODE.NXDOMAIN
            reply.add_auth(self._soa())
        elif qtype == "A" and not any(k[0] == name for k in self.records):
            reply.add_answer(RR(name, QTYPE.A, rdata=A("192.0.2.1"), ttl=self.behaviour.ttl))
        elif qtype == "AAAA" and not any(k[0] == name for k in self.records):
            reply.add_answer(
                RR(name, QTYPE.AAAA, rdata=AAAA("2001:db8::1"), ttl=self.behaviour.ttl)
            )
        else:
            reply.add_auth(self._soa())
        return reply

    def _soa(self) -> RR:
        return RR(
            "test.", QTYPE.SOA, rdata=SOA("ns.test.", "h.test.", (1, 60, 60, 60, 120)), ttl=600
        )

    # -- serving ----------------------------------------------------------------------------

    def start(self) -> FakeUpstream:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        fut.result(timeout=5)
        return self

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        wanted = self.port
        # Port 0: UDP takes a free number, and TCP then needs the same one, which a client
        # connection elsewhere in the suite may be using as its own port: try another.
        for attempt in range(1 if wanted else 20):
            self._udp, _ = await loop.create_datagram_endpoint(
                lambda: _Udp(self), local_addr=(self.host, wanted), family=family
            )
            self.port = self._udp.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, self.host, self.port)
                break
            except OSError:
                self._udp.close()
                if wanted or attempt == 19:
                    raise
        if self.tls is not None:
            self._tls_server = await asyncio.start_server(
                self._serve_tcp, self.host, 0, ssl=self.tls
            )
            self.tls_port = self._tls_server.sockets[0].getsockname()[1]

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                data = await reader.readexactly(length)
                if self.behaviour.silent:
                    self.record(DNSRecord.parse(data), "tcp")
                    continue
                # Each query is answered in its own task, so a slow one does not hold up the
                # others: answers come back in the order they are ready, as RFC 7766 allows.
                asyncio.get_running_loop().create_task(self._answer_tcp(data, writer))
        writer.close()

    async def _answer_tcp(self, data: bytes, writer: asyncio.StreamWriter) -> None:
        delay = self.delay_for(data)
        if delay:
            await asyncio.sleep(delay)
        kind = "tls" if writer.get_extra_info("sslcontext") is not None else "tcp"
        packed = self.answer(DNSRecord.parse(data), kind).pack()
        with contextlib.suppress(ConnectionError, RuntimeError):
            writer.write(struct.pack("!H", len(packed)) + packed)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"udp://{host}:{self.port}"

    @property
    def tcp_url(self) -> str:
        return self.url.replace("udp://", "tcp://")

    def tls_url(self, name: str) -> str:
        return f"tls://{self.host}:{self.tls_port}#{name}"

    def stop(self) -> None:
        async def close() -> None:
            if self._udp is not None:
                self._udp.close()
            if self._tcp is not None:
                self._tcp.close()
            if self._tls_server is not None:
                self._tls_server.close()
            for writer in self._writers:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

        with contextlib.suppress(RuntimeError):
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, upstream: FakeUpstream) -> None:
        self.up = upstream
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        b = self.up.behaviour
        if b.silent:
            self.up.record(DNSRecord.parse(data), "udp")
            return
        delay = self.up.delay_for(data)
        if delay:
            asyncio.get_running_loop().call_later(delay, self._reply, data, addr)
        else:
            self._reply(data, addr)

    def _reply(self, data: bytes, addr: Any) -> None:
        request = DNSRecord.parse(data)
        reply = self.up.answer(request, "udp")
        packed = reply.pack()
        limit = 512
        for r in request.ar:
            if r.rtype == QTYPE.OPT:
                limit = max(512, r.rclass)
        if self.up.behaviour.truncate_udp or len(packed) > limit:
            reply.rr = []
            reply.auth = []
            reply.header.tc = 1
            packed = reply.pack()
        if self.up.behaviour.spoof_first:
            wrong_id = bytes([data[0] ^ 0xFF, data[1]]) + packed[2:]
            other = request.reply()
            other.q.qname = "evil.example."
            self.transport.sendto(wrong_id, addr)
            self.transport.sendto(other.pack(), addr)
        self.transport.sendto(packed, addr)
