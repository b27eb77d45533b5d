"""The agent as a DNS server: real sockets on loopback, dnspython as the client, a real upstream."""

from __future__ import annotations

import logging
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from schoolgate.agent.dns.upstream import Health
from tests.conftest import AgentFactory
from tests.support.agent import AgentThread
from tests.support.certs import ScratchPKI, make_pki
from tests.support.upstream import Behaviour, FakeUpstream

HOST = "127.0.0.1"


def ask(
    agent: AgentThread,
    name: str,
    qtype: str = "A",
    *,
    tcp: bool = False,
    source: str | None = None,
    **make: object,
) -> dns.message.Message:
    query = dns.message.make_query(name, qtype, **make)  # type: ignore[arg-type]
    if tcp:
        return dns.query.tcp(query, HOST, port=agent.port, timeout=5, source=source)
    return dns.query.udp(query, HOST, port=agent.port, timeout=5, source=source)


def addresses(response: dns.message.Message) -> list[str]:
    return sorted(rr.to_text() for rrset in response.answer for rr in rrset)


def ede(response: dns.message.Message) -> list[tuple[int, str | None]]:
    return [(int(o.code), o.text) for o in response.options if isinstance(o, dns.edns.EDEOption)]


# -- answering and caching --------------------------------------------------------------------


def test_forwards_and_caches(make_agent: AgentFactory, upstream: FakeUpstream) -> None:
    agent = make_agent()
    first = ask(agent, "www.example.org")
    second = ask(agent, "WWW.Example.ORG")
    assert addresses(first) == ["192.0.2.1"]
    assert addresses(second) == ["192.0.2.1"]
    # The client's own letter case is echoed in the question.
    assert second.question[0].name.to_text() == "WWW.Example.ORG."
    assert [s.name for s in upstream.seen] == ["www.example.org."]
    assert agent.agent is not None
    assert agent.agent.counters.cache_hits == 1


def test_ttl_counts_down_in_cached_answers(
    make_agent: AgentFactory, upstream: FakeUpstream
) -> None:
    upstream.behaviour.ttl = 100
    agent = make_agent()
    assert ask(agent, "ttl.example.org").answer[0].ttl == 100
    time.sleep(1.1)
    assert ask(agent, "ttl.example.org").answer[0].ttl < 100


def test_ttl_clamped_to_configured_minimum(
    make_agent: AgentFactory, upstream: FakeUpstream
) -> None:
    upstream.behaviour.ttl = 1
    agent = make_agent("[cache]\nmin_ttl = 60\n")
    assert ask(agent, "short.example.org").answer[0].ttl == 60
    time.sleep(1.2)
    ask(agent, "short.example.org")
    assert len(upstream.seen) == 1


def test_negative_answers_cached(make_agent: AgentFactory, upstream: FakeUpstream) -> None:
    agent = make_agent()
    assert ask(agent, "gone.nx.test").rcode() == dns.rcode.NXDOMAIN
    assert ask(agent, "gone.nx.test").rcode() == dns.rcode.NXDOMAIN
    assert len(upstream.seen) == 1


def test_same_question_in_flight_goes_upstream_once(
    make_agent: AgentFactory, upstream: FakeUpstream
) -> None:
    upstream.behaviour.delay = 0.3
    agent = make_agent()
    query = dns.message.make_query("once.example.org", "A")
    socks = []
    for _ in range(5):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(5)
        s.sendto(query.to_wire(), (HOST, agent.port))
        socks.append(s)
    for s in socks:
        reply = dns.message.from_wire(s.recv(4096))
        assert addresses(reply) == ["192.0.2.1"]
        s.close()
    assert len(upstream.seen) == 1


def test_ipv6_listener(make_agent: AgentFactory) -> None:
    agent = make_agent(listen='"127.0.0.1:0", "[::1]:0"')
    host, port = agent.address(1)
    assert host == "::1"
    reply = dns.query.udp(
        dns.message.make_query("v6.example.org", "AAAA"), "::1", port=port, timeout=5
    )
    assert addresses(reply) == ["2001:db8::1"]


def test_do_bit_is_part_of_the_cache_key(make_agent: AgentFactory, upstream: FakeUpstream) -> None:
    agent = make_agent()
    ask(agent, "sec.example.org", use_edns=0, want_dnssec=True)
    ask(agent, "sec.example.org", use_edns=0)
    assert [s.do for s in upstream.seen] == [True, False]


# -- the client networks -----------------------------------------------------------------------


