"""How the activity log writes what the query path saw as numbers and wire names."""

from __future__ import annotations

from typing import Final

from dnslib import QTYPE, RCODE

from schoolgate.agent.dns.wire import Query, wire_to_text

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
    return key_name(query.key)


def key_name(key: bytes) -> str:
    """``query_name`` from a question's key (the name in wire form, type, class, one byte of
    flags)."""
    text = wire_to_text(key[:-5])
    return text[:-1] if len(text) > 1 else text


def key_type(key: bytes) -> int:
    return (key[-5] << 8) | key[-4]
