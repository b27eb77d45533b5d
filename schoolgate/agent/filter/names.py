"""Domain names as lists write them, turned into the one form the matcher knows.

Every list entry goes through ``normalize``: lowercase, trailing dot dropped, internationalised
labels turned into punycode (IDNA 2008 with UTS 46 mapping, as browsers do), and checked against
the limits of DNS. Names on the wire need none of this: they are already ASCII and are only
lowercased.
"""

from __future__ import annotations

import re
from typing import Final

import idna
import xxhash

from schoolgate.agent.dns.wire import encode_name

# Hostnames in the wild use underscores (and lists carry them), so they are accepted; anything
# else outside letters, digits and hyphens is not a name a list can mean.
_ASCII_NAME: Final = re.compile(
    r"(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)*"
    r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
)
_MAX_TEXT_NAME: Final = 253

fingerprint = xxhash.xxh3_64_intdigest
"""The stable 64-bit fingerprint of a name: XXH3-64, seed 0, of its lowercased wire form."""


class InvalidName(ValueError):
    """A list entry that is not a usable domain name; the message says why."""


def normalize(raw: str) -> str:
    """The canonical form of a list entry: 'WWW.Bücher.example.' -> 'www.xn--bcher-kva.example'.

    Raises ``InvalidName`` with a short reason.
    """
    name = raw.strip().rstrip(".").lower()
    if name.startswith("*."):
        # "*.example.com" in a list means "below example.com"; entries already cover every name
        # below them, and blocking the apex too is what list authors expect.
        name = name[2:]
    if not name:
        raise InvalidName("empty name")
    if not name.isascii():
        try:
            name = idna.encode(name, uts46=True, transitional=False).decode("ascii")
        except idna.IDNAError as exc:
            raise InvalidName(f"not a valid internationalised name ({exc})") from None
    elif "xn--" in name:
        _check_punycode(name)
    if len(name) > _MAX_TEXT_NAME:
        raise InvalidName("longer than 253 characters")
    if not _ASCII_NAME.fullmatch(name):
        raise InvalidName(_why_not_ascii_name(name))
    if _looks_like_ipv4(name):
        raise InvalidName("an IP address, not a name")
    return name


def name_fingerprint(name: str) -> int:
    """Fingerprint of a normalized text name."""
    return fingerprint(encode_name(name))


def _check_punycode(name: str) -> None:
    for label in name.split("."):
        if label.startswith("xn--"):
            try:
                idna.decode(label)
            except idna.IDNAError:
                raise InvalidName(f"label {label!r} is not valid punycode") from None


def _looks_like_ipv4(name: str) -> bool:
    parts = name.split(".")
    return len(parts) == 4 and all(p.isdigit() for p in parts)


def _why_not_ascii_name(name: str) -> str:
    for label in name.split("."):
        if not label:
            return "empty label (two dots in a row)"
        if len(label) > 63:
            return f"label longer than 63 characters: {label[:20]}..."
        if label.startswith("-") or label.endswith("-"):
            return f"label starts or ends with a hyphen: {label!r}"
    bad = sorted({c for c in name if not (c.isalnum() or c in "._-")})
    return f"characters not allowed in a name: {''.join(bad)!r}"