def test_refused_outside_client_networks(make_agent: AgentFactory, upstream: FakeUpstream) -> None:
    agent = make_agent(networks='"127.0.0.2/32"')
    refused = ask(agent, "www.example.org", source="127.0.0.1", use_edns=0)
    allowed = ask(agent, "www.example.org", source="127.0.0.2")
    assert refused.rcode() == dns.rcode.REFUSED
    assert not refused.answer
    assert ede(refused) == [(18, "not a client of this school's resolver")]
    assert addresses(allowed) == ["192.0.2.1"]
    assert len(upstream.seen) == 1


# -- blocking -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "qtype",
    ["A", "AAAA", "HTTPS", "SVCB", "MX", "TXT", "NS", "SOA", "SRV", "CAA", "PTR", "CNAME", "ANY"],
)
def test_every_record_type_of_a_blocked_name(
    make_agent: AgentFactory, upstream: FakeUpstream, qtype: str
) -> None:
    agent = make_agent()
    reply = ask(agent, "www.blocked.test", qtype, use_edns=0)
    assert reply.rcode() == dns.rcode.NOERROR
    if qtype == "A":
        assert addresses(reply) == ["0.0.0.0"]
    elif qtype == "AAAA":
        assert addresses(reply) == ["::"]
    else:
        assert not reply.answer
        assert reply.authority[0].rdtype == dns.rdatatype.SOA  # NODATA, cacheable per RFC 2308
    assert ede(reply) == [(15, "blocked by school policy: adult")]
    assert upstream.seen == []


def test_block_response_nxdomain(make_agent: AgentFactory) -> None:
    agent = make_agent('[filter]\nblock_response = "nxdomain"\nblock_ttl = 30\n')
    for qtype in ("A", "AAAA", "HTTPS"):
        reply = ask(agent, "blocked.test", qtype, use_edns=0)
        assert reply.rcode() == dns.rcode.NXDOMAIN
        assert reply.authority[0].ttl == 30


def test_block_response_blockpage(make_agent: AgentFactory) -> None:
    agent = make_agent(
        '[filter]\nblock_response = "blockpage"\nblockpage_ipv4 = ["192.0.2.80"]\n'
        'blockpage_ipv6 = ["2001:db8::80"]\nextended_error = "filtered"\n'
    )
    assert addresses(ask(agent, "x.bad.example", use_edns=0)) == ["192.0.2.80"]
    v6 = ask(agent, "x.bad.example", "AAAA", use_edns=0)
    assert addresses(v6) == ["2001:db8::80"]
    assert ede(v6)[0][0] == 17


def test_blocked_answer_without_edns_has_no_opt(make_agent: AgentFactory) -> None:
    agent = make_agent()
    reply = ask(agent, "blocked.test", use_edns=False)
    assert reply.edns == -1
    assert addresses(reply) == ["0.0.0.0"]


def test_matching_ignores_case_and_covers_subdomains_only(
    make_agent: AgentFactory, upstream: FakeUpstream
) -> None:
    agent = make_agent()
    assert addresses(ask(agent, "A.B.BLOCKED.TEST.")) == ["0.0.0.0"]
    assert addresses(ask(agent, "notblocked.test")) == ["192.0.2.1"]
    assert addresses(ask(agent, "test")) == ["192.0.2.1"]


def test_cname_into_a_blocked_name_is_blocked(
    make_agent: AgentFactory, upstream: FakeUpstream
) -> None:
    upstream.add("www.alias.org", "CNAME", "cdn.evil.example.")
    agent = make_agent()
    first = ask(agent, "www.alias.org", use_edns=0)
    again = ask(agent, "www.alias.org", use_edns=0)  # from the cache: checked again
    for reply in (first, again):
        assert addresses(reply) == ["0.0.0.0"]
        assert ede(reply) == [(15, "blocked by school policy: adult")]
    assert agent.agent is not None
    assert agent.agent.counters.cname_blocked == 2


def test_cname_inspection_can_be_switched_off(
    make_agent: AgentFactory, upstream: FakeUpstream
) -> None:
    upstream.add("www.alias.org", "CNAME", "cdn.evil.example.")
    agent = make_agent("[filter]\ncname_inspection = false\n")
    reply = ask(agent, "www.alias.org")
    assert "cdn.evil.example." in [rr.to_text() for rrset in reply.answer for rr in rrset]


# -- EDNS, truncation, TCP ----------------------------------------------------------------------


