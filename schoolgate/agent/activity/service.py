"""The activity log of a running agent: the buffer the query path appends to, the writer that
drains it into the local store, the alerts, and retention.

One ``ActivityLog`` lives as long as the agent; a reload gives it new settings without losing
what is in the buffer or the alert state. Everything that touches the disk runs in a worker
thread: opening the pseudonym key, writing, counting and pruning.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Final

from schoolgate.agent.activity.alerts import Alerts, AlertSettings
from schoolgate.agent.activity.buffer import EventBuffer
from schoolgate.agent.activity.pseudonyms import KEY_BYTES, PseudonymKeyError, Pseudonyms, load_key
from schoolgate.agent.activity.recorder import EventMaker
from schoolgate.agent.activity.settings import ActivitySettings
from schoolgate.agent.activity.store import ActivityStore, ActivityStoreError
from schoolgate.agent.activity.writer import ActivityWriter
from schoolgate.agent.policy.categories import Taxonomy

log = logging.getLogger(__name__)

# Events per transaction: large enough that a busy school's second is one commit, small enough
# that one commit never holds the file for long.
BATCH: Final = 2_000


class ActivityLog:
    def __init__(
        self,
        settings: ActivitySettings,
        state_dir: Path,
        alert_settings: AlertSettings | None = None,
        taxonomy: Taxonomy | None = None,
    ) -> None:
        self.settings = settings
        self.state_dir = state_dir
        self.buffer: EventBuffer[object] = EventBuffer(settings.buffer_events, BATCH)
        self.alerts = Alerts(alert_settings or AlertSettings(), taxonomy)
        self.store = ActivityStore(state_dir)
        self.maker = EventMaker(settings.queries)
        self.writer = ActivityWriter(self.buffer, self.store, self.maker, settings.write_interval)
        # For the metrics: events in the store (counted now and then, kept up to date from
        # what is written and pruned between counts) and the time of the oldest.
        self.stored: int | None = None
        self.oldest: float | None = None
        self.pruned = 0
        self._written_at_count = 0

    async def start(self) -> None:
        await self._use_settings()
        await self.refresh_counts(count=True)
        self.writer.start()

    async def reconfigure(
        self,
        settings: ActivitySettings,
        state_dir: Path,
        alert_settings: AlertSettings,
        taxonomy: Taxonomy | None,
    ) -> None:
        """Take a reloaded configuration; the buffer's contents carry over."""
        self.alerts.configure(alert_settings, taxonomy)
        moved = state_dir != self.state_dir
        if settings == self.settings and not moved:
            return
        self.buffer.capacity = settings.buffer_events
        # No batch is written while the way events are made changes: with pseudonyms turned
        # on, not one event may reach the disk in clear meanwhile.
        async with self.writer.lock:
            self.settings = settings
            self.writer.interval = settings.write_interval
            self.maker.queries = settings.queries
            if moved:
                old = self.store
                self.state_dir = state_dir
                self.store = self.writer.store = ActivityStore(state_dir)
                self.stored = self.oldest = None
                await asyncio.to_thread(old.close)
            await self._use_settings()
        if moved:
            await self.refresh_counts(count=True)

    async def _use_settings(self) -> None:
        if not self.settings.pseudonymise:
            self.maker.pseudonyms = None
        else:
            try:
                key = await asyncio.to_thread(load_key, self.state_dir)
            except PseudonymKeyError as exc:
                # Never write identities a site asked to hide: hide them with a key of this run
                # only, whose pseudonyms match no other run's.
                log.error("%s; this run's pseudonyms will match no other run's", exc)
                key = os.urandom(KEY_BYTES)
            assert key is not None
            self.maker.pseudonyms = Pseudonyms(key)

    async def stop(self) -> None:
        """Write what is buffered (if the disk lets it) and close the store."""
        await self.writer.stop()
        if len(self.buffer):
            log.error(
                "%d activity events could not be written before stopping and are lost",
                len(self.buffer),
            )
        await asyncio.to_thread(self.store.close)

    async def prune(self) -> int:
        """Delete events older than the retention; how many went."""
        before = time.time() - self.settings.retention_days * 86_400
        try:
            gone = await asyncio.to_thread(self.store.prune, before)
        except ActivityStoreError as exc:
            log.error("cannot delete old activity events: %s", exc)
            return 0
        self.pruned += gone
        if gone:
            log.info(
                "deleted %d activity events older than %d days", gone, self.settings.retention_days
            )
        await self.refresh_counts(count=True)
        return gone

    async def refresh_counts(self, count: bool = False) -> None:
        """Find the oldest event (one read of the time index) and, with ``count``, count them
        all, which reads the whole of an index: at start, after a reload and after pruning;
        between counts, the events written are added up. In a thread: it reads the file."""
        written = self.writer.written
        try:
            found, oldest = await asyncio.to_thread(self._count, count)
        except ActivityStoreError as exc:
            log.debug("cannot count activity events: %s", exc)
            return
        self.oldest = oldest
        if found is not None:
            self.stored = found
            self._written_at_count = written

    def _count(self, count: bool) -> tuple[int | None, float | None]:
        return (self.store.count() if count else None), self.store.oldest()

    @property
    def stored_now(self) -> int | None:
        """Events in the store now, as far as this process knows."""
        if self.stored is None:
            return None
        return self.stored + self.writer.written - self._written_at_count
