"""DNS wire format on the hot path: bytes in, bytes out.

The common path never builds a message object. A query is decoded by hand into the few fields the
pipeline needs, and an upstream response is scanned once, when it enters the cache, for the
positions of its TTLs, its OPT record and its CNAME targets. dnslib is used only for synthetic
answers (see ``synth``), which are memoized.
"""

from __future__ import annotations

import struct
from typing import Final

# Header flag bits (RFC 1035 4.1.1, RFC 4035 3.2).
QR: Final = 0x8000
AA: Final = 0x0400
TC: Final = 0x0200
RD: Final = 0x0100
RA: Final = 0x0080
AD: Final = 0x0020
CD: Final = 0x0010
OPCODE_MASK: Final = 0x7800

# Response codes.
NOERROR: Final = 0
FORMERR: Final = 1
SERVFAIL: Final = 2
NXDOMAIN: Final = 3
NOTIMP: Final = 4
REFUSED: Final = 5
BADVERS: Final = 16  # extended, carried partly in OPT (RFC 6891)

# Record types the pipeline looks at.
TYPE_A: Final = 1
TYPE_NS: Final = 2
TYPE_CNAME: Final = 5
TYPE_SOA: Final = 6
TYPE_AAAA: Final = 28
TYPE_OPT: Final = 41
TYPE_SVCB: Final = 64
TYPE_HTTPS: Final = 65
TYPE_ANY: Final = 255
CLASS_IN: Final = 1

# The record types the metrics name one by one, so the label set stays bounded whatever clients
# send; any other type counts as "other". A query carries its type's place in this tuple, found
# once when the datagram is first decoded.
METRIC_TYPES: Final = (
    "A",
    "AAAA",
    "HTTPS",
    "SVCB",
    "CNAME",
    "MX",
    "TXT",
    "PTR",
    "SRV",
    "NS",
    "SOA",
    "CAA",
    "DS",
    "DNSKEY",
    "NAPTR",
    "ANY",
    "other",
)
_METRIC_TYPE_CODES: Final = (1, 28, 65, 64, 5, 15, 16, 12, 33, 2, 6, 257, 43, 48, 35, 255)
_METRIC_TYPE_INDEX: Final = {code: i for i, code in enumerate(_METRIC_TYPE_CODES)}
OTHER_TYPE_INDEX: Final = len(METRIC_TYPES) - 1

# The key carries the query bits that change what an upstream returns, so answers for different
# bits never mix: the DO bit (DNSSEC records), CD (unvalidated data) and RD.
KEY_DO: Final = 0x01
KEY_CD: Final = 0x02
KEY_RD: Final = 0x04

MAX_NAME_WIRE: Final = 255
# EDNS payload size we advertise and the floor we grant clients (RFC 6891 6.2.5, DNS flag day 2020).
EDNS_PAYLOAD: Final = 1232
MIN_UDP_PAYLOAD: Final = 512

_HEADER = struct.Struct("!HHHHHH")
_FLAGS_COUNTS = struct.Struct("!HHHHH")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_RR_FIXED = struct.Struct("!HHIH")  # type, class, ttl, rdlength
_FLAG_BYTE = tuple(bytes((i,)) for i in range(256))


class MalformedQuery(Exception):
    """A datagram that is not a query we can answer.

    ``answerable`` is true when the header is intact, so a FORMERR can be sent back with the
    client's ID; otherwise the datagram is dropped.
    """

    def __init__(self, reason: str, *, answerable: bool, rcode: int = 1) -> None:
        super().__init__(reason)
        self.reason = reason
        self.answerable = answerable
        self.rcode = rcode