def test_udp_answer_larger_than_client_buffer_is_truncated_then_tcp_works(
    make_agent: AgentFactory, upstream: FakeUpstream
) -> None:
    upstream.behaviour.big_txt = 1000  # about 1 KB of TXT: over 512, under our 1232
    agent = make_agent()
    small = ask(agent, "txt.big.test", "TXT", use_edns=False)
    assert small.flags & dns.flags.TC
    assert not small.answer
    roomy = ask(agent, "txt.big.test", "TXT", use_edns=0, payload=4096)
    assert not roomy.flags & dns.flags.TC
    over_tcp = ask(agent, "txt.big.test", "TXT", tcp=True, use_edns=False)
    assert len(over_tcp.answer[0]) == len(roomy.answer[0]) == 5
    assert len(upstream.seen) == 1


def test_truncated_upstream_answer_is_retried_over_tcp(
    make_agent: AgentFactory, upstream: FakeUpstream
) -> None:
    upstream.behaviour.big_txt = 3000  # larger than the 1232 bytes we ask upstreams for
    agent = make_agent()
    reply = ask(agent, "txt.huge.test", "TXT", tcp=True)
    assert len(reply.answer[0]) == 15
    assert [s.transport for s in upstream.seen] == ["udp", "tcp"]


def test_tcp_pipelining_answers_out_of_order(
    make_agent: AgentFactory, upstream: FakeUpstream
) -> None:
    upstream.behaviour.delay = 0.5
    upstream.behaviour.slow = {"slow.example.org."}
    agent = make_agent()
    names = ["slow.example.org", "fast1.example.org", "fast2.example.org", "blocked.test"]
    queries = [dns.message.make_query(n, "A") for n in names]
    with socket.create_connection((HOST, agent.port), timeout=5) as conn:
        conn.sendall(
            b"".join(struct.pack("!H", len(w)) + w for w in (q.to_wire() for q in queries))
        )
        order = []
        for _ in queries:
            (length,) = struct.unpack("!H", _recv_exact(conn, 2))
            reply = dns.message.from_wire(_recv_exact(conn, length))
            order.append(reply.question[0].name.to_text().rstrip("."))
    assert sorted(order) == sorted(names)
    assert order[-1] == "slow.example.org"  # the slow one did not hold up the others


def test_tcp_idle_connections_are_closed(make_agent: AgentFactory) -> None:
    agent = make_agent(server="tcp_idle_timeout = 0.3")
    with socket.create_connection((HOST, agent.port), timeout=5) as conn:
        time.sleep(0.8)
        assert conn.recv(10) == b""  # closed by the server
    assert agent.agent is not None
    assert agent.agent.counters.tcp_idle_closed == 1


def test_tcp_connection_cap(make_agent: AgentFactory) -> None:
    agent = make_agent(server="tcp_max_connections = 2")
    held = [socket.create_connection((HOST, agent.port), timeout=5) for _ in range(2)]
    try:
        time.sleep(0.2)
        with socket.create_connection((HOST, agent.port), timeout=5) as extra:
            assert extra.recv(10) == b""
        # The connections within the cap still work.
        wire = dns.message.make_query("blocked.test", "A").to_wire()
        held[0].sendall(struct.pack("!H", len(wire)) + wire)
        (length,) = struct.unpack("!H", _recv_exact(held[0], 2))
        assert addresses(dns.message.from_wire(_recv_exact(held[0], length))) == ["0.0.0.0"]
    finally:
        for conn in held:
            conn.close()
    assert agent.agent is not None
    assert agent.agent.counters.tcp_refused == 1


# -- malformed input ----------------------------------------------------------------------------


def _raw_udp(agent: AgentThread, payload: bytes) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        s.sendto(payload, (HOST, agent.port))
        try:
            return s.recv(4096)
        except TimeoutError:
            return None


