"""The hand-written wire codec, checked against dnslib and dnspython as independent decoders."""

from __future__ import annotations

import string
import struct
from collections.abc import Sequence
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import pytest
from dnslib import (
    AAAA,
    CNAME,
    EDNS0,
    NS,
    QTYPE,
    RR,
    SOA,
    TXT,
    A,
    DNSHeader,
    DNSLabel,
    DNSQuestion,
    DNSRecord,
    EDNSOption,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schoolgate.agent.dns.wire import (
    BADVERS,
    CD,
    EDNS_PAYLOAD,
    FORMERR,
    KEY_CD,
    KEY_DO,
    KEY_RD,
    NOERROR,
    NOTIMP,
    NXDOMAIN,
    OPT_DO,
    OPT_PLAIN,
    QR,
    RA,
    RD,
    REFUSED,
    SERVFAIL,
    TC,
    TYPE_HTTPS,
    MalformedQuery,
    MalformedResponse,
    Query,
    build_query,
    ede_option,
    edns_header,
    error_for,
    header_response,
    name_labels,
    opt_record,
    parse_query,
    patch_ttls,
    question_key,
    scan_response,
    splice,
    text_to_wire,
    truncated_response,
    wire_to_text,
)
from tests.support.messages import reply

HEADER = struct.Struct("!HHHHHH")
PROPERTY = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- builders ----------------------------------------------------------------------------------


def dnslib_query(
    name: str | Sequence[bytes],
    qtype: int = QTYPE.A,
    *,
    qclass: int = 1,
    qid: int = 0x1234,
    rd: bool = True,
    cd: bool = False,
    payload: int | None = None,
    do: bool = False,
    version: int = 0,
) -> bytes:
    """A query packed by dnslib; ``payload`` adds an OPT record."""
    label = DNSLabel(name if isinstance(name, str) else list(name))
    record = DNSRecord(
        DNSHeader(id=qid, rd=int(rd), cd=int(cd)), q=DNSQuestion(label, qtype, qclass)
    )
    if payload is not None:
        record.add_ar(EDNS0(udp_len=payload, flags="do" if do else "", version=version))
    return bytes(record.pack())


def raw_query(
    qname: bytes,
    qtype: int = 1,
    qclass: int = 1,
    *,
    qid: int = 0x1234,
    flags: int = RD,
    counts: tuple[int, int, int, int] = (1, 0, 0, 0),
    tail: bytes = b"",
) -> bytes:
    """A query assembled byte by byte, for the shapes no library will produce."""
    return HEADER.pack(qid, flags, *counts) + qname + struct.pack("!HH", qtype, qclass) + tail


def raw_opt(
    payload: int = 1232, ttl: int = 0, rdata: bytes = b"", owner: bytes = b"\x00", rtype: int = 41
) -> bytes:
    return owner + struct.pack("!HHIH", rtype, payload, ttl, len(rdata)) + rdata


def question_of(query: bytes) -> bytes:
    """The lowercased question we would send upstream for ``query``."""
    return parse_query(query).upstream_question


def soa(owner: str, ttl: int, minimum: int) -> Any:
    return RR(
        owner,
        QTYPE.SOA,
        rdata=SOA("ns1." + owner, "hostmaster." + owner, (2024010101, 7200, 900, 1209600, minimum)),
        ttl=ttl,
    )


def rr_view(rr: Any) -> tuple[str, int, int, str]:
    """What a record means, for comparing records across a rewrite (names compare lowercased)."""
    return (str(rr.rname).lower(), rr.rtype, rr.rclass, str(rr.rdata).lower())


def records(msg: Any) -> list[Any]:
    return [*msg.rr, *msg.auth, *[rr for rr in msg.ar if rr.rtype != QTYPE.OPT]]


# --- parse_query: good queries -----------------------------------------------------------------


def test_key_is_lowercased_name_type_class_and_flag_byte() -> None:
    data = dnslib_query("WWW.Example.COM", QTYPE.A)
    q = parse_query(data)
    assert q.key == b"\x03www\x07example\x03com\x00" + b"\x00\x01\x00\x01" + bytes([KEY_RD])
    assert q.question == b"\x03WWW\x07Example\x03COM\x00\x00\x01\x00\x01"
    assert q.qname == b"\x03www\x07example\x03com\x00"
    assert q.upstream_question == q.key[:-1]
    assert (q.qtype, q.qclass) == (1, 1)
    assert q.qend == 12 + len(q.question) == len(data)
    assert q.flags == RD
    assert q.udp_size == 0
    assert not q.edns
    assert not q.do
    assert q.labels == [0, 4, 12]
    assert q.name_text() == "www.example.com."


def test_query_from_dnspython_with_edns_and_do() -> None:
    msg = dns.message.make_query(
        "Mixed.Case.Example.", "AAAA", use_edns=0, payload=4096, want_dnssec=True
    )
    msg.id = 4242
    q = parse_query(msg.to_wire())
    assert q.qname == text_to_wire("mixed.case.example")
    assert q.question[:-4] == b"\x05Mixed\x04Case\x07Example\x00"
    assert q.qtype == dns.rdatatype.AAAA
    assert q.qclass == 1
    assert q.udp_size == 4096
    assert q.edns
    assert q.do
    assert q.key[-1] == KEY_RD | KEY_DO


def test_question_key_is_the_key_a_query_gets() -> None:
    msg = dns.message.make_query("WWW.Example.org", "AAAA", use_edns=0, want_dnssec=True)
    q = parse_query(msg.to_wire())
    assert question_key(text_to_wire("www.example.org"), 28, KEY_RD | KEY_DO) == q.key


def test_query_from_dnspython_without_edns() -> None:
    msg = dns.message.make_query("example.org", "TXT")
    q = parse_query(msg.to_wire())
    assert q.udp_size == 0
    assert not q.edns
    assert not q.do
    assert q.qtype == dns.rdatatype.TXT
    assert q.key[-1] == KEY_RD


def test_same_question_with_different_ids_shares_a_key() -> None:
    a = parse_query(dnslib_query("example.com", qid=1))
    b = parse_query(dnslib_query("EXAMPLE.com", qid=65535))
    assert a.key == b.key
    assert a.question != b.question


@pytest.mark.parametrize(
    ("payload", "expected"),
    [(0, 512), (100, 512), (511, 512), (512, 512), (513, 513), (1232, 1232), (65535, 65535)],
)
def test_udp_size_is_at_least_512_with_edns(payload: int, expected: int) -> None:
    q = parse_query(dnslib_query("example.com", payload=payload))
    assert q.edns
    assert q.udp_size == expected


@pytest.mark.parametrize(
    ("rd", "cd", "do", "flag_byte"),
    [
        (False, False, False, 0),
        (True, False, False, KEY_RD),
        (False, True, False, KEY_CD),
        (False, False, True, KEY_DO),
        (True, True, True, KEY_RD | KEY_CD | KEY_DO),
    ],
)
def test_rd_cd_and_do_bits_are_part_of_the_key(
    rd: bool, cd: bool, do: bool, flag_byte: int
) -> None:
    q = parse_query(dnslib_query("example.com", rd=rd, cd=cd, payload=1232, do=do))
    assert q.key[-1] == flag_byte
    assert q.do is do
    assert bool(q.flags & RD) is rd
    assert bool(q.flags & CD) is cd
    # The bits change the key, never the question we ask upstream.
    assert q.upstream_question == question_of(dnslib_query("example.com"))


def test_https_type_is_not_lowercased_in_the_key() -> None:
    # Type 65 is b"\x00A": lowering the whole key would turn it into type 97.
    q = parse_query(dnslib_query("Example.COM", TYPE_HTTPS))
    assert q.qtype == TYPE_HTTPS
    assert q.key[-5:-1] == b"\x00A\x00\x01"
    other = parse_query(dnslib_query("example.com", 97))
    assert other.qtype == 97
    assert q.key != other.key


def test_type_and_class_bytes_in_letter_range_survive() -> None:
    # 0x4142 = b"AB", 0x5A41 = b"ZA": all inside A-Z.
    q = parse_query(raw_query(b"\x01X\x00", qtype=0x4142, qclass=0x5A41))
    assert (q.qtype, q.qclass) == (0x4142, 0x5A41)
    assert q.qname == b"\x01x\x00"


def test_root_name_query() -> None:
    q = parse_query(dnslib_query(".", QTYPE.NS))
    assert q.qname == b"\x00"
    assert q.labels == []
    assert q.name_text() == "."
    assert q.qtype == QTYPE.NS


def test_name_of_exactly_255_octets_is_accepted() -> None:
    labels = [b"a" * 63, b"b" * 63, b"c" * 63, b"d" * 61]
    wire = b"".join(bytes([len(x)]) + x for x in labels) + b"\x00"
    assert len(wire) == 255
    q = parse_query(raw_query(wire))
    assert q.qname == wire
    assert q.labels == [0, 64, 128, 192]


# --- parse_query: malformed datagrams -----------------------------------------------------------


_GOOD_NAME = b"\x07example\x03com\x00"
_TOO_LONG_NAME = b"".join(bytes([63]) + bytes([97 + i]) * 63 for i in range(4)) + b"\x00"


@pytest.mark.parametrize(
    ("data", "answerable", "rcode"),
    [
        pytest.param(b"", False, FORMERR, id="empty"),
        pytest.param(
            b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00", False, FORMERR, id="11-bytes"
        ),
        pytest.param(HEADER.pack(1, RD, 1, 0, 0, 0), True, FORMERR, id="header-only"),
        pytest.param(HEADER.pack(1, RD, 1, 0, 0, 0) + b"\x00\x00\x01\x00", True, FORMERR, id="16"),
        pytest.param(raw_query(_GOOD_NAME, flags=QR | RD), False, FORMERR, id="qr-set"),
        pytest.param(raw_query(_GOOD_NAME, flags=QR | 0x0800), False, FORMERR, id="qr-and-opcode"),
        pytest.param(raw_query(_GOOD_NAME, flags=1 << 11), True, NOTIMP, id="opcode-iquery"),
        pytest.param(raw_query(_GOOD_NAME, flags=2 << 11), True, NOTIMP, id="opcode-status"),
        pytest.param(raw_query(_GOOD_NAME, flags=4 << 11), True, NOTIMP, id="opcode-notify"),
        pytest.param(raw_query(_GOOD_NAME, flags=5 << 11), True, NOTIMP, id="opcode-update"),
        pytest.param(raw_query(_GOOD_NAME, counts=(0, 0, 0, 0)), True, FORMERR, id="qdcount-0"),
        pytest.param(
            raw_query(_GOOD_NAME, counts=(2, 0, 0, 0), tail=_GOOD_NAME + b"\x00\x01\x00\x01"),
            True,
            FORMERR,
            id="qdcount-2",
        ),
        pytest.param(raw_query(_GOOD_NAME, counts=(1, 1, 0, 0)), True, FORMERR, id="answer-count"),
        pytest.param(raw_query(_GOOD_NAME, counts=(1, 0, 1, 0)), True, FORMERR, id="ns-count"),
        pytest.param(
            raw_query(_GOOD_NAME, counts=(1, 0, 0, 2), tail=raw_opt() + raw_opt()),
            True,
            FORMERR,
            id="two-additional",
        ),
        pytest.param(raw_query(_GOOD_NAME, tail=b"\x00"), True, FORMERR, id="trailing-byte"),
        pytest.param(raw_query(_GOOD_NAME, tail=raw_opt()), True, FORMERR, id="opt-not-counted"),
        pytest.param(
            raw_query(_GOOD_NAME, counts=(1, 0, 0, 1), tail=raw_opt(rtype=1)),
            True,
            FORMERR,
            id="additional-not-opt",
        ),
        pytest.param(
            raw_query(_GOOD_NAME, counts=(1, 0, 0, 1), tail=raw_opt(owner=b"\x01a\x00")),
            True,
            FORMERR,
            id="opt-owner-not-root",
        ),
        pytest.param(
            raw_query(_GOOD_NAME, counts=(1, 0, 0, 1), tail=raw_opt()[:-1]),
            True,
            FORMERR,
            id="opt-truncated",
        ),
        pytest.param(
            raw_query(_GOOD_NAME, counts=(1, 0, 0, 1), tail=raw_opt()[:-2] + b"\x00\x08"),
            True,
            FORMERR,
            id="opt-rdlen-past-end",
        ),
        pytest.param(
            raw_query(_GOOD_NAME, counts=(1, 0, 0, 1), tail=raw_opt() + b"\x00\x00"),
            True,
            FORMERR,
            id="bytes-after-opt",
        ),
        pytest.param(
            raw_query(_GOOD_NAME, counts=(1, 0, 0, 1), tail=raw_opt(ttl=1 << 16)),
            True,
            BADVERS,
            id="edns-version-1",
        ),
        pytest.param(raw_query(_TOO_LONG_NAME), True, FORMERR, id="name-256-octets"),
        pytest.param(
            HEADER.pack(1, RD, 1, 0, 0, 0) + b"\x05abcde\x03fgh", True, FORMERR, id="name-past-end"
        ),
        pytest.param(
            HEADER.pack(1, RD, 1, 0, 0, 0) + _GOOD_NAME + b"\x00\x01",
            True,
            FORMERR,
            id="question-truncated",
        ),
    ],
)
def test_malformed_queries(data: bytes, answerable: bool, rcode: int) -> None:
    with pytest.raises(MalformedQuery) as info:
        parse_query(data)
    assert info.value.answerable is answerable
    assert info.value.rcode == rcode
    assert info.value.reason == str(info.value)
    assert info.value.reason


def test_edns_version_1_from_dnslib_is_badvers() -> None:
    with pytest.raises(MalformedQuery) as info:
        parse_query(dnslib_query("example.com", payload=1232, version=1))
    assert info.value.rcode == BADVERS == 16
    assert info.value.answerable


@pytest.mark.parametrize("size", [12, 13, 16])
def test_short_responses_are_never_answered(size: int) -> None:
    formerr = error_for(raw_query(_GOOD_NAME), FORMERR)
    assert len(formerr) == 12
    data = (formerr + b"\x00" * 4)[:size]
    assert data[2] & 0x80  # QR: this is a response
    with pytest.raises(MalformedQuery) as info:
        parse_query(data)
    assert not info.value.answerable


@pytest.mark.parametrize(
    "question",
    [
        # "\x04a\x00bc": a 4-octet label holding a zero byte; the fast parse stops at the zero
        # and takes "bc\x00\x01" for type and class.
        pytest.param(b"\x04a\x00bc\x00\x01", id="zero-byte-inside-label"),
        pytest.param(b"\x05ab\x00\x00\x01\x00\x01", id="label-runs-past-name-end"),
        pytest.param(b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01", id="label-longer-than-63"),
        pytest.param(b"\xc0\x0c\x00\x00\x01\x00\x01", id="compression-pointer"),
        pytest.param(b"\x01a\x7fbcd\x00\x00\x01\x00\x01", id="length-byte-127"),
    ],
)
def test_labels_that_do_not_add_up(question: bytes) -> None:
    # The fast parse only looks for the first zero byte; the labels are checked later.
    q = parse_query(HEADER.pack(1, RD, 1, 0, 0, 0) + question)
    with pytest.raises(MalformedQuery) as info:
        _ = q.labels
    assert info.value.answerable
    assert info.value.rcode == FORMERR
    with pytest.raises(MalformedQuery):
        name_labels(q.qname)


def test_name_labels_of_good_names() -> None:
    assert name_labels(b"\x00") == []
    assert name_labels(text_to_wire("a.bc.def")) == [0, 2, 5]
    assert name_labels(b"\x3f" + b"x" * 63 + b"\x00") == [0]


# --- error_for ---------------------------------------------------------------------------------


def test_error_for_formerr_is_header_only() -> None:
    data = raw_query(b"\x03a\x00b\x00", qid=0xABCD, flags=RD | CD)
    out = error_for(data, FORMERR)
    assert len(out) == 12
    qid, flags, qd, an, ns, ar = HEADER.unpack(out)
    assert qid == 0xABCD
    assert flags == QR | RD | RA | FORMERR  # CD is not echoed for a query we could not read
    assert (qd, an, ns, ar) == (0, 0, 0, 0)
    msg = dns.message.from_wire(out)
    assert msg.id == 0xABCD
    assert msg.rcode() == dns.rcode.FORMERR
    assert msg.flags & dns.flags.QR


def test_error_for_notimp_keeps_the_opcode() -> None:
    data = raw_query(_GOOD_NAME, qid=7, flags=(4 << 11) | RD)
    with pytest.raises(MalformedQuery) as info:
        parse_query(data)
    out = error_for(data, info.value.rcode)
    msg = dns.message.from_wire(out)
    assert msg.rcode() == dns.rcode.NOTIMP
    assert msg.opcode() == dns.opcode.NOTIFY
    assert msg.id == 7
    assert len(out) == 12


def test_error_for_badvers_carries_an_opt_with_the_extended_rcode() -> None:
    data = dnslib_query("example.com", qid=99, payload=4096, version=1)
    with pytest.raises(MalformedQuery) as info:
        parse_query(data)
    out = error_for(data, info.value.rcode)
    qid, flags, qd, an, ns, ar = HEADER.unpack_from(out)
    assert qid == 99
    assert flags & 0xF == 0  # the low four bits of 16
    assert (qd, an, ns, ar) == (0, 0, 0, 1)
    opt_type, _payload, ttl, rdlen = struct.unpack_from("!HHIH", out, 13)
    assert out[12] == 0
    assert opt_type == 41
    assert ttl >> 24 == 1  # extended rcode: 1 << 4 | 0 == 16
    assert rdlen == 0
    assert len(out) == 12 + 11
    msg = dns.message.from_wire(out)
    assert msg.rcode() == dns.rcode.BADVERS
    assert msg.edns == 0


# --- scan_response and patch_ttls ---------------------------------------------------------------


def _answer_set() -> tuple[bytes, bytes]:
    query = dnslib_query("www.example.com", QTYPE.A)
    response = reply(
        query,
        answers=[
            RR("www.example.com", QTYPE.CNAME, rdata=CNAME("web.example.com"), ttl=3600),
            RR("web.example.com", QTYPE.A, rdata=A("192.0.2.1"), ttl=300),
            RR("web.example.com", QTYPE.A, rdata=A("192.0.2.2"), ttl=299),
        ],
        authority=[RR("example.com", QTYPE.NS, rdata=NS("ns1.example.com"), ttl=86400)],
        additional=[RR("ns1.example.com", QTYPE.A, rdata=A("192.0.2.53"), ttl=7)],
    )
    return query, response


def test_ttl_offsets_point_at_every_ttl() -> None:
    query, response = _answer_set()
    s = scan_response(response, question_of(query))
    assert s.ttls == [3600, 300, 299, 86400, 7]
    assert len(s.ttl_offsets) == 5
    for off, ttl in zip(s.ttl_offsets, s.ttls, strict=True):
        assert struct.unpack_from("!I", s.body, off)[0] == ttl
    assert s.rcode == NOERROR
    assert s.answers == 3
    assert not s.truncated
    assert s.negative_ttl is None


@pytest.mark.parametrize("age", [0, 1, 6, 7, 8, 299, 300, 3600, 10**6])
def test_patch_ttls_counts_down_and_never_below_zero(age: int) -> None:
    query, response = _answer_set()
    s = scan_response(response, question_of(query))
    patched = patch_ttls(s.body, s.ttl_offsets, s.ttls, age)
    parsed = DNSRecord.parse(patched)
    assert [rr.ttl for rr in records(parsed)] == [max(0, t - age) for t in s.ttls]
    original = DNSRecord.parse(response)
    assert [rr_view(rr) for rr in records(parsed)] == [rr_view(rr) for rr in records(original)]
    # Nothing but the TTLs changes.
    ttl_bytes = {off + i for off in s.ttl_offsets for i in range(4)}
    assert len(patched) == len(s.body)
    assert all(patched[i] == s.body[i] for i in range(len(patched)) if i not in ttl_bytes)


def test_patch_ttls_with_age_zero_is_identity_and_does_not_mutate() -> None:
    query, response = _answer_set()
    s = scan_response(response, question_of(query))
    before = s.body
    assert patch_ttls(s.body, s.ttl_offsets, s.ttls, 0) == before
    assert s.body is before


def test_body_has_id_zero_and_the_lowercased_question() -> None:
    query = dnslib_query("www.example.com", QTYPE.A, qid=0x5151)
    # An upstream may echo the question with its letter case changed (0x20 randomisation).
    response = reply(
        dnslib_query("WwW.ExAmPlE.CoM", QTYPE.A, qid=0x5151),
        answers=[RR("WwW.ExAmPlE.CoM", QTYPE.A, rdata=A("192.0.2.1"), ttl=60)],
    )
    question = question_of(query)
    s = scan_response(response, question)
    assert s.body[:2] == b"\x00\x00"
    assert s.body[12 : 12 + len(question)] == question
    assert s.body[2:12] == response[2:12]
    assert DNSRecord.parse(s.body).rr[0].rdata == A("192.0.2.1")


@pytest.mark.parametrize("position", ["only", "first", "middle", "last"])
def test_opt_is_removed_wherever_it_sits(position: str) -> None:
    query = dnslib_query("example.com", QTYPE.NS)
    glue = [
        RR("ns1.example.com", QTYPE.A, rdata=A("192.0.2.1"), ttl=100),
        RR("ns2.example.com", QTYPE.A, rdata=A("192.0.2.2"), ttl=200),
    ]
    edns = EDNS0(udp_len=1232, flags="do")
    additional: list[Any] = {
        "only": [edns],
        "first": [edns, *glue],
        "middle": [glue[0], edns, glue[1]],
        "last": [*glue, edns],
    }[position]
    response = reply(
        query,
        answers=[
            RR("example.com", QTYPE.NS, rdata=NS("ns1.example.com"), ttl=300),
            RR("example.com", QTYPE.NS, rdata=NS("ns2.example.com"), ttl=300),
        ],
        additional=additional,
    )
    s = scan_response(response, question_of(query))
    # The body ends where the OPT began: additional records after it go with it, because
    # cutting it out of their middle would break compression pointers into them.
    kept = additional[: additional.index(edns)]
    assert HEADER.unpack_from(s.body)[5] == len(kept)
    parsed = DNSRecord.parse(s.body)
    assert all(rr.rtype != QTYPE.OPT for rr in parsed.ar)
    original = DNSRecord.parse(response)
    expected = [*original.rr, *original.auth, *original.ar[: len(kept)]]
    assert [rr_view(rr) for rr in records(parsed)] == [rr_view(rr) for rr in expected]
    assert [rr.ttl for rr in records(parsed)] == s.ttls
    for off, ttl in zip(s.ttl_offsets, s.ttls, strict=True):
        assert struct.unpack_from("!I", s.body, off)[0] == ttl


def test_records_after_a_leading_opt_are_dropped_not_corrupted() -> None:
    query = dnslib_query("example.com", QTYPE.NS)
    additional = [
        EDNS0(udp_len=1232),
        RR("ns2.example.com", QTYPE.A, rdata=A("192.0.2.2"), ttl=300),
        # dnslib compresses this owner to a pointer at the owner of the record above, which
        # comes after the OPT record.
        RR("ns2.example.com", QTYPE.AAAA, rdata=AAAA("2001:db8::2"), ttl=300),
    ]
    response = reply(
        query,
        answers=[RR("example.com", QTYPE.NS, rdata=NS("ns1.example.com"), ttl=300)],
        additional=additional,
    )
    assert [str(rr.rname) for rr in DNSRecord.parse(response).ar[1:]] == [
        "ns2.example.com.",
        "ns2.example.com.",
    ]
    s = scan_response(response, question_of(query))
    parsed = DNSRecord.parse(s.body)
    assert parsed.ar == []
    assert [str(rr.rname) for rr in parsed.rr] == ["example.com."]
    assert len(s.ttls) == 1


def test_ttl_with_top_bit_set_is_treated_as_zero() -> None:
    query = dnslib_query("example.com", QTYPE.A)
    response = reply(
        query, answers=[RR("example.com", QTYPE.A, rdata=A("192.0.2.1"), ttl=0xFFFFFFFF)]
    )
    s = scan_response(response, question_of(query))
    assert s.ttls == [0]


@pytest.mark.parametrize(
    ("ext_rcode", "rcode", "expected"),
    [(0, NOERROR, 0), (0, NXDOMAIN, 3), (1, NOERROR, BADVERS), (1, SERVFAIL, 18)],
)
def test_extended_rcode_from_opt(ext_rcode: int, rcode: int, expected: int) -> None:
    query = dnslib_query("example.com")
    response = reply(query, rcode=rcode, additional=[EDNS0(udp_len=1232, ext_rcode=ext_rcode)])
    s = scan_response(response, question_of(query))
    assert s.rcode == expected
    assert HEADER.unpack_from(s.body)[5] == 0


def test_extended_dns_error_is_picked_from_the_opt() -> None:
    query = dnslib_query("blocked.example")
    ede = struct.pack("!H", 17) + b"filtered upstream"
    response = reply(
        query, rcode=NXDOMAIN, additional=[EDNS0(udp_len=1232, opts=[EDNSOption(15, ede)])]
    )
    s = scan_response(response, question_of(query))
    assert s.ede == ede_option(17, "filtered upstream")
    assert s.rcode == NXDOMAIN


def test_opt_outside_the_additional_section_is_refused() -> None:
    query = dnslib_query("example.com")
    response = reply(query, authority=[EDNS0(udp_len=1232)])
    with pytest.raises(MalformedResponse, match="OPT"):
        scan_response(response, question_of(query))


@pytest.mark.parametrize(
    ("rcode", "with_answer", "soa_ttl", "minimum", "expected"),
    [
        pytest.param(NXDOMAIN, False, 900, 300, 300, id="nxdomain-minimum-smaller"),
        pytest.param(NXDOMAIN, False, 900, 2**31, 0, id="minimum-with-top-bit-is-zero"),
        pytest.param(NXDOMAIN, False, 60, 300, 60, id="nxdomain-ttl-smaller"),
        pytest.param(NOERROR, False, 120, 3600, 120, id="nodata-ttl-smaller"),
        pytest.param(NOERROR, False, 3600, 5, 5, id="nodata-minimum-smaller"),
        pytest.param(NOERROR, True, 900, 300, None, id="positive-with-soa"),
        pytest.param(SERVFAIL, False, 900, 300, None, id="servfail-with-soa"),
        pytest.param(NXDOMAIN, False, None, None, None, id="nxdomain-without-soa"),
        pytest.param(NOERROR, False, None, None, None, id="nodata-without-soa"),
    ],
)
def test_negative_ttl(
    rcode: int, with_answer: bool, soa_ttl: int | None, minimum: int | None, expected: int | None
) -> None:
    query = dnslib_query("missing.example.com", QTYPE.AAAA)
    answers = (
        [RR("missing.example.com", QTYPE.AAAA, rdata=AAAA("2001:db8::1"), ttl=50)]
        if with_answer
        else []
    )
    authority = [] if soa_ttl is None or minimum is None else [soa("example.com", soa_ttl, minimum)]
    response = reply(query, rcode=rcode, answers=answers, authority=authority)
    s = scan_response(response, question_of(query))
    assert s.negative_ttl == expected
    assert s.rcode == rcode


def test_soa_as_the_answer_is_not_negative() -> None:
    query = dnslib_query("example.com", QTYPE.SOA)
    response = reply(query, answers=[soa("example.com", 3600, 60)])
    s = scan_response(response, question_of(query))
    assert s.negative_ttl is None
    assert s.answers == 1


def test_cname_targets_are_decoded_through_compression_pointers() -> None:
    query = dnslib_query("www.example.com", QTYPE.A)
    response = reply(
        query,
        answers=[
            RR("www.example.com", QTYPE.CNAME, rdata=CNAME("Web.Example.COM"), ttl=60),
            RR("web.example.com", QTYPE.CNAME, rdata=CNAME("edge.cdn.example.net"), ttl=60),
            RR("edge.cdn.example.net", QTYPE.CNAME, rdata=CNAME("x.edge.cdn.example.net"), ttl=60),
            RR("x.edge.cdn.example.net", QTYPE.A, rdata=A("192.0.2.7"), ttl=60),
        ],
    )
    # dnslib compressed the last target to "x" and a pointer to the one before it.
    assert b"\x01x\xc0" in response
    s = scan_response(response, question_of(query))
    assert s.cnames == [
        text_to_wire("web.example.com"),
        text_to_wire("edge.cdn.example.net"),
        text_to_wire("x.edge.cdn.example.net"),
    ]


def test_cnames_outside_the_answer_section_are_not_targets() -> None:
    query = dnslib_query("www.example.com", QTYPE.A)
    response = reply(
        query,
        additional=[RR("other.example.com", QTYPE.CNAME, rdata=CNAME("x.example.net"), ttl=60)],
    )
    assert scan_response(response, question_of(query)).cnames == []


def test_truncated_flag() -> None:
    query = dnslib_query("big.example.com", QTYPE.TXT)
    s = scan_response(reply(query, tc=True), question_of(query))
    assert s.truncated
    assert not scan_response(reply(query), question_of(query)).truncated


def test_question_match_ignores_case_but_not_name_type_or_class() -> None:
    query = dnslib_query("example.com", QTYPE.A)
    question = question_of(query)
    for other in (
        dnslib_query("example.net", QTYPE.A),
        dnslib_query("example.com", QTYPE.AAAA),
        dnslib_query("example.com", QTYPE.A, qclass=3),
        dnslib_query("www.example.com", QTYPE.A),
    ):
        with pytest.raises(MalformedResponse, match="question"):
            scan_response(reply(other), question)


def test_a_query_is_not_a_response() -> None:
    query = dnslib_query("example.com")
    with pytest.raises(MalformedResponse, match="QR"):
        scan_response(query, question_of(query))


@pytest.mark.parametrize("qdcount", [0, 2])
def test_response_without_exactly_one_question(qdcount: int) -> None:
    query = dnslib_query("example.com")
    response = bytearray(reply(query))
    response[4:6] = struct.pack("!H", qdcount)
    with pytest.raises(MalformedResponse):
        scan_response(bytes(response), question_of(query))


def test_every_prefix_of_a_response_is_refused() -> None:
    query, response = _answer_set()
    question = question_of(query)
    scan_response(response, question)
    for cut in range(len(response)):
        with pytest.raises(MalformedResponse):
            scan_response(response[:cut], question)


def test_trailing_bytes_are_refused() -> None:
    query, response = _answer_set()
    with pytest.raises(MalformedResponse, match="trailing"):
        scan_response(response + b"\x00", question_of(query))


def test_record_count_larger_than_the_records() -> None:
    query, response = _answer_set()
    bad = bytearray(response)
    bad[6:8] = struct.pack("!H", 4)
    with pytest.raises(MalformedResponse):
        scan_response(bytes(bad), question_of(query))


def _cname_response(question: bytes, rdata_at: int, rdata: bytes) -> bytes:
    """One CNAME answer whose rdata is ``rdata``; ``rdata_at`` is where the rdata starts."""
    header = HEADER.pack(1, QR | RD | RA, 1, 1, 0, 0)
    record = b"\xc0\x0c" + struct.pack("!HHIH", 5, 1, 60, len(rdata))
    msg = header + question + record + rdata
    assert msg.index(rdata, 12 + len(question) + len(record)) == rdata_at
    return msg


def test_compression_pointer_to_itself_is_a_loop() -> None:
    question = question_of(dnslib_query("example.com"))
    at = 12 + len(question) + 12
    msg = _cname_response(question, at, struct.pack("!H", 0xC000 | at))
    with pytest.raises(MalformedResponse, match="loop"):
        scan_response(msg, question)


def test_compression_pointers_pointing_at_each_other_are_a_loop() -> None:
    question = question_of(dnslib_query("example.com"))
    at = 12 + len(question) + 12
    msg = _cname_response(question, at, struct.pack("!HH", 0xC000 | (at + 2), 0xC000 | at))
    with pytest.raises(MalformedResponse, match="loop"):
        scan_response(msg, question)


def test_label_loop_through_a_pointer_is_refused() -> None:
    # "a" then a pointer back to "a": grows without end unless the length limit stops it.
    question = question_of(dnslib_query("example.com"))
    at = 12 + len(question) + 12
    msg = _cname_response(question, at, b"\x01a" + struct.pack("!H", 0xC000 | at))
    with pytest.raises(MalformedResponse):
        scan_response(msg, question)


def test_cname_target_longer_than_255_octets_is_refused() -> None:
    question = question_of(dnslib_query("example.com"))
    target = b"".join(b"\x3f" + b"t" * 63 for _ in range(4)) + b"\x00"
    msg = _cname_response(question, 12 + len(question) + 12, target)
    with pytest.raises(MalformedResponse, match="255"):
        scan_response(msg, question)


def test_unknown_label_type_is_refused() -> None:
    question = question_of(dnslib_query("example.com"))
    header = HEADER.pack(1, QR | RD | RA, 1, 1, 0, 0)
    msg = header + question + b"\x41a\x00" + struct.pack("!HHIH", 1, 1, 60, 4) + b"\x7f\x00\x00\x01"
    with pytest.raises(MalformedResponse, match="label type"):
        scan_response(msg, question)


def test_record_data_running_past_the_end_is_refused() -> None:
    question = question_of(dnslib_query("example.com"))
    header = HEADER.pack(1, QR | RD | RA, 1, 1, 0, 0)
    msg = header + question + b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 5) + b"\x7f\x00\x00\x01"
    with pytest.raises(MalformedResponse, match="truncated"):
        scan_response(msg, question)


# --- answering: splice, truncated_response, header_response -------------------------------------


def _stored(query_for_upstream: bytes) -> tuple[bytes, bytes]:
    query, response = _answer_set()
    assert question_of(query) == question_of(query_for_upstream)
    s = scan_response(response, question_of(query))
    return s.body, edns_header(s.body)


def test_splice_for_an_edns_client() -> None:
    data = dnslib_query("WWW.Example.Com", QTYPE.A, qid=0xBEEF, payload=4096, do=True)
    q = parse_query(data)
    plain, edns = _stored(data)
    out = splice(data, q, plain, edns, OPT_DO)
    assert out[:2] == b"\xbe\xef"
    assert out[12 : q.qend] == q.question
    assert HEADER.unpack_from(out)[5] == HEADER.unpack_from(plain)[5] + 1
    assert out.endswith(OPT_DO)
    msg = dns.message.from_wire(out)
    assert msg.id == 0xBEEF
    assert msg.question[0].name.to_text() == "WWW.Example.Com."
    assert msg.edns == 0
    assert msg.payload == EDNS_PAYLOAD
    assert msg.ednsflags & dns.flags.DO
    assert [rrset.ttl for rrset in msg.answer] == [3600, 299]  # an rrset has the lowest TTL
    assert len(msg.additional) == 1


def test_splice_for_a_plain_client() -> None:
    data = dnslib_query("www.EXAMPLE.com", QTYPE.A, qid=0x0102)
    q = parse_query(data)
    plain, edns = _stored(data)
    out = splice(data, q, plain, edns, OPT_PLAIN)
    assert out[:2] == b"\x01\x02"
    assert out[2:12] == plain[2:12]
    assert out[12 : q.qend] == q.question
    assert out[q.qend :] == plain[q.qend :]
    msg = dns.message.from_wire(out)
    assert msg.edns == -1
    assert msg.question[0].name.to_text() == "www.EXAMPLE.com."
    parsed = DNSRecord.parse(out)
    # The CNAME target is compressed against the question, so it reads in the client's case.
    assert [str(rr.rdata).lower() for rr in parsed.rr] == [
        "web.example.com.",
        "192.0.2.1",
        "192.0.2.2",
    ]


def test_edns_header_counts_one_more_additional_record() -> None:
    body = HEADER.pack(0xABCD, QR, 1, 2, 3, 0xFF) + b"rest"
    assert edns_header(body) == HEADER.pack(0, QR, 1, 2, 3, 0x100)[2:]


@pytest.mark.parametrize(("payload", "do"), [(None, False), (1232, False), (4096, True)])
def test_truncated_response(payload: int | None, do: bool) -> None:
    data = dnslib_query("Big.Example.COM", QTYPE.TXT, qid=0x7777, payload=payload, do=do)
    q = parse_query(data)
    full = reply(data, answers=[RR("big.example.com", QTYPE.TXT, rdata=TXT("x" * 200), ttl=60)] * 5)
    out = truncated_response(q, full)
    qid, flags, qd, an, ns, ar = HEADER.unpack_from(out)
    assert qid == 0x7777
    assert flags == HEADER.unpack_from(full)[1] | TC
    assert (qd, an, ns) == (1, 0, 0)
    assert out[12 : q.qend] == q.question
    if payload is None:
        assert ar == 0
        assert len(out) == q.qend
    else:
        assert ar == 1
        assert out[q.qend :] == (OPT_DO if do else OPT_PLAIN)
    msg = dns.message.from_wire(out)
    assert msg.flags & dns.flags.TC
    assert bool(msg.ednsflags & dns.flags.DO) is do


def test_header_response_refused_with_extended_error() -> None:
    data = dnslib_query("Blocked.Example", QTYPE.A, qid=0x4321, cd=True, payload=1232, do=True)
    q = parse_query(data)
    out = header_response(data, q, REFUSED, ede_option(15, "blocked by school policy"))
    msg = dns.message.from_wire(out)
    assert msg.id == 0x4321
    assert msg.rcode() == dns.rcode.REFUSED
    assert msg.flags & dns.flags.QR
    assert msg.flags & dns.flags.RD
    assert msg.flags & dns.flags.CD
    assert msg.flags & dns.flags.RA
    assert msg.question[0].name.to_text() == "Blocked.Example."
    assert not msg.answer
    assert msg.ednsflags & dns.flags.DO
    (option,) = msg.options
    assert isinstance(option, dns.edns.EDEOption)
    assert option.code == 15
    assert option.text == "blocked by school policy"


def test_header_response_for_a_plain_client_has_no_opt() -> None:
    data = dnslib_query("example.com", QTYPE.AAAA, qid=3, rd=False)
    q = parse_query(data)
    out = header_response(data, q, SERVFAIL)
    assert len(out) == 12 + len(q.question)
    _, flags, qd, an, ns, ar = HEADER.unpack_from(out)
    assert flags == QR | RA | SERVFAIL
    assert (qd, an, ns, ar) == (1, 0, 0, 0)


def test_header_response_badvers_uses_the_extended_rcode() -> None:
    data = dnslib_query("example.com", payload=1232)
    out = header_response(data, parse_query(data), BADVERS)
    assert dns.message.from_wire(out).rcode() == dns.rcode.BADVERS


def test_opt_record_layout() -> None:
    assert opt_record(True) == b"\x00\x00\x29\x04\xd0\x00\x00\x80\x00\x00\x00"
    assert opt_record(False, payload=512) == b"\x00\x00\x29\x02\x00\x00\x00\x00\x00\x00\x00"
    assert opt_record(False, b"xy", rcode=BADVERS)[5:11] == b"\x01\x00\x00\x00\x00\x02"


def test_build_query_is_a_query_we_would_accept() -> None:
    question = question_of(dnslib_query("example.com", QTYPE.MX))
    out = build_query(0x9999, question, QR | RD | CD | 0x0400, do=True)
    q = parse_query(out)
    assert out[:2] == b"\x99\x99"
    assert q.flags == RD | CD
    assert q.upstream_question == question
    assert q.udp_size == EDNS_PAYLOAD
    assert q.do
    assert not parse_query(build_query(1, question, 0, do=False)).do


# --- text_to_wire / wire_to_text --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "wire"),
    [
        ("", b"\x00"),
        (".", b"\x00"),
        ("com", b"\x03com\x00"),
        ("www.Example.COM.", b"\x03www\x07example\x03com\x00"),
        ("a_b-c.d", b"\x05a_b-c\x01d\x00"),
    ],
)
def test_text_to_wire(text: str, wire: bytes) -> None:
    assert text_to_wire(text) == wire
    assert text_to_wire(wire_to_text(wire)) == wire


