"""Store and forward: ships the local store's unsent events to the collector, oldest first.

One batch at a time (see ``spool``): gzipped NDJSON to ``URL/api/v1/events`` with the site's
bearer token and the batch's ``Idempotency-Key``. What the answer means:

| answer | what the uploader does |
|---|---|
| 2xx | the batch is sent: the spool moves past it |
| 408, 429, 5xx, no answer | waits (``Retry-After``, else jittered backoff) and sends it again |
| 401, 403 | the token is refused: says so, reads the token file again, retries with backoff |
| 400, 413, 422 | sends half as many at a time, so the events around a bad one go through |
| the same, for one event | quarantines it (kept in the local log, never sent again), counts it |
| 415 | quarantines the batch |
| 3xx, any other 4xx | says the URL or a proxy is wrong, and retries with backoff |

Only the collector's answers about the batch itself quarantine it: a wrong URL (404), a proxy
asking for credentials (407) or a redirect must not throw the whole spool away.

The HTTP client runs on the agent's event loop, which only waits on the network; reading the
store, encoding and compressing run in a worker thread. Nothing here can hold up DNS.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Final

import httpx

from schoolgate.agent.activity.buffer import EventBuffer
from schoolgate.agent.activity.events import Event, EventKind
from schoolgate.agent.activity.settings import UploadSettings
from schoolgate.agent.activity.spool import Batch, Spool, SpoolLimits
from schoolgate.agent.activity.store import ActivityStore, ActivityStoreError
from schoolgate.agent.collector_http import (
    backoff,
    close,
    http_client,
    read_token,
    retry_after,
)
from schoolgate.agent.throttle import Throttle
from schoolgate.event_batch import CONTENT_TYPE

log = logging.getLogger(__name__)

EVENTS_PATH: Final = "/api/v1/events"
IDLE_POLL: Final = 2.0  # seconds between looks at the store when everything is sent
ENFORCE_EVERY: Final = 60.0  # seconds between checks of the spool's limits
_LOG_EVERY: Final = 300.0
_RETRY: Final = frozenset({408, 425, 429})
_QUARANTINE: Final = frozenset({400, 413, 415, 422})
_SPLIT: Final = frozenset({400, 413, 422})  # about an event: split the batch to find it
MIN_PAUSE: Final = 0.5  # even when told to retry at once

OUTCOMES: Final = ("sent", "retried", "quarantined", "refused_token")


@dataclass
class UploadCounters:
    batches: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    events_sent: int = 0
    events_quarantined: int = 0
    events_dropped: int = 0
    last_success: float | None = None
    waiting: int | None = None  # unsent events, as last counted
    oldest_waiting: float | None = None


class Uploader:
    def __init__(
        self,
        settings: UploadSettings,
        store: ActivityStore,
        buffer: EventBuffer[object],
        counters: UploadCounters | None = None,
    ) -> None:
        self.settings = settings
        self.spool = Spool(store, settings.site)
        self.buffer = buffer
        # Given by the agent, which keeps them across the uploader's restarts on a reload:
        # they are counters for as long as the process lives (metrics, heartbeats).
        self.counters = counters if counters is not None else UploadCounters()
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._failures = 0
        self._max_events = settings.batch_events
        self._enforced_at = -ENFORCE_EVERY
        self._warn = Throttle(_LOG_EVERY)

    def start(self) -> None:
        s = self.settings
        self._client = http_client(s)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="uploader")
        log.info("shipping events to %s as site %s", s.url, s.site)

    async def stop(self) -> None:
        """Stop now. A batch in flight is abandoned: it is still unsent, and the collector
        keeps each event once when it comes again."""
        await close(self._task, self._client)
        self._task, self._client = None, None

    async def _run(self) -> None:
        while True:
            try:
                pause = await self._step()
            except ActivityStoreError as exc:
                if self._warn():
                    log.error("cannot read the activity log to ship it: %s", exc)
                self._failures += 1
                pause = backoff(self._failures)
            except Exception:
                # The uploader must outlive anything it did not foresee; events keep waiting.
                log.exception("the uploader failed; trying again")
                self._failures += 1
                pause = backoff(self._failures)
            if pause:
                await asyncio.sleep(pause)

    async def _step(self) -> float:
        """Send one batch (or find there is none); how long to wait before the next."""
        now = time.monotonic()
        if now - self._enforced_at >= ENFORCE_EVERY:
            self._enforced_at = now
            await self._enforce()
        batch = await asyncio.to_thread(
            self.spool.next_batch, self._max_events, self.settings.batch_bytes
        )
        if batch is None:
            return IDLE_POLL
        token = await asyncio.to_thread(read_token, self.settings.token_file, self._warn)
        if token is None:
            self._failures += 1
            return backoff(self._failures)
        return await self._send(batch, token)

    async def _send(self, batch: Batch, token: str) -> float:
        assert self._client is not None
        c = self.counters
        try:
            # httpx's timeout is per read: a collector trickling bytes is cut off here.
            async with asyncio.timeout(self.settings.timeout * 2):
                answer = await self._client.post(
                    EVENTS_PATH,
                    content=batch.body,
                    headers={
                        "Authorization": f"Bearer {token}",
                        "Idempotency-Key": batch.key,
                        "Content-Type": CONTENT_TYPE,
                        "Content-Encoding": "gzip",
                    },
                )
        except (httpx.HTTPError, TimeoutError) as exc:
            return self._retry(f"{type(exc).__name__}: {exc}", None)
        status = answer.status_code
        if 200 <= status < 300:
            await asyncio.to_thread(self.spool.sent, batch)
            c.batches["sent"] += 1
            c.events_sent += batch.events
            c.last_success = time.time()
            if self._failures:
                log.info("the collector takes events again")
            self._failures = 0
            # After a 413, grow back slowly rather than send a refused size again at once.
            self._max_events = min(self.settings.batch_events, self._max_events * 2)
            return 0.0
        if status in _RETRY or status >= 500:
            return self._retry(
                f"HTTP {status}", retry_after(answer.headers.get("retry-after"), time.time())
            )
        if status in (401, 403):
            c.batches["refused_token"] += 1
            self._failures += 1
            if self._warn():
                log.error(
                    "the collector refuses the token of site %s (HTTP %d): check "
                    "collector.token_file and collector.site; events wait on this box",
                    self.settings.site,
                    status,
                )
            return backoff(self._failures)
        if status in _SPLIT and batch.events > 1:
            # Too large, or one bad event: smaller batches go through, and the one at fault
            # ends up alone and is quarantined by itself, not with the events around it.
            self._max_events = max(1, batch.events // 2)
            log.info(
                "the collector refused %d events (HTTP %d): sending %d at a time",
                batch.events,
                status,
                self._max_events,
            )
            return 0.0
        if status not in _QUARANTINE:
            moved = f" to {answer.headers.get('location')}" if 300 <= status < 400 else ""
            return self._retry(f"HTTP {status}{moved}: check collector.url and any proxy", None)
        reason = f"HTTP {status}: {answer.text[:500]}"
        await asyncio.to_thread(self.spool.quarantine, batch, reason)
        c.batches["quarantined"] += 1
        c.events_quarantined += batch.events
        log.error(
            "the collector refused events %d-%d for good (%s); they stay in the local log "
            "and are listed as quarantined",
            batch.seqs[0],
            batch.seqs[-1],
            reason,
        )
        return 0.0

    def _retry(self, why: str, wait: float | None) -> float:
        self.counters.batches["retried"] += 1
        self._failures += 1
        pause = max(wait, MIN_PAUSE) if wait is not None else backoff(self._failures)
        if self._warn():
            log.warning(
                "cannot ship events to %s (%s); trying again in %.0f s, events wait on this box",
                self.settings.url,
                why,
                pause,
            )
        return pause

    async def count_waiting(self) -> int:
        """Count the events not yet shipped (in a thread: it reads the store) and keep the
        figures in the counters; how many there are."""
        waiting, oldest = await asyncio.to_thread(self.spool.waiting)
        self.counters.waiting, self.counters.oldest_waiting = waiting, oldest
        return waiting

    async def _enforce(self) -> None:
        s = self.settings
        limits = SpoolLimits(s.spool_max_events, s.spool_max_days * 86_400)
        dropped = await asyncio.to_thread(self.spool.enforce, limits)
        await self.count_waiting()
        if not dropped.total:
            return
        self.counters.events_dropped += dropped.total
        log.warning(
            "gave up shipping %d events (%d older than %g days, %d over %d waiting, %d deleted "
            "by retention first); they are reported to the collector",
            dropped.total,
            dropped.too_old,
            s.spool_max_days,
            dropped.too_many,
            s.spool_max_events,
            dropped.pruned,
        )
        # The district sees the gap: a status event says what was not sent, and why.
        self.buffer.append(
            Event(
                kind=EventKind.STATUS,
                time=time.time(),
                action="spool-dropped",
                data={
                    "events": dropped.total,
                    "too_old": dropped.too_old,
                    "too_many": dropped.too_many,
                    "pruned": dropped.pruned,
                },
            )
        )
