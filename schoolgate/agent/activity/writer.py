"""The writer: drains the buffer into the activity store, in batches, off the event loop.

It wakes every ``interval`` seconds, or at once for an alert, and writes what it takes, a batch
per transaction, in a worker thread (SQLite does its work outside the interpreter lock, so
the DNS service keeps its core). Turning what the query path recorded into events happens in
that thread too, so the query path only ever appends a few references.

A batch the store refuses (a full disk, an unwritable state directory) goes back to the buffer
and is tried again after a pause that doubles up to a minute; meanwhile new events fill the
buffer and, once it is full, are dropped and counted. The error is logged when it starts and
when writing works again, not for every batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Final, Generic, TypeVar

from schoolgate.agent.activity.buffer import EventBuffer
from schoolgate.agent.activity.events import Event
from schoolgate.agent.activity.store import ActivityStore, ActivityStoreError

log = logging.getLogger(__name__)

Item = TypeVar("Item")

RETRY_FIRST: Final = 1.0
RETRY_MOST: Final = 60.0


class ActivityWriter(Generic[Item]):
    def __init__(
        self,
        buffer: EventBuffer[Item],
        store: ActivityStore,
        to_events: Callable[[Sequence[Item]], list[Event]],
        interval: float = 1.0,
    ) -> None:
        self.buffer = buffer
        self.store = store
        self.to_events = to_events
        self.interval = interval
        self.written = 0
        self.failed_batches = 0
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="activity-writer")

    async def stop(self) -> None:
        """Stop, after writing what is in the buffer (if the store lets it)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while len(self.buffer):
            if not await self.write_once():
                break

    async def _run(self) -> None:
        pause = RETRY_FIRST
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.buffer.ready.wait(), timeout=self.interval)
            while len(self.buffer):
                if await self.write_once():
                    pause = RETRY_FIRST
                    continue
                await asyncio.sleep(pause)
                pause = min(pause * 2, RETRY_MOST)
                break

    async def write_once(self) -> bool:
        """Write one batch; False when the store refused it (the batch is back in the buffer)."""
        taken, _urgent = self.buffer.take(self.buffer.batch)
        if not taken:
            return True
        try:
            written = await asyncio.to_thread(self._write, taken)
        except ActivityStoreError as exc:
            self.failed_batches += 1
            self.buffer.put_back(taken)
            if not self._failing:
                self._failing = True
                log.error(
                    "cannot write activity events, they wait in memory (%d now; more than %d"
                    " are dropped and counted): %s",
                    len(self.buffer),
                    self.buffer.capacity,
                    exc,
                )
            return False
        if self._failing:
            self._failing = False
            log.warning(
                "activity events are written again; %d were dropped meanwhile",
                self.buffer.dropped,
            )
        self.written += written
        return True

    def _write(self, taken: Sequence[Item]) -> int:
        return self.store.add(self.to_events(taken))