def test_wire_to_text_round_trip_keeps_case() -> None:
    assert wire_to_text(b"\x03WwW\x07example\x00") == "WwW.example."
    assert wire_to_text(b"\x00") == "."
    assert wire_to_text(b"") == "."


@pytest.mark.parametrize(
    "text",
    [
        "a..b",
        "." + "a",
        "x" * 64 + ".com",
        ".".join(["a" * 63] * 4),
        "bücher.example",
    ],
)
def test_text_to_wire_refuses_bad_names(text: str) -> None:
    with pytest.raises(ValueError):
        text_to_wire(text)


def test_text_to_wire_length_limit_is_255_octets() -> None:
    name = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
    assert len(text_to_wire(name)) == 255
    with pytest.raises(ValueError, match="255"):
        text_to_wire(name + "d")


@pytest.mark.parametrize(
    ("wire", "text"),
    [
        (b"\x03a.b\x03com\x00", "a\\.b.com."),
        (b"\x03a\\b\x00", "a\\\\b."),
        (b"\x03a b\x00", "a\\032b."),
        (b"\x02\x00\xff\x00", "\\000\\255."),
        (b"\x01\x7f\x00", "\\127."),
        (b"\x03~!*\x00", "~!*."),
    ],
)
def test_wire_to_text_escapes_odd_bytes(wire: bytes, text: str) -> None:
    assert wire_to_text(wire) == text
    assert dns.name.from_text(text).to_wire() == wire