def test_malformed_queries_are_answered_or_dropped_and_counted(make_agent: AgentFactory) -> None:
    agent = make_agent()
    good = dns.message.make_query("blocked.test", "A").to_wire()
    assert _raw_udp(agent, b"\x01\x02\x03") is None  # not even a header: dropped
    assert _raw_udp(agent, good[:2] + b"\x80" + good[3:]) is None  # a response: dropped
    two_questions = good[:4] + b"\x00\x02" + good[6:]
    formerr = _raw_udp(agent, two_questions)
    assert formerr is not None
    assert formerr[:2] == good[:2]
    assert formerr[3] & 0x0F == dns.rcode.FORMERR
    bad_label = good[:12] + b"\x05ab\x00cd\x04test\x00\x00\x01\x00\x01"
    reply = _raw_udp(agent, bad_label)
    assert reply is not None
    assert reply[3] & 0x0F == dns.rcode.FORMERR
    notify = good[:2] + bytes([good[2] | 0x20]) + good[3:]  # opcode 4, NOTIFY
    reply = _raw_udp(agent, notify)
    assert reply is not None
    assert reply[3] & 0x0F == dns.rcode.NOTIMP
    badvers = dns.message.make_query("blocked.test", "A", use_edns=1).to_wire()
    reply = _raw_udp(agent, badvers)
    assert reply is not None
    assert dns.message.from_wire(reply).rcode() == dns.rcode.BADVERS
    for junk in (b"\xff" * 12, b"\x00" * 40, bytes(range(256))):
        _raw_udp(agent, junk)
    # The listener is still serving.
    assert addresses(ask(agent, "blocked.test")) == ["0.0.0.0"]
    assert agent.agent is not None
    counters = agent.agent.counters
    assert counters.dropped >= 2
    assert counters.formerr >= 3
    assert counters.internal_errors == 0


def test_malformed_message_over_tcp_gets_formerr(make_agent: AgentFactory) -> None:
    agent = make_agent()
    good = dns.message.make_query("blocked.test", "A").to_wire()
    bad = good[:4] + b"\x00\x00" + good[6:]
    with socket.create_connection((HOST, agent.port), timeout=5) as conn:
        conn.sendall(struct.pack("!H", len(bad)) + bad + struct.pack("!H", len(good)) + good)
        replies = []
        for _ in range(2):
            (length,) = struct.unpack("!H", _recv_exact(conn, 2))
            replies.append(_recv_exact(conn, length))
    assert replies[0][3] & 0x0F == dns.rcode.FORMERR
    assert addresses(dns.message.from_wire(replies[1])) == ["0.0.0.0"]


def test_non_internet_class_is_refused(make_agent: AgentFactory, upstream: FakeUpstream) -> None:
    agent = make_agent()
    query = dns.message.make_query("version.bind", "TXT", "CH")
    reply = dns.query.udp(query, HOST, port=agent.port, timeout=5)
    assert reply.rcode() == dns.rcode.REFUSED
    assert upstream.seen == []


# -- upstream failures --------------------------------------------------------------------------


def test_servfail_when_every_upstream_fails(
    make_agent: AgentFactory, upstream: FakeUpstream
) -> None:
    upstream.behaviour.silent = True
    agent = make_agent()
    assert ask(agent, "down.example.org").rcode() == dns.rcode.SERVFAIL
    # Blocking does not depend on upstreams at all.
    assert addresses(ask(agent, "blocked.test")) == ["0.0.0.0"]


def test_servfail_from_upstream_is_a_failure_not_an_answer(
    make_agent: AgentFactory, upstream: FakeUpstream
) -> None:
    upstream.behaviour.servfail = True
    good = FakeUpstream().start()
    try:
        agent = make_agent(upstreams=[upstream.url, good.url])
        assert addresses(ask(agent, "www.example.org")) == ["192.0.2.1"]
        assert len(good.seen) == 1
    finally:
        good.stop()


def test_failover_and_health(make_agent: AgentFactory, upstream: FakeUpstream) -> None:
    dead = FakeUpstream(behaviour=Behaviour(silent=True)).start()
    try:
        agent = make_agent(upstreams=[dead.url, upstream.url])
        for i in range(5):
            assert addresses(ask(agent, f"n{i}.example.org")) == ["192.0.2.1"]
        # After three failures in a row the dead upstream is skipped while the other is healthy.
        assert len(dead.seen) == 3
        assert len(upstream.seen) == 5
        health = _health(agent, 0)
        assert health.consecutive_failures == 3
        assert health.down_until > 0
    finally:
        dead.stop()


def test_upstream_trouble_is_logged(
    make_agent: AgentFactory, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    upstream.behaviour.silent = True
    agent = make_agent()
    with caplog.at_level(logging.WARNING, logger="schoolgate.agent.dns.forward"):
        for i in range(3):
            assert ask(agent, f"log{i}.example.org").rcode() == dns.rcode.SERVFAIL
        upstream.behaviour.silent = False
        time.sleep(5.1)  # the back-off after three failures in a row
        assert addresses(ask(agent, "back.example.org")) == ["192.0.2.1"]
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        "every upstream failed for log0.example.org., answered SERVFAIL" in m for m in messages
    )
    assert any("failed 3 times in a row (last: timed out)" in m for m in messages)
    assert any(m.endswith("answers again") for m in messages)


