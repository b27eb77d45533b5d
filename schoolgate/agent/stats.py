"""Counters the query path bumps: plain integer attributes, read when somebody asks.

Incrementing an attribute is the cheapest thing Python can do per query; exporters (logs now,
Prometheus later) read these values when they are scraped, never the other way round.
"""

from __future__ import annotations


class Counters:
    __slots__ = (
        "blocked",
        "cache_hits",
        "cname_blocked",
        "coalesced",
        "dropped",
        "formerr",
        "forwarded",
        "internal_errors",
        "other_class",
        "receive_errors",
        "refused",
        "rewritten",
        "send_errors",
        "servfail",
        "stale_answers",
        "tcp_connections",
        "tcp_idle_closed",
        "tcp_refused",
        "truncated",
    )

    blocked: int
    cache_hits: int
    cname_blocked: int
    coalesced: int
    dropped: int
    forwarded: int
    formerr: int
    internal_errors: int
    other_class: int
    receive_errors: int
    refused: int
    rewritten: int  # SafeSearch: also counted as the cache hit or forward of the target
    send_errors: int
    servfail: int
    stale_answers: int
    tcp_connections: int
    tcp_idle_closed: int
    tcp_refused: int
    truncated: int

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    @property
    def queries(self) -> int:
        """Every query read: the sum of the outcomes, so the hot path need not count it twice."""
        return (
            self.blocked
            + self.cache_hits
            + self.forwarded
            + self.coalesced
            + self.refused
            + self.formerr
            + self.dropped
            + self.other_class
            + self.internal_errors
        )

    def snapshot(self) -> dict[str, int]:
        values = {name: getattr(self, name) for name in self.__slots__}
        values["queries"] = self.queries
        return values
