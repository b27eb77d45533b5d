"""Synthetic answers for blocked names, built with dnslib once per question and memoized.

Every record type of a blocked name gets a consistent answer, so no browser reaches a blocked
site through HTTPS/SVCB or any other type: A and AAAA get the block-page or null address (or
NXDOMAIN), everything else NODATA (or NXDOMAIN). Negative answers carry an SOA so clients cache
them for the block TTL (RFC 2308), and every blocked answer to an EDNS client carries an Extended
DNS Error (RFC 8914) whose text names the category.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from dnslib import AAAA, QTYPE, RR, SOA, A, DNSHeader, DNSQuestion, DNSRecord

from schoolgate.agent.dns.wire import (
    NOERROR,
    NXDOMAIN,
    TYPE_A,
    TYPE_AAAA,
    Query,
    ede_option,
    edns_header,
    opt_record,
    splice,
    wire_to_text,
)
from schoolgate.agent.policy.decision import Decision

EDE_BLOCKED: Final = 15
EDE_FILTERED: Final = 17
_MEMO_LIMIT: Final = 10_000
# RFC 6761 reserves .invalid; the SOA of a synthetic answer must not point anywhere real.
_SOA_MNAME: Final = "blocked.invalid."
_SOA_RNAME: Final = "hostmaster.blocked.invalid."


class BlockResponse(StrEnum):
    """How A and AAAA questions for a blocked name are answered."""

    NULL = "null"  # 0.0.0.0 and ::
    NXDOMAIN = "nxdomain"
    BLOCKPAGE = "blockpage"  # the block-page addresses


@dataclass(frozen=True)
class BlockSettings:
    response: BlockResponse = BlockResponse.NULL
    ttl: int = 60
    ede_code: int = EDE_BLOCKED
    blockpage_ipv4: tuple[str, ...] = ()
    blockpage_ipv6: tuple[str, ...] = field(default_factory=tuple)


_Answers = tuple[bytes, bytes, bytes, bytes]  # plain, its EDNS header, OPT without DO, with DO


def block_addresses(settings: BlockSettings, qtype: int) -> tuple[str, ...]:
    """The addresses a blocked question of type ``qtype`` is answered with: none means NODATA,
    or NXDOMAIN when that is the configured response."""
    if settings.response is BlockResponse.NXDOMAIN:
        return ()
    null = settings.response is BlockResponse.NULL
    if qtype == TYPE_A:
        return ("0.0.0.0",) if null else settings.blockpage_ipv4
    if qtype == TYPE_AAAA:
        return ("::",) if null else settings.blockpage_ipv6
    return ()


class BlockAnswers:
    """Builds and memoizes the answer to a blocked question."""

    def __init__(self, settings: BlockSettings) -> None:
        self.settings = settings
        # Finished answers, all but the ID, per (query, decision): both are interned objects.
        self._memo: dict[tuple[Query, Decision], bytes] = {}

    def respond(self, data: bytes, query: Query, decision: Decision) -> bytes:
        memo_key = (query, decision)
        answer = self._memo.get(memo_key)
        if answer is None:
            plain, edns, opt, opt_do = self._build(query, decision)
            answer = splice(data, query, plain, edns, opt_do if query.do else opt)[2:]
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()
            self._memo[memo_key] = answer
        return data[:2] + answer

    def _build(self, query: Query, decision: Decision) -> _Answers:
        s = self.settings
        qname = wire_to_text(query.qname)
        flags = query.flags
        rcode = NXDOMAIN if s.response is BlockResponse.NXDOMAIN else NOERROR
        addresses = block_addresses(s, query.qtype)

        header = DNSHeader(id=0, qr=1, ra=1, rd=(flags >> 8) & 1, cd=(flags >> 4) & 1, rcode=rcode)
        record = DNSRecord(header, q=DNSQuestion(qname, query.qtype, query.qclass))
        rdata_type = A if query.qtype == TYPE_A else AAAA
        for address in addresses:
            record.add_answer(RR(qname, query.qtype, rdata=rdata_type(address), ttl=s.ttl))
        if not addresses:
            record.add_auth(
                RR(
                    _soa_owner(qname, decision),
                    QTYPE.SOA,
                    rdata=SOA(_SOA_MNAME, _SOA_RNAME, (1, 3600, 600, 86400, s.ttl)),
                    ttl=s.ttl,
                )
            )
        plain = record.pack()
        # dnslib packs the name as we gave it; the splice puts the client's own question back.
        text = f"blocked by school policy: {decision.category or _override(decision.rule)}"
        ede = ede_option(s.ede_code, text)
        return (
            plain,
            edns_header(plain),
            opt_record(False, ede),
            opt_record(True, ede),
        )

    def clear(self) -> None:
        self._memo.clear()


def _override(rule: str) -> str:
    """What a block no category made is called in the answer: never an exception's reason,
    which staff wrote for staff."""
    if rule.startswith("deny list"):
        return "deny list"
    if rule.startswith("exception"):
        return "exception"
    return "blocked"


def _soa_owner(qname: str, decision: Decision) -> str:
    # The negative answer's SOA belongs at the blocked entry when the name lies below it; a
    # CNAME target's entry is elsewhere, so the question name itself is used then.
    entry = decision.entry
    if entry and (qname == entry + "." or qname.endswith("." + entry + ".")):
        return entry + "."
    return qname
