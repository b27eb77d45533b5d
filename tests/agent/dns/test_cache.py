"""The answer cache, fed with real upstream responses scanned by the wire codec."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import dns.message
import pytest
from dnslib import AAAA, CNAME, EDNS0, NS, QTYPE, RR, SOA, A, DNSHeader, DNSQuestion, DNSRecord

from schoolgate.agent.dns.cache import STALE_ANSWER_TTL, AnswerCache, CacheEntry, CacheSettings
from schoolgate.agent.dns.wire import (
    NOERROR,
    NXDOMAIN,
    OPT_PLAIN,
    REFUSED,
    SERVFAIL,
    ScannedResponse,
    edns_header,
    parse_query,
    scan_response,
    splice,
    text_to_wire,
)
from tests.support.messages import reply

NOW = 1_000_000


def query_bytes(name: str, qtype: int = QTYPE.A, *, qid: int = 1, edns: bool = False) -> bytes:
    record = DNSRecord(DNSHeader(id=qid, rd=1), q=DNSQuestion(name, qtype))
    if edns:
        record.add_ar(EDNS0(udp_len=1232))
    return bytes(record.pack())


def upstream(
    name: str,
    qtype: int = QTYPE.A,
    *,
    rcode: int = NOERROR,
    answers: Sequence[Any] = (),
    authority: Sequence[Any] = (),
    additional: Sequence[Any] = (),
    tc: bool = False,
) -> tuple[bytes, ScannedResponse]:
    """(cache key, scanned response) for an upstream answer built by dnslib."""
    query = query_bytes(name, qtype)
    response = reply(
        query, rcode=rcode, answers=answers, authority=authority, additional=additional, tc=tc
    )
    q = parse_query(query)
    return q.key, scan_response(response, q.upstream_question)


def a_record(name: str, ttl: int, address: str = "192.0.2.1") -> Any:
    return RR(name, QTYPE.A, rdata=A(address), ttl=ttl)


def soa_record(zone: str, ttl: int, minimum: int) -> Any:
    return RR(
        zone,
        QTYPE.SOA,
        rdata=SOA("ns." + zone, "hostmaster." + zone, (1, 7200, 900, 1209600, minimum)),
        ttl=ttl,
    )


def positive(name: str = "example.com", *ttls: int) -> tuple[bytes, ScannedResponse]:
    records = [a_record(name, t, f"192.0.2.{i + 1}") for i, t in enumerate(ttls or (300,))]
    return upstream(name, answers=records)


def body_ttls(body: bytes) -> list[int]:
    parsed = DNSRecord.parse(body)
    return [rr.ttl for rr in (*parsed.rr, *parsed.auth, *parsed.ar)]


def arcount(body: bytes) -> int:
    return int(struct.unpack_from("!H", body, 10)[0])


def make_cache(**settings: Any) -> AnswerCache:
    return AnswerCache(CacheSettings(**settings))


# --- what is cached, and for how long -----------------------------------------------------------


def test_positive_answer_lives_for_its_lowest_ttl() -> None:
    cache = make_cache()
    key, scanned = upstream(
        "www.example.com",
        answers=[
            RR("www.example.com", QTYPE.CNAME, rdata=CNAME("web.example.com"), ttl=3600),
            a_record("web.example.com", 60),
        ],
        additional=[a_record("ns.example.com", 900)],
    )
    entry = cache.put(key, scanned, NOW)
    assert entry is not None
    assert entry.expires == NOW + 60
    assert entry.rcode == NOERROR
    assert entry.cnames == (text_to_wire("web.example.com"),)
    assert cache.get(key, NOW) is entry
    assert cache.get(key, NOW + 59) is entry
    assert cache.get(key, NOW + 60) is None
    assert len(cache) == 1


def test_unknown_key_is_a_miss() -> None:
    cache = make_cache()
    key, scanned = positive()
    cache.put(key, scanned, NOW)
    other, _ = positive("example.org")
    assert cache.get(other, NOW) is None
    assert cache.get_stale(other, NOW) is None


def test_ttls_are_raised_to_min_ttl() -> None:
    cache = make_cache(min_ttl=120)
    key, scanned = positive("example.com", 10, 500)
    entry = cache.put(key, scanned, NOW)
    assert entry is not None
    assert entry.expires == NOW + 120
    assert body_ttls(entry.bodies(NOW)[0]) == [120, 500]
    assert body_ttls(entry.bodies(NOW + 20)[0]) == [100, 480]


def test_ttls_are_lowered_to_max_ttl() -> None:
    cache = make_cache(max_ttl=50)
    key, scanned = positive("example.com", 3600, 40)
    entry = cache.put(key, scanned, NOW)
    assert entry is not None
    assert entry.expires == NOW + 40
    assert body_ttls(entry.bodies(NOW)[0]) == [50, 40]
    assert scanned.ttls == [3600, 40]  # the scanned response itself is left alone


def test_zero_ttl_answer_expires_at_once() -> None:
    cache = make_cache()
    key, scanned = positive("example.com", 0)
    entry = cache.put(key, scanned, NOW)
    assert entry is not None
    assert entry.expires == NOW
    assert cache.get(key, NOW) is None


@pytest.mark.parametrize(
    ("rcode", "soa_ttl", "minimum", "settings", "lifetime"),
    [
        pytest.param(NXDOMAIN, 900, 300, {}, 300, id="nxdomain-soa-minimum"),
        pytest.param(NXDOMAIN, 60, 300, {}, 60, id="nxdomain-soa-ttl"),
        pytest.param(NOERROR, 900, 300, {}, 300, id="nodata"),
        pytest.param(NXDOMAIN, 86400, 86400, {}, 3600, id="capped-by-default-max-negative"),
        pytest.param(
            NXDOMAIN, 900, 300, {"max_negative_ttl": 120}, 120, id="capped-by-max-negative"
        ),
        pytest.param(NOERROR, 30, 30, {"min_ttl": 100}, 100, id="raised-by-min-ttl"),
    ],
)
def test_negative_answers_with_soa_are_cached(
    rcode: int, soa_ttl: int, minimum: int, settings: dict[str, int], lifetime: int
) -> None:
    cache = make_cache(**settings)
    key, scanned = upstream(
        "missing.example.com", rcode=rcode, authority=[soa_record("example.com", soa_ttl, minimum)]
    )
    entry = cache.put(key, scanned, NOW)
    assert entry is not None
    assert entry.expires == NOW + lifetime
    assert entry.rcode == rcode
    assert cache.get(key, NOW + lifetime - 1) is entry
    assert cache.get(key, NOW + lifetime) is None


@pytest.mark.parametrize(
    ("rcode", "authority"),
    [
        pytest.param(NXDOMAIN, [], id="nxdomain-without-soa"),
        pytest.param(NOERROR, [], id="nodata-without-soa"),
        pytest.param(
            NOERROR,
            [RR("example.com", QTYPE.NS, rdata=NS("ns.example.com"), ttl=300)],
            id="referral-without-soa",
        ),
        pytest.param(SERVFAIL, [], id="servfail"),
        pytest.param(SERVFAIL, [soa_record("example.com", 300, 300)], id="servfail-with-soa"),
        pytest.param(REFUSED, [], id="refused"),
    ],
)
def test_uncacheable_answers(rcode: int, authority: list[Any]) -> None:
    cache = make_cache()
    key, scanned = upstream("x.example.com", rcode=rcode, authority=authority)
    assert cache.put(key, scanned, NOW) is None
    assert len(cache) == 0
    assert cache.get(key, NOW) is None
    assert cache.get_stale(key, NOW) is None


def test_truncated_answer_is_not_cached() -> None:
    cache = make_cache()
    key, scanned = upstream("big.example.com", answers=[a_record("big.example.com", 300)], tc=True)
    assert scanned.truncated
    assert cache.put(key, scanned, NOW) is None
    assert len(cache) == 0


def test_a_new_answer_replaces_the_old_one() -> None:
    cache = make_cache()
    key, first = positive("example.com", 300)
    _, second = positive("example.com", 30)
    cache.put(key, first, NOW)
    entry = cache.put(key, second, NOW + 5)
    assert cache.get(key, NOW + 6) is entry
    assert entry is not None
    assert entry.expires == NOW + 35
    assert len(cache) == 1
    assert cache.evictions == 0


# --- LRU -----------------------------------------------------------------------------------------


def test_least_recently_put_entry_is_evicted() -> None:
    cache = make_cache(max_entries=2)
    keys = []
    for name in ("a.example", "b.example", "c.example"):
        key, scanned = positive(name)
        keys.append(key)
        cache.put(key, scanned, NOW)
    assert len(cache) == 2
    assert cache.evictions == 1
    assert cache.get(keys[0], NOW) is None
    assert cache.get(keys[1], NOW) is not None
    assert cache.get(keys[2], NOW) is not None


def test_a_hit_makes_an_entry_recent() -> None:
    cache = make_cache(max_entries=2)
    key_a, scanned_a = positive("a.example")
    key_b, scanned_b = positive("b.example")
    key_c, scanned_c = positive("c.example")
    cache.put(key_a, scanned_a, NOW)
    cache.put(key_b, scanned_b, NOW)
    assert cache.get(key_a, NOW + 1) is not None
    cache.put(key_c, scanned_c, NOW + 1)
    assert cache.evictions == 1
    assert cache.get(key_b, NOW + 1) is None
    assert cache.get(key_a, NOW + 1) is not None
    assert cache.get(key_c, NOW + 1) is not None


def test_evictions_are_counted() -> None:
    cache = make_cache(max_entries=3)
    for i in range(10):
        key, scanned = positive(f"n{i}.example")
        cache.put(key, scanned, NOW)
    assert len(cache) == 3
    assert cache.evictions == 7


def test_clear() -> None:
    cache = make_cache()
    key, scanned = positive()
    cache.put(key, scanned, NOW)
    cache.clear()
    assert len(cache) == 0
    assert cache.get(key, NOW) is None


def test_lookup_is_the_raw_map_lookup() -> None:
    cache = make_cache()
    key, scanned = positive("example.com", 10)
    entry = cache.put(key, scanned, NOW)
    assert cache.lookup(key) is entry
    assert cache.lookup(b"nope") is None
    # The raw lookup does not check expiry: that is left to its caller.
    assert cache.lookup(key) is entry
    assert cache.get(key, NOW + 10) is None


# --- stale answers -------------------------------------------------------------------------------


def test_expired_entry_is_served_stale_within_the_window() -> None:
    cache = make_cache(stale_max_age=600)
    key, scanned = positive("example.com", 60)
    entry = cache.put(key, scanned, NOW)
    assert entry is not None
    assert entry.stale_until == NOW + 60 + 600
    assert cache.get(key, NOW + 60) is None
    assert cache.get_stale(key, NOW + 60) is entry
    assert cache.get_stale(key, NOW + 659) is entry
    assert cache.get_stale(key, NOW + 660) is None
    assert len(cache) == 1  # kept until evicted or replaced


def test_serve_stale_off_gives_nothing_stale() -> None:
    cache = make_cache(serve_stale=False, stale_max_age=600)
    key, scanned = positive("example.com", 60)
    entry = cache.put(key, scanned, NOW)
    assert entry is not None
    assert entry.stale_until == entry.expires
    assert cache.get_stale(key, NOW + 61) is None
    assert cache.get_stale(key, NOW) is None


def test_stale_bodies_carry_the_stale_answer_ttl() -> None:
    cache = make_cache()
    key, scanned = upstream(
        "www.example.com",
        answers=[
            RR("www.example.com", QTYPE.CNAME, rdata=CNAME("web.example.com"), ttl=3600),
            RR("web.example.com", QTYPE.AAAA, rdata=AAAA("2001:db8::1"), ttl=5),
        ],
    )
    entry = cache.put(key, scanned, NOW)
    assert entry is not None
    plain, edns_head = entry.stale_bodies()
    assert STALE_ANSWER_TTL == 30
    assert body_ttls(plain) == [30, 30]
    assert edns_head == edns_header(plain)


# --- counting TTLs down --------------------------------------------------------------------------


def test_bodies_count_ttls_down_per_second() -> None:
    cache = make_cache()
    key, scanned = positive("example.com", 300, 100)
    entry = cache.put(key, scanned, NOW)
    assert entry is not None
    for age in (0, 1, 2, 99, 100, 101, 299, 300, 5000):
        plain, edns_head = entry.bodies(NOW + age)
        assert body_ttls(plain) == [max(0, 300 - age), max(0, 100 - age)]
        assert edns_head == edns_header(plain)


def test_bodies_are_made_once_a_second() -> None:
    cache = make_cache()
    key, scanned = positive("example.com", 300)
    entry = cache.put(key, scanned, NOW)
    assert entry is not None
    first = entry.bodies(NOW + 3)
    client = object()
    entry.remember(client, b"finished answer")
    again = entry.bodies(NOW + 3)
    assert again[0] is first[0]
    assert entry.answer_for is client and entry.answer == b"finished answer"
    later = entry.bodies(NOW + 4)
    assert later[0] is not first[0]
    assert entry.answer_for is None  # the answer of an earlier second is dropped
    assert entry.second == NOW + 4


def test_get_counts_down_once_per_second() -> None:
    cache = make_cache()
    key, scanned = positive("example.com", 300)
    entry = cache.put(key, scanned, NOW)
    assert entry is not None
    # Nothing needed clamping, so the body as received serves the second it was stored in.
    assert entry.second == NOW
    assert entry.plain is entry.body
    assert cache.get(key, NOW + 7) is entry
    assert entry.second == NOW + 7
    assert body_ttls(entry.plain) == [293]
    assert entry.edns_head == edns_header(entry.plain)
    assert arcount(entry.plain) == 0


def test_a_cache_hit_spliced_for_a_client() -> None:
    cache = make_cache()
    key, scanned = positive("www.example.com", 300)
    cache.put(key, scanned, NOW)
    data = query_bytes("WWW.example.COM", qid=0x4444, edns=True)
    q = parse_query(data)
    assert q.key == key
    entry = cache.get(q.key, NOW + 100)
    assert entry is not None
    plain, edns = entry.bodies(NOW + 100)
    msg = dns.message.from_wire(splice(data, q, plain, edns, OPT_PLAIN))
    assert msg.id == 0x4444
    assert msg.question[0].name.to_text() == "WWW.example.COM."
    assert msg.answer[0].ttl == 200
    assert msg.edns == 0


# --- transient entries ---------------------------------------------------------------------------


def test_transient_entry_is_not_kept_and_not_clamped() -> None:
    cache = make_cache(min_ttl=600, max_ttl=700)
    _, scanned = upstream(
        "missing.example.com", rcode=NXDOMAIN, authority=[soa_record("example.com", 900, 10)]
    )
    entry = AnswerCache.transient(scanned, NOW)
    assert isinstance(entry, CacheEntry)
    assert len(cache) == 0
    assert entry.expires == NOW
    assert entry.stale_until == NOW
    assert entry.rcode == NXDOMAIN
    assert entry.ttls == [900]
    plain, edns_head = entry.bodies(NOW)
    assert body_ttls(plain) == [900]
    assert edns_head == edns_header(plain)


def test_transient_entry_for_an_uncacheable_answer() -> None:
    _, scanned = upstream("x.example.com", rcode=SERVFAIL)
    entry = AnswerCache.transient(scanned, NOW)
    assert entry.rcode == SERVFAIL
    plain, _ = entry.bodies(NOW)
    assert plain == scanned.body
    assert DNSRecord.parse(plain).header.rcode == SERVFAIL
