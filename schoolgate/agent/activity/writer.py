"""The writer: drains the buffer into the activity store, in batches, off the event loop.

It wakes every ``interval`` seconds, or at once for an alert, and writes what it takes, a batch
per transaction, in a worker thread (SQLite does its work outside the interpreter lock, so
the DNS service keeps its core). Turning what the query path recorded into rows happens in
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
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Final, Generic, TypeVar

from schoolgate.agent.activity.buffer import EventBuffer
from schoolgate.agent.activity.store import ActivityStore, ActivityStoreError, EventRow

log = logging.getLogger(__name__)

Item = TypeVar("Item")

RETRY_FIRST: Final = 1.0
RETRY_MOST: Final = 60.0
# The writer's thread runs at the lowest priority: on a busy box the DNS service gets the CPU
# first, and when the writer cannot keep up its buffer fills and events are dropped and
# counted, as designed, rather than answers slowing down.
WRITER_NICE: Final = 19


def _lower_priority() -> None:
    """Linux gives each thread its own nice value (a PRIO_PROCESS of a thread id)."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WRITER_NICE)


class ActivityWriter(Generic[Item]):
    def __init__(
        self,
        buffer: EventBuffer[Item],
        store: ActivityStore,
        to_rows: Callable[[Sequence[Item]], list[EventRow]],
        interval: float = 1.0,
    ) -> None:
        self.buffer = buffer
        self.store = store
        self.to_rows = to_rows
        self.interval = interval
        self.written = 0
        self.failed_batches = 0
        # Held while a batch is taken and written, and by whoever changes how events are made
        # (a reload turning pseudonyms on must not let one batch through in clear meanwhile).
        self.lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self._stopping = asyncio.Event()
        self._executor: ThreadPoolExecutor | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="activity-writer")

    async def stop(self) -> None:
        """Stop, after writing what is in the buffer (if the store lets it). A batch being
        written is never abandoned halfway: the task is asked to end, not cancelled."""
        task, self._task = self._task, None
        if task is not None:
            self._stopping.set()
            self.buffer.ready.set()
            await task
        while len(self.buffer):
            if not await self.write_once():
                break
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    @staticmethod
    async def _wait(event: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout=seconds)

    async def _run(self) -> None:
        pause = RETRY_FIRST
        stopping = self._stopping
        while not stopping.is_set():
            # The interval, cut short by an alert (or by stop, which sets ``ready`` too).
            await self._wait(self.buffer.ready, self.interval)
            while len(self.buffer) and not stopping.is_set():
                if await self.write_once():
                    pause = RETRY_FIRST
                    continue
                # The disk refused: wait out the pause whatever arrives, unless told to stop.
                await self._wait(stopping, pause)
                pause = min(pause * 2, RETRY_MOST)
                break

    async def write_once(self) -> bool:
        """Write one batch; False when the store refused it (the batch is back in the buffer)."""
        async with self.lock:
            return await self._write_batch()

    async def _write_batch(self) -> bool:
        taken, _urgent = self.buffer.take(self.buffer.batch)
        if not taken:
            return True
        try:
            written = await asyncio.get_running_loop().run_in_executor(
                self._thread(), self._write, taken
            )
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

    def _thread(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="activity-writer", initializer=_lower_priority
            )
        return self._executor

    def _write(self, taken: Sequence[Item]) -> int:
        return self.store.add_rows(self.to_rows(taken))