def test_answers_with_wrong_id_or_question_are_ignored(
    make_agent: AgentFactory, upstream: FakeUpstream
) -> None:
    upstream.behaviour.spoof_first = True
    agent = make_agent()
    assert addresses(ask(agent, "www.example.org")) == ["192.0.2.1"]
    assert _health(agent, 0).mismatched == 2


def test_serve_stale_when_upstreams_fail(make_agent: AgentFactory, upstream: FakeUpstream) -> None:
    upstream.behaviour.ttl = 1
    agent = make_agent()
    assert ask(agent, "stale.example.org").answer[0].ttl == 1
    upstream.behaviour.silent = True
    time.sleep(1.2)
    reply = ask(agent, "stale.example.org")
    assert addresses(reply) == ["192.0.2.1"]
    assert reply.answer[0].ttl == 30  # RFC 8767's recommended stale TTL
    assert agent.agent is not None
    assert agent.agent.counters.stale_answers == 1


def test_stale_answer_given_while_a_slow_upstream_refreshes(
    make_agent: AgentFactory, upstream: FakeUpstream
) -> None:
    upstream.behaviour.ttl = 1
    agent = make_agent("[cache]\nstale_answer_after = 0.1\n")
    ask(agent, "slowstale.example.org")
    time.sleep(1.2)
    upstream.behaviour.ttl = 300
    upstream.behaviour.delay = 0.3  # slower than the stale timer, faster than the timeout
    reply = ask(agent, "slowstale.example.org")
    assert reply.answer[0].ttl == 30
    time.sleep(0.6)
    refreshed = ask(agent, "slowstale.example.org")
    assert refreshed.answer[0].ttl > 290  # the refresh landed in the cache
    assert len(upstream.seen) == 2


def test_no_stale_answers_when_switched_off(
    make_agent: AgentFactory, upstream: FakeUpstream
) -> None:
    upstream.behaviour.ttl = 1
    agent = make_agent("[cache]\nserve_stale = false\n")
    ask(agent, "nostale.example.org")
    upstream.behaviour.silent = True
    time.sleep(1.2)
    assert ask(agent, "nostale.example.org").rcode() == dns.rcode.SERVFAIL


def test_tcp_upstream(make_agent: AgentFactory, upstream: FakeUpstream) -> None:
    agent = make_agent(upstreams=[upstream.tcp_url])
    for i in range(3):
        assert addresses(ask(agent, f"t{i}.example.org")) == ["192.0.2.1"]
    assert [s.transport for s in upstream.seen] == ["tcp"] * 3


def _health(agent: AgentThread, index: int) -> Health:
    assert agent.agent is not None
    assert agent.agent.pipeline is not None
    return agent.agent.pipeline.forwarder.upstreams.upstreams[index].health


# -- DNS over TLS ------------------------------------------------------------------------------


@pytest.fixture
def tls_upstream(tmp_path: Path) -> Iterator[tuple[FakeUpstream, ScratchPKI]]:
    pki = make_pki(tmp_path, "dns.test.example")
    server = FakeUpstream(tls=pki.server_context()).start()
    yield server, pki
    server.stop()


def test_dns_over_tls_upstream(
    make_agent: AgentFactory, tls_upstream: tuple[FakeUpstream, ScratchPKI]
) -> None:
    server, pki = tls_upstream
    agent = make_agent(
        upstreams=[server.tls_url("dns.test.example")],
        upstream_extra=f'tls_ca_file = "{pki.ca_file}"',
    )
    for i in range(3):
        assert addresses(ask(agent, f"tls{i}.example.org")) == ["192.0.2.1"]
    assert [s.transport for s in server.seen] == ["tls"] * 3


def test_dns_over_tls_rejects_a_certificate_for_another_name(
    make_agent: AgentFactory, tls_upstream: tuple[FakeUpstream, ScratchPKI]
) -> None:
    server, pki = tls_upstream
    agent = make_agent(
        upstreams=[server.tls_url("other.example")],
        upstream_extra=f'tls_ca_file = "{pki.ca_file}"',
    )
    assert ask(agent, "x.example.org").rcode() == dns.rcode.SERVFAIL
    assert server.seen == []


def test_dns_over_tls_checks_the_certificate_chain(
    make_agent: AgentFactory, tls_upstream: tuple[FakeUpstream, ScratchPKI]
) -> None:
    server, _pki = tls_upstream
    agent = make_agent(upstreams=[server.tls_url("dns.test.example")])  # system CAs only
    assert ask(agent, "x.example.org").rcode() == dns.rcode.SERVFAIL
    assert server.seen == []


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        assert chunk, "connection closed early"
        data += chunk
    return data
