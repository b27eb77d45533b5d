"""The bounded buffer between the query path and the disk.

The query path must never wait for the disk, so it only appends to memory: a length check and
one ``deque.append``, which the pipeline does inline (``items`` and ``capacity`` are public for
that). When the writer cannot keep up (a slow SD card, a full disk) the buffer fills to its
capacity and further events are dropped and counted, never queued without bound. The writer
takes what is there every ``activity.write_interval``. Urgent events (alerts) have their own
short queue, taken first, and wake the writer at once: an alert is never held behind a batch
of ordinary queries.

Everything here runs on the event loop's thread; only the writer's disk work leaves it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

Item = TypeVar("Item")


class EventBuffer(Generic[Item]):
    def __init__(self, capacity: int, batch: int) -> None:
        self.capacity = capacity
        self.batch = batch  # the most the writer takes for one transaction
        self.dropped = 0
        self.items: deque[Item] = deque()
        self._urgent: deque[Item] = deque()
        self.ready = asyncio.Event()  # set when an urgent item waits

    def __len__(self) -> int:
        return len(self.items) + len(self._urgent)

    def append(self, item: Item) -> None:
        """Keep ``item`` for the writer, or drop and count it when the buffer is full. (The
        query path does the same inline.)"""
        if len(self.items) < self.capacity:
            self.items.append(item)
        else:
            self.dropped += 1

    def append_urgent(self, item: Item) -> None:
        """An alert: written before anything else, as soon as the writer can. Urgent items
        have a capacity of their own, so a flood of queries never crowds one out."""
        if len(self._urgent) >= self.capacity:
            self.dropped += 1
            return
        self._urgent.append(item)
        self.ready.set()

    def take(self, most: int) -> tuple[list[Item], bool]:
        """Up to ``most`` items, urgent ones first, and whether any was urgent."""
        urgent = self._urgent
        taken: list[Item] = []
        had_urgent = bool(urgent)
        while urgent and len(taken) < most:
            taken.append(urgent.popleft())
        items = self.items
        while items and len(taken) < most:
            taken.append(items.popleft())
        if not urgent:
            self.ready.clear()
        return taken, had_urgent

    def put_back(self, taken: list[Item]) -> None:
        """Return a batch the writer could not write, in order, ahead of what came since.
        What no longer fits is dropped and counted: memory stays bounded."""
        items = self.items
        room = max(self.capacity - len(items), 0)
        kept = taken[-room:] if room else []
        self.dropped += len(taken) - len(kept)
        items.extendleft(reversed(kept))