# --- property tests -----------------------------------------------------------------------------

_HOST_ALPHABET = string.ascii_letters + string.digits + "-_"


@st.composite
def label_lists(
    draw: st.DrawFn, any_bytes: bool = False, lowest: int = 1, highest: int = 255
) -> list[bytes]:
    """Labels of a valid name: 1..63 octets each, at most 255 octets in wire form.

    ``any_bytes`` draws octets from ``lowest``..``highest`` instead of host name characters.
    """
    labels: list[bytes] = []
    budget = 254  # the root label takes the last octet
    for _ in range(draw(st.integers(0, 8))):
        if budget < 2:
            break
        size = draw(st.integers(1, min(63, budget - 1)))
        if any_bytes:
            span = highest - lowest + 1
            raw = draw(st.binary(min_size=size, max_size=size))
            label = bytes(lowest + octet % span for octet in raw)
        else:
            label = draw(st.text(_HOST_ALPHABET, min_size=size, max_size=size)).encode()
        labels.append(label)
        budget -= size + 1
    return labels


def to_wire_name(labels: Sequence[bytes]) -> bytes:
    return b"".join(bytes([len(x)]) + x for x in labels) + b"\x00"


@PROPERTY
@given(
    # dnslib decodes labels as UTF-8, so the odd octets it is given stay below 0x80; zero
    # octets are left out because the fast parse ends a name at the first one.
    labels=st.one_of(label_lists(), label_lists(any_bytes=True, highest=0x7F)),
    qtype=st.integers(0, 0xFFFF),
    qclass=st.integers(0, 0xFFFF),
    qid=st.integers(0, 0xFFFF),
    rd=st.booleans(),
    cd=st.booleans(),
    payload=st.none() | st.integers(0, 0xFFFF),
    do=st.booleans(),
)
def test_parse_query_agrees_with_dnslib(
    labels: list[bytes],
    qtype: int,
    qclass: int,
    qid: int,
    rd: bool,
    cd: bool,
    payload: int | None,
    do: bool,
) -> None:
    data = dnslib_query(labels, qtype, qclass=qclass, qid=qid, rd=rd, cd=cd, payload=payload, do=do)
    q = parse_query(data)
    oracle = DNSRecord.parse(data)
    oracle_labels = [bytes(x) for x in oracle.q.qname.label]
    assert q.qname == to_wire_name(oracle_labels).lower()
    assert q.question[:-4] == to_wire_name(oracle_labels)
    assert (q.qtype, q.qclass) == (oracle.q.qtype, oracle.q.qclass) == (qtype, qclass)
    offsets = q.labels
    assert len(offsets) == len(oracle_labels)
    for off, label in zip(offsets, oracle_labels, strict=True):
        assert q.qname[off] == len(label)
        assert q.qname[off + 1 : off + 1 + len(label)] == label.lower()
    expected_flags = (KEY_RD if rd else 0) | (KEY_CD if cd else 0)
    if payload is None:
        assert q.udp_size == 0
        assert not q.do
    else:
        assert q.udp_size == max(512, payload)
        assert q.do is do
        expected_flags |= KEY_DO if do else 0
    assert q.key[-1] == expected_flags


