"""DNS messages built with dnslib, an independent encoder, for tests of our own codec."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dnslib import DNSHeader, DNSRecord

NOERROR = 0


def reply(
    query: bytes,
    *,
    rcode: int = NOERROR,
    answers: Sequence[Any] = (),
    authority: Sequence[Any] = (),
    additional: Sequence[Any] = (),
    tc: bool = False,
) -> bytes:
    """A response to ``query`` packed by dnslib (which compresses names)."""
    request = DNSRecord.parse(query)
    response = DNSRecord(
        DNSHeader(id=request.header.id, qr=1, ra=1, rd=request.header.rd, rcode=rcode, tc=int(tc)),
        q=request.q,
    )
    for rr in answers:
        response.add_answer(rr)
    for rr in authority:
        response.add_auth(rr)
    for rr in additional:
        response.add_ar(rr)
    return bytes(response.pack())