class Query:
    """A decoded query, without its ID: identical datagrams share one ``Query``.

    ``key`` is the lowercased question (name in wire form, type, class) plus one byte of query
    flags: the cache and decision key. ``question`` is the question as the client sent it, in its
    letter case, to be echoed. ``udp_size`` is 0 when the client sent no OPT record. Everything
    else is derived when asked for, because a cache hit needs none of it.
    """

    __slots__ = ("do", "flags", "key", "qend", "question", "type_index", "udp_size")

    key: bytes
    question: bytes
    flags: int
    qend: int
    udp_size: int
    do: bool
    type_index: int  # the place of the type in METRIC_TYPES

    @property
    def edns(self) -> bool:
        return self.udp_size != 0

    @property
    def qname(self) -> bytes:
        """The lowercased name in wire form, ending with the root label."""
        return self.key[: self.qend - 16]

    @property
    def qtype(self) -> int:
        key = self.key
        return (key[-5] << 8) | key[-4]

    @property
    def qclass(self) -> int:
        key = self.key
        return (key[-3] << 8) | key[-2]

    @property
    def labels(self) -> list[int]:
        """Offsets in ``qname`` where each label (and so each suffix) starts.

        The fast parse finds the end of the name with one search for a zero byte; walking the
        labels here checks that the name really ends there. It runs once per distinct key
        (decisions are memoized), before the key can reach the cache.
        """
        return name_labels(self.qname)

    @property
    def upstream_question(self) -> bytes:
        """The question as we ask it upstream: lowercased name, type and class."""
        return self.key[:-1]

    def name_text(self) -> str:
        return wire_to_text(self.qname)


def name_labels(qname: bytes) -> list[int]:
    """Label offsets of a wire name; ``MalformedQuery`` unless the labels end exactly at its end."""
    labels = []
    i = 0
    last = len(qname) - 1
    while i < last:
        length = qname[i]
        if length > 63 or length == 0:
            raise MalformedQuery("empty label, label over 63 or compressed", answerable=True)
        labels.append(i)
        i += length + 1
    if i != last or qname[last] != 0:
        raise MalformedQuery("labels do not add up to the name", answerable=True)
    return labels


_ONE_QUESTION: Final = b"\x00\x01\x00\x00\x00\x00\x00\x00"
_ONE_QUESTION_ONE_OPT: Final = b"\x00\x01\x00\x00\x00\x00\x00\x01"


def parse_query(data: bytes) -> Query:
    """Decode a query datagram: header, one question and an optional OPT record.

    Anything else (no question, several questions, answer records, a response, an unknown opcode,
    a name longer than 255 octets, a bad OPT) raises ``MalformedQuery``. The labels of the name
    are checked later, by ``Query.labels``.
    """
    if len(data) < 12:
        raise MalformedQuery("shorter than a DNS header", answerable=False)
    flags_hi = data[2]
    if flags_hi & 0x80:
        # A response sent to a server port is a mistake or a reflection attempt, and answering
        # it could start two servers answering each other forever: never answer one.
        raise MalformedQuery("QR bit set", answerable=False)
    if flags_hi & 0x78:
        raise MalformedQuery("opcode is not QUERY", answerable=True, rcode=NOTIMP)
    if len(data) < 17:
        raise MalformedQuery("shorter than a header and a question", answerable=True)
    counts = data[4:12]
    if counts == _ONE_QUESTION:
        edns = False
    elif counts == _ONE_QUESTION_ONE_OPT:
        edns = True
    else:
        raise MalformedQuery("expected one question and at most one additional", answerable=True)
    name_end = data.find(0, 12) + 1
    if name_end == 0 or name_end > 12 + MAX_NAME_WIRE:
        raise MalformedQuery("question name is too long or runs past the end", answerable=True)
    qend = name_end + 4
    size = len(data)
    if qend > size:
        raise MalformedQuery("question truncated", answerable=True)
    q = Query()
    q.question = data[12:qend]
    q.flags = (flags_hi << 8) | data[3]
    q.qend = qend
    q.type_index = _METRIC_TYPE_INDEX.get((data[qend - 4] << 8) | data[qend - 3], OTHER_TYPE_INDEX)
    key_flags = 0
    if flags_hi & 0x01:
        key_flags = KEY_RD
    if data[3] & 0x10:
        key_flags |= KEY_CD
    if edns:
        # OPT: root name, TYPE 41, CLASS = payload size, TTL = ext-rcode/version/DO/Z, RDLEN.
        if qend + 11 > size or data[qend] != 0:
            raise MalformedQuery("additional record is not a valid OPT", answerable=True)
        rtype, payload, ttl, rdlen = _RR_FIXED.unpack_from(data, qend + 1)
        if rtype != TYPE_OPT or qend + 11 + rdlen != size:
            raise MalformedQuery("additional record is not a valid OPT", answerable=True)
        if ttl & 0xFF0000:
            raise MalformedQuery("unsupported EDNS version", answerable=True, rcode=BADVERS)
        q.udp_size = payload if payload > MIN_UDP_PAYLOAD else MIN_UDP_PAYLOAD
        if ttl & 0x8000:
            q.do = True
            key_flags |= KEY_DO
        else:
            q.do = False
    else:
        if qend != size:
            raise MalformedQuery("trailing bytes after the question", answerable=True)
        q.udp_size = 0
        q.do = False
    # Label lengths are at most 63, below b"A", so lowering the whole wire name is safe; the type
    # and class must not be lowered (HTTPS is type 65, which is b"A").
    q.key = data[12:name_end].lower() + data[name_end:qend] + _FLAG_BYTE[key_flags]
    return q


