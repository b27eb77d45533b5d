"""Counters the query path bumps: plain integers in attributes and lists, read when asked.

Incrementing an attribute or a list item is the cheapest thing Python can do per query; the
exporters (the log at shutdown, the Prometheus endpoint) read these values when they are
scraped, never the other way round. Everything here outlives a reload: a Prometheus counter
must never go backwards while the process lives.
"""

from __future__ import annotations

from bisect import bisect_left
from enum import IntEnum
from typing import Final

from schoolgate.agent.dns.wire import METRIC_TYPES

# Query latency buckets, in seconds: from 100 us (a cache hit) to 5 s (a slow upstream's retry).
LATENCY_BOUNDS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)


class Outcome(IntEnum):
    """How a query from a client was answered: the ``outcome`` label of the query metric."""

    CACHED = 0
    UPSTREAM = 1  # an upstream's answer, including one a question already on its way got
    STALE = 2  # every upstream failed or was slow, an expired answer went out (RFC 8767)
    SERVFAIL = 3  # every upstream failed and there was nothing stale
    BLOCKED = 4
    REWRITTEN = 5  # SafeSearch: a CNAME to the engine's safe-mode host


N_TYPES: Final = len(METRIC_TYPES)


def slot(outcome: Outcome, type_index: int = 0) -> int:
    """Where a query of this outcome and type is counted in ``GroupTally.queries``: outcome
    first, so the query path adds the type's place to a constant."""
    return outcome * N_TYPES + type_index


class Histogram:
    """Counts per bucket (the last for anything above the last bound) and the sum, as
    Prometheus wants them; the query path does the bucketing inline."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BOUNDS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        # The bucket whose bound is the first at or above the value (the query path inlines
        # the same two lines).
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds


class GroupTally:
    """One group's queries by outcome and type, and its blocks by category."""

    __slots__ = ("blocked", "queries")

    def __init__(self) -> None:
        self.queries = [0] * (len(Outcome) * N_TYPES)
        self.blocked: dict[str, int] = {}  # category (or "deny-list") -> blocks


class Tallies:
    """The labelled counters: per group, and the latency of every answer."""

    def __init__(self) -> None:
        self.groups: dict[str, GroupTally] = {}
        self.latency = Histogram()

    def group(self, name: str) -> GroupTally:
        """The tally of group ``name``, the same one across reloads."""
        tally = self.groups.get(name)
        if tally is None:
            tally = self.groups[name] = GroupTally()
        return tally


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