@PROPERTY
@given(data=st.binary(max_size=300))
def test_parse_query_on_random_bytes_raises_only_malformed_query(data: bytes) -> None:
    _parse_or_malformed(data)


@PROPERTY
@given(
    flags=st.integers(0, 0xFFFF),
    counts=st.sampled_from(
        [b"\x00\x01\x00\x00\x00\x00\x00\x00", b"\x00\x01\x00\x00\x00\x00\x00\x01"]
    ),
    body=st.binary(min_size=1, max_size=300),
)
def test_parse_query_on_random_questions_raises_only_malformed_query(
    flags: int, counts: bytes, body: bytes
) -> None:
    # Random bytes rarely get past the header; these always do.
    _parse_or_malformed(struct.pack("!HH", 1, flags & 0x07FF) + counts + body)


def _parse_or_malformed(data: bytes) -> None:
    try:
        q = parse_query(data)
    except MalformedQuery as exc:
        if len(data) < 12:
            assert not exc.answerable
        elif len(data) >= 17:
            assert exc.answerable is not bool(data[2] & 0x80)
        return
    assert isinstance(q, Query)
    assert q.qend <= len(data)
    try:
        labels = q.labels
    except MalformedQuery as exc:
        assert exc.answerable
        return
    assert all(q.qname[i] <= 63 for i in labels)
    assert wire_to_text(q.qname).count(".") >= len(labels)


