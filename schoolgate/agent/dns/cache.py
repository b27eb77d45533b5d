"""The answer cache: upstream responses only, keyed on the lowercased question and query bits.

A hit never decodes anything. An entry keeps the response body (ID zero, no OPT) with the
positions of its TTLs; once a second at most it makes a copy with the TTLs counted down, and a
hit is that copy with the client's ID and question spliced in, plus our OPT record when the
client sent one.

Negative answers are cached for the RFC 2308 TTL (the SOA's TTL or MINIMUM, whichever is less);
negative answers without an SOA are not cached. Expired entries stay for ``stale_max_age`` so
they can be served, with a short TTL, when every upstream fails (RFC 8767).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from schoolgate.agent.dns.wire import (
    NOERROR,
    NXDOMAIN,
    ScannedResponse,
    edns_header,
    patch_ttls,
)

# RFC 8767 4: the TTL of a stale answer; 30 seconds is the value it recommends.
STALE_ANSWER_TTL: Final = 30


@dataclass(frozen=True)
class CacheSettings:
    max_entries: int = 20_000
    min_ttl: int = 0
    max_ttl: int = 86_400
    max_negative_ttl: int = 3_600
    serve_stale: bool = True
    stale_max_age: int = 86_400


class CacheEntry:
    """One cached response.

    ``plain`` is the body with TTLs counted down to second ``second`` and ``edns_head`` its
    header for an answer with an OPT record. ``answer`` is, for that second, the finished answer
    (all but the ID) to the query ``answer_for``, so a repeated question is answered with one
    concatenation. One query is remembered, not a map of them: nearly every name is asked in one
    form (the same flags and EDNS options), and a map cost more memory than the entry's body.
    """

    __slots__ = (
        "answer",
        "answer_for",
        "body",
        "cnames",
        "edns_head",
        "expires",
        "offsets",
        "plain",
        "rcode",
        "second",
        "stale_until",
        "stored",
        "ttls",
    )

    def __init__(
        self,
        body: bytes,
        offsets: list[int],
        ttls: list[int],
        stored: int,
        lifetime: int,
        stale_for: int,
        cnames: tuple[bytes, ...],
        rcode: int,
    ) -> None:
        self.body = body
        self.offsets = offsets
        self.ttls = ttls
        self.stored = stored
        self.expires = stored + lifetime
        self.stale_until = self.expires + stale_for
        self.cnames = cnames
        self.rcode = rcode
        self.second = -1
        self.plain = body
        self.edns_head = b""
        self.answer_for: object = None
        self.answer = b""

    def bodies(self, now: int) -> tuple[bytes, bytes]:
        """(body, its header for an answer with OPT) with TTLs as of second ``now``."""
        if self.second != now:
            self.count_down(now)
        return self.plain, self.edns_head

    def count_down(self, now: int) -> None:
        """Make the body for second ``now``; the answer of an earlier second is dropped."""
        self.plain = patch_ttls(self.body, self.offsets, self.ttls, now - self.stored)
        self.edns_head = edns_header(self.plain)
        self.answer_for = None
        self.answer = b""
        self.second = now

    def remember(self, query: object, answer: bytes) -> None:
        """Keep ``answer`` (all but the ID) as this second's answer to ``query``."""
        self.answer_for = query
        self.answer = answer

    def stale_bodies(self) -> tuple[bytes, bytes]:
        """The body (and its header for an answer with OPT) with every TTL set to the
        stale-answer TTL."""
        plain = patch_ttls(self.body, self.offsets, [STALE_ANSWER_TTL] * len(self.ttls), 0)
        return plain, edns_header(plain)


class AnswerCache:
    """A bounded LRU map from query key to ``CacheEntry``."""

    def __init__(self, settings: CacheSettings) -> None:
        self.settings = settings
        self._entries: OrderedDict[bytes, CacheEntry] = OrderedDict()
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes, now: int) -> CacheEntry | None:
        """A fresh entry, or None. Expired entries are left for ``get_stale``."""
        entry = self._entries.get(key)
        if entry is None or entry.expires <= now:
            return None
        if entry.second != now:
            self.touch(key, entry, now)
        return entry

    def touch(self, key: bytes, entry: CacheEntry, now: int) -> None:
        """Count the TTLs down and refresh the LRU position: at most once a second per entry,
        which keeps recency exact enough and the work off the hits in between."""
        self._entries.move_to_end(key)
        entry.count_down(now)

    @property
    def lookup(self) -> Callable[[bytes], CacheEntry | None]:
        """The raw map lookup, for the query path to inline ``get`` (see app.build_pipeline)."""
        return self._entries.get

    def get_stale(self, key: bytes, now: int) -> CacheEntry | None:
        """An expired entry still inside the serve-stale window."""
        if not self.settings.serve_stale:
            return None
        entry = self._entries.get(key)
        if entry is None or entry.stale_until <= now:
            return None
        return entry

    def put(self, key: bytes, scanned: ScannedResponse, now: int) -> CacheEntry | None:
        """Cache ``scanned`` if it is cacheable; return the entry (None when not cached)."""
        lifetime = self._lifetime(scanned)
        if lifetime is None:
            return None
        s = self.settings
        ttls = scanned.ttls
        if ttls and (min(ttls) < s.min_ttl or max(ttls) > s.max_ttl):
            ttls = [min(max(t, s.min_ttl), s.max_ttl) for t in ttls]
        if _negative(scanned) and ttls and max(ttls) > lifetime:
            # RFC 2308 5: clients must not be told to keep a negative answer longer than we do.
            ttls = [min(t, lifetime) for t in ttls]
        entry = CacheEntry(
            scanned.body,
            scanned.ttl_offsets,
            ttls,
            now,
            lifetime,
            s.stale_max_age if s.serve_stale else 0,
            tuple(scanned.cnames),
            scanned.rcode,
        )
        if ttls is scanned.ttls:
            # Nothing was clamped: the body as received is already right for this second.
            entry.plain = entry.body
            entry.edns_head = edns_header(entry.body)
            entry.second = now
        entries = self._entries
        entries[key] = entry
        entries.move_to_end(key)
        if len(entries) > s.max_entries:
            entries.popitem(last=False)
            self.evictions += 1
        return entry

    @staticmethod
    def transient(scanned: ScannedResponse, now: int) -> CacheEntry:
        """An entry that answers the clients waiting for ``scanned`` but is not kept."""
        return CacheEntry(
            scanned.body,
            scanned.ttl_offsets,
            scanned.ttls,
            now,
            0,
            0,
            tuple(scanned.cnames),
            scanned.rcode,
        )

    def _lifetime(self, scanned: ScannedResponse) -> int | None:
        s = self.settings
        if scanned.truncated:
            return None
        if _negative(scanned):
            if scanned.negative_ttl is None:
                return None  # RFC 2308 5: negative answers without an SOA are not cached
            return min(max(scanned.negative_ttl, s.min_ttl), s.max_negative_ttl)
        if scanned.rcode != NOERROR:
            return None  # SERVFAIL, REFUSED, ... are an upstream's trouble, not an answer
        if not scanned.ttls:
            return None
        return min(max(min(scanned.ttls), s.min_ttl), s.max_ttl)

    def clear(self) -> None:
        self._entries.clear()


def _negative(scanned: ScannedResponse) -> bool:
    return scanned.rcode == NXDOMAIN or (scanned.rcode == NOERROR and scanned.answers == 0)