def question_key(qname: bytes, qtype: int, key_flags: int) -> bytes:
    """The key ``parse_query`` gives a question for the lowercased wire name ``qname`` of type
    ``qtype`` in class IN with the ``KEY_*`` bits ``key_flags``: to find what the cache holds
    for a name without a client's datagram."""
    return qname + qtype.to_bytes(2, "big") + CLASS_IN.to_bytes(2, "big") + _FLAG_BYTE[key_flags]


def opt_record(
    do: bool, options: bytes = b"", payload: int = EDNS_PAYLOAD, rcode: int = 0
) -> bytes:
    """An OPT pseudo-record (RFC 6891) with our payload size, the DO bit and raw options."""
    ttl = ((rcode >> 4) << 24) | (0x8000 if do else 0)
    return b"\x00" + _RR_FIXED.pack(TYPE_OPT, payload, ttl, len(options)) + options


def ede_option(code: int, text: str) -> bytes:
    """An Extended DNS Error option (RFC 8914)."""
    body = _U16.pack(code) + text.encode("utf-8")
    return _U16.pack(15) + _U16.pack(len(body)) + body


OPT_PLAIN: Final = opt_record(False)
OPT_DO: Final = opt_record(True)


def header_response(data: bytes, query: Query, rcode: int, options: bytes = b"") -> bytes:
    """The answer to datagram ``data`` with the question and no records: REFUSED, SERVFAIL.

    ``options`` (an Extended DNS Error, say) go in the OPT record when the client sent one.
    """
    flags = QR | (query.flags & (RD | CD | OPCODE_MASK)) | RA | (rcode & 0xF)
    opt = opt_record(query.do, options, rcode=rcode) if query.udp_size else b""
    return data[:2] + _FLAGS_COUNTS.pack(flags, 1, 0, 0, 1 if opt else 0) + query.question + opt


def error_for(data: bytes, rcode: int) -> bytes:
    """An error for a query we could not decode: its header only, and an OPT for BADVERS."""
    flags = QR | (((data[2] << 8) | data[3]) & (RD | OPCODE_MASK)) | RA | (rcode & 0xF)
    if rcode > 0xF:
        return (
            data[:2]
            + _U16.pack(flags)
            + b"\x00\x00\x00\x00\x00\x00\x00\x01"
            + opt_record(False, rcode=rcode)
        )
    return data[:2] + _U16.pack(flags) + b"\x00" * 8


def truncated_response(query: Query, response: bytes) -> bytes:
    """A response that does not fit the client's payload: header and question with TC set."""
    flags = ((response[2] << 8) | response[3]) | TC
    opt = (OPT_DO if query.do else OPT_PLAIN) if query.udp_size else b""
    counts = _FLAGS_COUNTS.pack(flags, 1, 0, 0, 1 if opt else 0)
    return response[:2] + counts + query.question + opt


def encode_name(name: str) -> bytes:
    """Wire form of a name already lowercased, checked and without its trailing dot."""
    out = bytearray()
    for label in name.split("."):
        out.append(len(label))
        out += label.encode("ascii")
    out.append(0)
    return bytes(out)


def text_to_wire(name: str) -> bytes:
    """'www.Example.com.' -> b'\\x03www\\x07example\\x03com\\x00' (lowercased, ASCII only)."""
    name = name.rstrip(".").lower()
    if not name:
        return b"\x00"
    if any(not 0 < len(label) <= 63 for label in name.split(".")):
        raise ValueError(f"bad label length in {name!r}")
    wire = encode_name(name)
    if len(wire) > MAX_NAME_WIRE:
        raise ValueError(f"name longer than 255 octets: {name!r}")
    return wire