_POOL = [
    "example.com",
    "www.example.com",
    "Mail.Example.COM",
    "a.b.c.example.net",
    "example.net",
    "cdn-1.Example.net",
    "x",
]
_pool_names = st.sampled_from(_POOL)


@st.composite
def dns_records(draw: st.DrawFn) -> Any:
    owner = draw(_pool_names)
    ttl = draw(st.integers(0, 2**31 - 1))
    kind = draw(st.sampled_from(["A", "AAAA", "CNAME", "TXT", "SOA"]))
    if kind == "A":
        return RR(owner, QTYPE.A, rdata=A(str(draw(st.ip_addresses(v=4)))), ttl=ttl)
    if kind == "AAAA":
        return RR(owner, QTYPE.AAAA, rdata=AAAA(str(draw(st.ip_addresses(v=6)))), ttl=ttl)
    if kind == "CNAME":
        return RR(owner, QTYPE.CNAME, rdata=CNAME(draw(_pool_names)), ttl=ttl)
    if kind == "TXT":
        text = draw(st.text(string.ascii_letters + string.digits + " =-", max_size=80))
        return RR(owner, QTYPE.TXT, rdata=TXT(text), ttl=ttl)
    times = tuple(draw(st.lists(st.integers(0, 2**32 - 1), min_size=5, max_size=5)))
    return RR(owner, QTYPE.SOA, rdata=SOA(draw(_pool_names), draw(_pool_names), times), ttl=ttl)


