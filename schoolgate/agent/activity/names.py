"""How the activity log writes what the query path saw as numbers and wire names."""

from __future__ import annotations

from typing import Final

from dnslib import QTYPE, RCODE

from schoolgate.agent.dns.wire import Query

_TYPES: Final[dict[int, str]] = dict(QTYPE.forward)
_RCODES: Final[dict[int, str]] = dict(RCODE.forward)


def type_name(code: int) -> str:
    """'A', 'HTTPS', ... or 'TYPE65534' (RFC 3597) for a type without a mnemonic."""
    return _TYPES.get(code) or f"TYPE{code}"


def rcode_name(code: int) -> str:
    return _RCODES.get(code) or f"RCODE{code}"


def query_name(query: Query) -> str:
    """The name asked for, in presentation form without the final dot ('.' for the root),
    with unsafe bytes escaped as the wire codec escapes them."""
    text = query.name_text()
    return text[:-1] if len(text) > 1 else text
