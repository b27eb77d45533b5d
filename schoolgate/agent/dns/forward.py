"""The forwarding stage: a cache miss goes upstream, once per question however many ask.

A question already on its way upstream is not sent again: later askers wait for the same
answer. Upstreams are tried in order (healthy ones first); a timeout, a network error, a
malformed answer or a SERVFAIL/REFUSED/NOTIMP/FORMERR moves on to the next. When every upstream
has failed, an expired answer still inside the serve-stale window is given (RFC 8767), otherwise
SERVFAIL. If an upstream is slow and a stale answer exists, the stale answer goes out after
``stale_answer_after`` seconds while the refresh carries on (RFC 8767's client response timer).

UDP, the common case, runs on callbacks from the upstream's socket pool: no task, coroutine or
timer is made per query. TCP, DNS-over-TLS and the TCP retry of a truncated UDP answer run as
tasks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from schoolgate.agent.dns.cache import AnswerCache, CacheEntry
from schoolgate.agent.dns.listeners import Address, Reply
from schoolgate.agent.dns.upstream import (
    Upstream,
    UpstreamError,
    UpstreamGroup,
    usable_answer,
)
from schoolgate.agent.dns.wire import Query, ScannedResponse, build_query
from schoolgate.agent.stats import Counters
from schoolgate.agent.throttle import Throttle

log = logging.getLogger(__name__)

_GIVE_UP_LOG_INTERVAL = 10.0

# The query, the client as the pipeline knows it, where to answer, and when it was started
# (time.monotonic(), for its latency).
Waiter = tuple[bytes, Query, Any, Reply, Address, float]
# Called for each waiter with the entry to answer from (None: SERVFAIL) and whether it is stale.
Deliver = Callable[[bytes, Query, Any, Reply, Address, float, CacheEntry | None, bool], None]


class Pending:
    """One question on its way upstream and the clients waiting for it."""

    __slots__ = ("errors", "key", "order", "query", "stale", "started", "tried", "waiters", "wire")

    def __init__(self, query: Query, order: list[Upstream], stale: CacheEntry | None) -> None:
        self.key = query.key
        self.query = query
        self.wire = build_query(0, query.upstream_question, query.flags, query.do)
        self.order = order
        self.tried = 0
        self.errors: list[str] = []
        self.waiters: list[Waiter] = []
        self.stale = stale
        self.started = 0.0


class Forwarder:
    def __init__(
        self,
        upstreams: UpstreamGroup,
        cache: AnswerCache,
        deliver: Deliver,
        counters: Counters,
        stale_answer_after: float,
    ) -> None:
        self.upstreams = upstreams
        self.cache = cache
        self._deliver = deliver
        self._counters = counters
        self._stale_after = stale_answer_after
        self._in_flight: dict[bytes, Pending] = {}
        # When the school's internet link is down every query gives up: logged now and then.
        self._give_up_log = Throttle(_GIVE_UP_LOG_INTERVAL)
        self._tasks: set[asyncio.Task[None]] = set()

    def forward(
        self, data: bytes, query: Query, client: Any, reply: Reply, addr: Address, started: float
    ) -> None:
        pending = self._in_flight.get(query.key)
        if pending is not None:
            self._counters.coalesced += 1
            pending.waiters.append((data, query, client, reply, addr, started))
            return
        self._counters.forwarded += 1
        now = time.monotonic()
        stale = self.cache.get_stale(query.key, int(now))
        pending = Pending(query, self.upstreams.order(now), stale)
        pending.waiters.append((data, query, client, reply, addr, started))
        self._in_flight[query.key] = pending
        if stale is not None:
            asyncio.get_running_loop().call_later(self._stale_after, self._answer_stale, pending)
        self._try_next(pending)

    def _try_next(self, pending: Pending) -> None:
        """Send ``pending`` to the next upstream in its order, or give up."""
        if pending.tried >= len(pending.order):
            self._give_up(pending)
            return
        upstream = pending.order[pending.tried]
        pending.tried += 1
        upstream.health.queries += 1
        pending.started = time.monotonic()
        question = pending.query.upstream_question
        if upstream.udp is not None:
            upstream.udp.send(
                pending.wire, question, lambda outcome: self._udp_done(pending, upstream, outcome)
            )
        else:
            self._spawn(self._over_stream(pending, upstream))

    def _udp_done(
        self, pending: Pending, upstream: Upstream, outcome: bytes | UpstreamError
    ) -> None:
        if isinstance(outcome, UpstreamError):
            self._failed(pending, upstream, outcome)
            return
        try:
            scanned = usable_answer(outcome, pending.query.upstream_question)
        except UpstreamError as exc:
            self._failed(pending, upstream, exc)
            return
        if scanned.truncated:
            self._spawn(self._over_stream(pending, upstream))
            return
        self._answered(pending, upstream, scanned)

    async def _over_stream(self, pending: Pending, upstream: Upstream) -> None:
        try:
            raw = await upstream.stream.exchange(
                pending.wire, pending.query.upstream_question, upstream.timeout
            )
            scanned = usable_answer(raw, pending.query.upstream_question)
        except UpstreamError as exc:
            self._failed(pending, upstream, exc)
            return
        self._answered(pending, upstream, scanned)

    def _failed(self, pending: Pending, upstream: Upstream, error: UpstreamError) -> None:
        skipped_for = upstream.health.failed(time.monotonic())
        if skipped_for:
            log.warning(
                "upstream %s failed %d times in a row (last: %s); others are tried first for %g s",
                upstream.spec.label,
                upstream.health.consecutive_failures,
                error,
                skipped_for,
            )
        pending.errors.append(f"{upstream.spec.label}: {error}")
        self._try_next(pending)

    def _answered(self, pending: Pending, upstream: Upstream, scanned: ScannedResponse) -> None:
        if upstream.health.ok(time.monotonic() - pending.started):
            log.warning("upstream %s answers again", upstream.spec.label)
        now = int(time.monotonic())
        entry = self.cache.put(pending.key, scanned, now)
        if entry is None:
            entry = self.cache.transient(scanned, now)
        self._finish(pending, entry, stale=False)

    def _give_up(self, pending: Pending) -> None:
        stale = self.cache.get_stale(pending.key, int(time.monotonic()))
        if self._give_up_log():
            log.warning(
                "every upstream failed for %s, answered %s (%s); %d more like it not logged",
                pending.query.name_text(),
                "from the stale cache" if stale is not None else "SERVFAIL",
                "; ".join(pending.errors),
                self._give_up_log.take_skipped(),
            )
        self._finish(pending, stale, stale=stale is not None)

    def _answer_stale(self, pending: Pending) -> None:
        # The refresh goes on and lands in the cache; only the clients waiting now are answered.
        if pending.waiters and pending.stale is not None:
            self._finish(pending, pending.stale, stale=True)

    def _finish(self, pending: Pending, entry: CacheEntry | None, stale: bool) -> None:
        if self._in_flight.get(pending.key) is pending:
            del self._in_flight[pending.key]
        waiters, pending.waiters = pending.waiters, []
        if not waiters:
            return
        if stale:
            self._counters.stale_answers += len(waiters)
        elif entry is None:
            self._counters.servfail += len(waiters)
        deliver = self._deliver
        for data, query, client, reply, addr, started in waiters:
            deliver(data, query, client, reply, addr, started, entry, stale)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout: float) -> None:
        """Wait for questions in flight to be answered (at shutdown)."""
        deadline = time.monotonic() + timeout
        while self._in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    async def aclose(self) -> None:
        """Cancel what is still in flight and close the upstream connections."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        await self.upstreams.aclose()