@PROPERTY
@given(
    qname=_pool_names,
    qtype=st.sampled_from([QTYPE.A, QTYPE.AAAA, QTYPE.TXT, TYPE_HTTPS]),
    rcode=st.sampled_from([NOERROR, NXDOMAIN, SERVFAIL]),
    answers=st.lists(dns_records(), max_size=5),
    authority=st.lists(dns_records(), max_size=3),
    additional=st.lists(dns_records(), max_size=3),
    edns=st.none() | st.tuples(st.integers(0, 1), st.booleans()),
    age=st.integers(0, 2**31),
)
def test_scan_and_patch_keep_every_record(
    qname: str,
    qtype: int,
    rcode: int,
    answers: list[Any],
    authority: list[Any],
    additional: list[Any],
    edns: tuple[int, bool] | None,
    age: int,
) -> None:
    query = dnslib_query(qname, qtype)
    extra = list(additional)
    if edns is not None:
        extra.append(EDNS0(udp_len=1232, ext_rcode=edns[0], flags="do" if edns[1] else ""))
    response = reply(query, rcode=rcode, answers=answers, authority=authority, additional=extra)
    s = scan_response(response, question_of(query))

    rcode_out = rcode | ((edns[0] << 4) if edns else 0)
    assert s.rcode == rcode_out
    assert s.answers == len(answers)
    assert s.ttls == [rr.ttl for rr in (*answers, *authority, *additional)]
    assert s.cnames == [text_to_wire(str(rr.rdata)) for rr in answers if rr.rtype == QTYPE.CNAME]
    if rcode_out == NXDOMAIN or (rcode_out == NOERROR and not answers):
        soas = [rr for rr in authority if rr.rtype == QTYPE.SOA]
        # MINIMUM is a TTL (RFC 2308 5), so RFC 2181 8 applies: top bit set means zero.
        minimum = soas[-1].rdata.times[4] if soas else 0
        expected = min(soas[-1].ttl, minimum if minimum < 2**31 else 0) if soas else None
        assert s.negative_ttl == expected
    else:
        assert s.negative_ttl is None

    parsed = DNSRecord.parse(patch_ttls(s.body, s.ttl_offsets, s.ttls, age))
    assert parsed.header.id == 0
    assert parsed.header.rcode == rcode
    assert str(parsed.q.qname) == qname.lower() + "."
    assert (parsed.header.a, parsed.header.auth, parsed.header.ar) == (
        len(answers),
        len(authority),
        len(additional),
    )
    expected_records = [*answers, *authority, *additional]
    assert [rr_view(rr) for rr in records(parsed)] == [rr_view(rr) for rr in expected_records]
    assert [rr.ttl for rr in records(parsed)] == [max(0, rr.ttl - age) for rr in expected_records]


