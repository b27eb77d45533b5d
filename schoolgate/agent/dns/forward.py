"""The forwarding stage: a cache miss goes upstream, once per question however many ask.

Questions already on their way upstream are coalesced: later askers wait for the same answer.
When every upstream fails, an expired answer still inside the serve-stale window is given
(RFC 8767), otherwise SERVFAIL. If an upstream is slow and a stale answer exists, the stale
answer goes out after ``stale_answer_after`` seconds while the refresh carries on (RFC 8767's
client response timer).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from schoolgate.agent.dns.cache import AnswerCache, CacheEntry
from schoolgate.agent.dns.listeners import Address, Reply
from schoolgate.agent.dns.upstream import AllUpstreamsFailed, UpstreamGroup
from schoolgate.agent.dns.wire import Query
from schoolgate.agent.stats import Counters

log = logging.getLogger(__name__)

Waiter = tuple[bytes, Query, Any, Reply, Address]
# Called for each waiter with the entry to answer from (None: SERVFAIL) and whether it is stale.
Deliver = Callable[[bytes, Query, Any, Reply, Address, CacheEntry | None, bool], None]


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
        self._in_flight: dict[bytes, list[Waiter]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def forward(self, data: bytes, query: Query, client: Any, reply: Reply, addr: Address) -> None:
        waiters = self._in_flight.get(query.key)
        if waiters is not None:
            self._counters.coalesced += 1
            waiters.append((data, query, client, reply, addr))
            return
        self._counters.forwarded += 1
        self._in_flight[query.key] = [(data, query, client, reply, addr)]
        task = asyncio.get_running_loop().create_task(self._resolve(query))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, query: Query) -> None:
        key = query.key
        timer = None
        stale = self.cache.get_stale(key, int(time.monotonic()))
        if stale is not None:
            timer = asyncio.get_running_loop().call_later(
                self._stale_after, self._answer_stale, key, stale
            )
        try:
            scanned, _upstream = await self.upstreams.resolve(
                query.upstream_question, query.flags, query.do
            )
        except AllUpstreamsFailed as exc:
            log.debug("upstreams failed for %s: %s", query.name_text(), exc)
            now = int(time.monotonic())
            stale = self.cache.get_stale(key, now)
            self._finish(key, stale, stale=stale is not None)
            return
        except Exception:
            log.exception("resolving %s failed", query.name_text())
            self._finish(key, None, stale=False)
            return
        finally:
            if timer is not None:
                timer.cancel()
        now = int(time.monotonic())
        entry = self.cache.put(key, scanned, now)
        if entry is None:
            entry = self.cache.transient(scanned, now)
        self._finish(key, entry, stale=False)

    def _answer_stale(self, key: bytes, entry: CacheEntry) -> None:
        self._finish(key, entry, stale=True)
        # Later askers of the same question join a fresh wait; the resolution in progress still
        # refreshes the cache for them.

    def _finish(self, key: bytes, entry: CacheEntry | None, stale: bool) -> None:
        waiters = self._in_flight.pop(key, None)
        if not waiters:
            return
        if stale:
            self._counters.stale_answers += len(waiters)
        elif entry is None:
            self._counters.servfail += len(waiters)
        deliver = self._deliver
        for data, query, client, reply, addr in waiters:
            deliver(data, query, client, reply, addr, entry, stale)

    async def drain(self, timeout: float) -> None:
        """Wait for questions in flight to be answered (at shutdown)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    async def aclose(self) -> None:
        """Cancel what is still in flight and close the upstream connections."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        await self.upstreams.aclose()
