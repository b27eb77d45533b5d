"""Answers that lead a name to another host: SafeSearch and YouTube Restricted Mode.

A rewritten question is answered as a recursive resolver would answer it if the engine's zone
held ``www.google.com. CNAME forcesafesearch.google.com.``: the CNAME, then the target's own
records of the asked type, resolved upstream and cached under the target's question like any
other answer. The target's answer is decoded with dnslib and the whole answer built again, since
its names may point (by compression) into a question that is not the client's; the result is
memoized on the target's cache entry for the second it was made, keyed by the client's query, so
a repeated question costs one dictionary lookup, as a plain cache hit does.
"""

from __future__ import annotations

from typing import Final

from dnslib import CNAME, QTYPE, RR, DNSError, DNSHeader, DNSLabel, DNSQuestion, DNSRecord

from schoolgate.agent.dns.cache import CacheEntry
from schoolgate.agent.dns.wire import (
    CD,
    OPT_DO,
    OPT_PLAIN,
    RD,
    SERVFAIL,
    Query,
    edns_header,
    header_response,
    parse_query,
    splice,
)

_MEMO_LIMIT: Final = 10_000


class Diverted:
    """A client waiting for the answer to another question (the target's) to build its own,
    with the decision that sent it there (for the activity log)."""

    __slots__ = ("client", "data", "decision", "query", "target")

    def __init__(
        self, data: bytes, query: Query, client: object, target: bytes, decision: object
    ) -> None:
        self.data = data
        self.query = query
        self.client = client
        self.target = target
        self.decision = decision


class Rewriter:
    def __init__(self, cname_ttl: int) -> None:
        # The CNAME is policy, like a block: it lives as long as a blocked answer does, so a
        # change of settings reaches clients as quickly.
        self.cname_ttl = cname_ttl
        self._targets: dict[tuple[Query, bytes], tuple[bytes, Query]] = {}

    def target_query(self, data: bytes, query: Query, target: bytes) -> tuple[bytes, Query]:
        """The datagram asking for ``target`` what the client asked for its name (same type,
        class, flags and EDNS), and its decoded form: the key the cache and upstream know."""
        memo_key = (query, target)
        found = self._targets.get(memo_key)
        if found is None:
            name_end = 12 + len(query.qname)
            wire = data[:12] + target + data[name_end:]
            # The client's question parsed, and the target is a name from a checked table,
            # so this cannot fail the way a client's datagram can.
            found = (wire, parse_query(wire))
            if len(self._targets) >= _MEMO_LIMIT:
                self._targets.clear()
            self._targets[memo_key] = found
        return found

    def answer(
        self,
        data: bytes,
        query: Query,
        target: bytes,
        entry: CacheEntry | None,
        now: int,
        stale: bool,
    ) -> bytes:
        """The answer to ``data``: a CNAME to ``target`` plus the target's records in ``entry``
        (SERVFAIL when there is no entry: every upstream failed)."""
        if entry is None:
            return header_response(data, query, SERVFAIL)
        if not stale and entry.answer_for is query:
            return data[:2] + entry.answer
        plain, _ = entry.stale_bodies() if stale else entry.bodies(now)
        try:
            body = self._body(query, target, plain)
        except (DNSError, ValueError, IndexError):
            return header_response(data, query, SERVFAIL)
        answer = splice(data, query, body, edns_header(body), OPT_DO if query.do else OPT_PLAIN)
        if not stale:
            entry.remember(query, answer[2:])
        return answer

    def _body(self, query: Query, target: bytes, plain: bytes) -> bytes:
        upstream = DNSRecord.parse(plain)
        flags = query.flags
        header = DNSHeader(
            id=0,
            qr=1,
            ra=1,
            rd=int(bool(flags & RD)),
            cd=int(bool(flags & CD)),
            rcode=upstream.header.rcode,
        )
        # Built with the client's question in its own letter case: dnslib compresses the
        # target's name against it, so splicing another case in later would change the target.
        qname = DNSLabel(_labels(query.question))
        record = DNSRecord(header, q=DNSQuestion(qname, query.qtype, query.qclass))
        record.add_answer(
            RR(qname, QTYPE.CNAME, rdata=CNAME(DNSLabel(_labels(target))), ttl=self.cname_ttl)
        )
        for rr in upstream.rr:
            record.add_answer(rr)
        for rr in upstream.auth:
            record.add_auth(rr)
        return bytes(record.pack())


def _labels(wire: bytes) -> list[bytes]:
    labels = []
    offset = 0
    while wire[offset]:
        length = wire[offset]
        labels.append(wire[offset + 1 : offset + 1 + length])
        offset += length + 1
    return labels
