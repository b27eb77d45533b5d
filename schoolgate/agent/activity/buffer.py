"""The bounded buffer between the query path and the disk.

The query path must never wait for the disk, so it only appends to memory: one ``deque.append``
and a length check. When the writer cannot keep up (a slow SD card, a full disk) the buffer
fills to its capacity and further events are dropped and counted, never queued without bound.
Urgent events (alerts) have their own short queue, taken first, and wake the writer at once: an
alert is never held behind a batch of ordinary queries.

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
        self.batch = batch  # a full batch wakes the writer before its interval is up
        self.dropped = 0
        self._items: deque[Item] = deque()
        self._urgent: deque[Item] = deque()
        self.ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items) + len(self._urgent)

    def append(self, item: Item) -> None:
        """Keep ``item`` for the writer, or drop and count it when the buffer is full."""
        items = self._items
        if len(items) >= self.capacity:
            self.dropped += 1
            return
        items.append(item)
        if len(items) == self.batch:
            self.ready.set()

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
        items = self._items
        while items and len(taken) < most:
            taken.append(items.popleft())
        if not self:
            self.ready.clear()
        return taken, had_urgent

    def put_back(self, taken: list[Item]) -> None:
        """Return a batch the writer could not write, in order, ahead of what came since.
        What no longer fits is dropped and counted: memory stays bounded."""
        items = self._items
        room = max(self.capacity - len(items), 0)
        kept = taken[-room:] if room else []
        self.dropped += len(taken) - len(kept)
        items.extendleft(reversed(kept))