def wire_to_text(wire: bytes) -> str:
    """The presentation form of an uncompressed wire name, with escapes for unsafe bytes."""
    labels = []
    i = 0
    while i < len(wire):
        length = wire[i]
        if length == 0:
            break
        raw = wire[i + 1 : i + 1 + length]
        labels.append(_escape_label(raw))
        i += length + 1
    return ".".join(labels) + "." if labels else "."


def _escape_label(raw: bytes) -> str:
    out = []
    for b in raw:
        c = chr(b)
        if c in ".\\":
            out.append("\\" + c)
        elif 0x21 <= b <= 0x7E:
            out.append(c)
        else:
            out.append(f"\\{b:03d}")
    return "".join(out)


class MalformedResponse(Exception):
    """An upstream answer that cannot be used."""


def read_name(msg: bytes, offset: int) -> tuple[bytes, int]:
    """Decode a possibly compressed name; return (lowercased wire name, offset after it)."""
    out = bytearray()
    end = -1
    jumps = 0
    size = len(msg)
    while True:
        if offset >= size:
            raise MalformedResponse("name runs past the end")
        length = msg[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= size:
                raise MalformedResponse("truncated compression pointer")
            if end < 0:
                end = offset + 2
            jumps += 1
            if jumps > 64:
                raise MalformedResponse("compression loop")
            offset = ((length & 0x3F) << 8) | msg[offset + 1]
            continue
        if length & 0xC0:
            raise MalformedResponse("unknown label type")
        if length == 0:
            out.append(0)
            if len(out) > MAX_NAME_WIRE:
                raise MalformedResponse("name longer than 255 octets")
            return bytes(out).lower(), (end if end >= 0 else offset + 1)
        out += msg[offset : offset + length + 1]
        offset += length + 1
        if len(out) > MAX_NAME_WIRE:
            raise MalformedResponse("name longer than 255 octets")


def skip_name(msg: bytes, offset: int) -> int:
    """The offset just after a possibly compressed name, without decoding it."""
    size = len(msg)
    while True:
        if offset >= size:
            raise MalformedResponse("name runs past the end")
        length = msg[offset]
        if length == 0:
            return offset + 1
        if length & 0xC0 == 0xC0:
            return offset + 2
        if length & 0xC0:
            raise MalformedResponse("unknown label type")
        offset += length + 1


class ScannedResponse:
    """An upstream response prepared for the cache.

    ``body`` is the response without its OPT record and with ID zero; ``ttl_offsets`` point at
    every TTL in ``body``; ``ttls`` are those TTLs as received. ``negative_ttl`` is the RFC 2308
    TTL of a negative answer (None when it carries no SOA). ``cnames`` are the CNAME targets in
    the answer section, lowercased wire names.
    """

    __slots__ = ("answers", "body", "cnames", "ede", "negative_ttl", "rcode", "ttl_offsets", "ttls")

    def __init__(self) -> None:
        self.body = b""
        self.rcode = 0
        self.answers = 0
        self.ttl_offsets: list[int] = []
        self.ttls: list[int] = []
        self.negative_ttl: int | None = None
        self.cnames: list[bytes] = []
        self.ede: bytes = b""

    @property
    def truncated(self) -> bool:
        return bool(self.body[2] & 0x02)


def scan_response(msg: bytes, question: bytes) -> ScannedResponse:
    """Check an upstream response against the question we asked and index it for the cache.

    ``question`` is the lowercased question section we sent. Raises ``MalformedResponse`` when
    the message is not a response to it.
    """
    if len(msg) < 12:
        raise MalformedResponse("shorter than a DNS header")
    _qid, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(msg, 0)
    if not flags & QR:
        raise MalformedResponse("QR bit not set")
    if qdcount != 1:
        raise MalformedResponse("response does not carry exactly one question")
    qend = 12 + len(question)
    if not same_question(msg[12:qend], question):
        raise MalformedResponse("question does not match")
    out = ScannedResponse()
    out.rcode = flags & 0xF
    out.answers = ancount
    offset = qend
    size = len(msg)
    soa_ttl: int | None = None
    cut = size  # where the body ends: at the OPT record
    arcount_out = arcount
    for section, count in ((0, ancount), (1, nscount), (2, arcount)):
        for index in range(count):
            start = offset
            offset = skip_name(msg, offset)
            if offset + 10 > size:
                raise MalformedResponse("record header truncated")
            rtype, _rclass, ttl, rdlen = _RR_FIXED.unpack_from(msg, offset)
            rdata = offset + 10
            end = rdata + rdlen
            if end > size:
                raise MalformedResponse("record data truncated")
            if rtype == TYPE_OPT:
                if section != 2 or cut != size:
                    raise MalformedResponse("OPT outside the additional section, or twice")
                out.rcode |= (ttl >> 24) << 4
                if rdlen:
                    out.ede = _find_ede(msg, rdata, end)
                # The body ends here: additional records after an OPT (there rarely are any)
                # are dropped with it, because cutting the OPT out of their middle would break
                # compression pointers into them. Additional data is optional anyway.
                cut = start
                arcount_out = index
                offset = end
                continue
            # RFC 2181 8: a TTL with the top bit set is to be taken as zero.
            ttl = ttl if ttl < 0x80000000 else 0
            if cut == size:
                out.ttl_offsets.append(offset + 4)
                out.ttls.append(ttl)
            if section == 0 and rtype == TYPE_CNAME:
                target, _ = read_name(msg, rdata)
                out.cnames.append(target)
            elif section == 1 and rtype == TYPE_SOA and rdlen >= 22:
                (minimum,) = _U32.unpack_from(msg, end - 4)
                soa_ttl = min(ttl, minimum if minimum < 0x80000000 else 0)
            offset = end
    if offset != size:
        raise MalformedResponse("trailing bytes after the records")
    # The question as we asked it (lowercased), the ID zeroed, ARCOUNT without the OPT.
    body = bytearray(msg[:cut])
    body[0:2] = b"\x00\x00"
    body[12:qend] = question
    if arcount_out != arcount:
        body[10:12] = _U16.pack(arcount_out)
    out.body = bytes(body)
    if out.rcode == NXDOMAIN or (out.rcode == NOERROR and _no_data(out)):
        out.negative_ttl = soa_ttl
    return out


def same_question(received: bytes, asked: bytes) -> bool:
    """Whether a response's question section is the (lowercased) one we asked.

    An upstream may change the letter case of the name (DNS 0x20), never the type or class.
    """
    return received == asked or received[:-4].lower() + received[-4:] == asked


def _no_data(scanned: ScannedResponse) -> bool:
    # NODATA: NOERROR with no answer for the question (a CNAME chain to nothing still counts).
    return scanned.answers == 0


def _find_ede(msg: bytes, start: int, end: int) -> bytes:
    i = start
    while i + 4 <= end:
        code, length = struct.unpack_from("!HH", msg, i)
        if code == 15:
            return msg[i : i + 4 + length]
        i += 4 + length
    return b""


def patch_ttls(body: bytes, offsets: list[int], ttls: list[int], age: int) -> bytes:
    """A copy of ``body`` with every TTL counted down by ``age`` seconds (never below zero)."""
    out = bytearray(body)
    pack = _U32.pack_into
    for off, ttl in zip(offsets, ttls, strict=True):
        pack(out, off, ttl - age if ttl > age else 0)
    return bytes(out)


def edns_header(body: bytes) -> bytes:
    """The header of ``body`` after its ID (flags and counts), with ARCOUNT raised by one: what
    an answer carrying an OPT record at its end starts with. Ten bytes are kept per stored
    response rather than a second copy of it."""
    (ar,) = _U16.unpack_from(body, 10)
    return body[2:10] + _U16.pack(ar + 1)


def build_query(qid: int, question: bytes, flags: int, do: bool) -> bytes:
    """An upstream query: our ID, the client's RD/CD bits, and our own OPT record."""
    return (
        _HEADER.pack(qid, flags & (RD | CD), 1, 0, 0, 1) + question + (OPT_DO if do else OPT_PLAIN)
    )


def splice(data: bytes, query: Query, plain: bytes, edns_head: bytes, opt: bytes) -> bytes:
    """A stored response made into the answer to datagram ``data``.

    ``plain`` is the response (ID zero, no OPT) and ``edns_head`` its ``edns_header``; the
    client's ID and its question, in its own letter case, are spliced in, and when the client
    sent EDNS the header counts the OPT record ``opt`` appended at the end.
    """
    qend = query.qend
    if query.udp_size:
        return data[:2] + edns_head + query.question + plain[qend:] + opt
    return data[:2] + plain[2:12] + query.question + plain[qend:]