@PROPERTY
@given(data=st.binary(max_size=400))
def test_scan_response_on_random_bytes_raises_only_malformed_response(data: bytes) -> None:
    question = question_of(dnslib_query("example.com"))
    try:
        scan_response(data, question)
    except MalformedResponse:
        pass


@PROPERTY
@given(
    counts=st.tuples(st.integers(0, 4), st.integers(0, 4), st.integers(0, 4)),
    flags=st.integers(0, 0xFFFF),
    tail=st.binary(max_size=400),
)
def test_scan_response_on_random_records_raises_only_malformed_response(
    counts: tuple[int, int, int], flags: int, tail: bytes
) -> None:
    question = question_of(dnslib_query("example.com"))
    msg = HEADER.pack(0, flags | QR, 1, *counts) + question + tail
    try:
        s = scan_response(msg, question)
    except MalformedResponse:
        return
    for off in s.ttl_offsets:
        assert 12 <= off <= len(s.body) - 4
    patch_ttls(s.body, s.ttl_offsets, s.ttls, 1)


@PROPERTY
@given(labels=label_lists(any_bytes=True, lowest=0))
def test_wire_to_text_is_read_back_by_dnspython(labels: list[bytes]) -> None:
    wire = to_wire_name(labels)
    text = wire_to_text(wire)
    assert text.isascii()
    assert " " not in text
    assert dns.name.from_text(text).to_wire() == wire


@PROPERTY
@given(labels=label_lists())
def test_text_to_wire_round_trips_host_names(labels: list[bytes]) -> None:
    wire = to_wire_name(labels)
    assert text_to_wire(wire_to_text(wire)) == wire.lower()
    assert wire_to_text(text_to_wire(wire_to_text(wire))) == wire_to_text(wire).lower()
