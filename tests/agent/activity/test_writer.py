"""The buffer and the writer: nothing waits on the disk, alerts go first, nothing accepted is
lost while the disk fails, and memory stays bounded."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from schoolgate.agent.activity.buffer import EventBuffer
from schoolgate.agent.activity.events import Event, EventKind
from schoolgate.agent.activity.store import ActivityStore, EventFilter, EventRow, event_row
from schoolgate.agent.activity.writer import WRITER_NICE, ActivityWriter

T0 = 1_795_269_900.0


def to_events(items: Sequence[tuple[str, str]]) -> list[EventRow]:
    """What the query path records (here a kind and a name) made into rows, in the writer's
    thread."""
    return [event_row(Event(kind=EventKind(kind), time=T0, name=name)) for kind, name in items]


async def eventually(condition: object, timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "not within the time allowed"
        await asyncio.sleep(0.02)


def stored(store: ActivityStore) -> list[str]:
    return [s.event.name for s in store.search(EventFilter(), newest_first=False)]


def test_a_full_buffer_drops_and_counts() -> None:
    buffer: EventBuffer[int] = EventBuffer(capacity=3, batch=2)
    for i in range(5):
        buffer.append(i)
    assert len(buffer) == 3 and buffer.dropped == 2
    buffer.append_urgent(99)  # alerts have room of their own
    taken, urgent = buffer.take(10)
    assert taken == [99, 0, 1, 2] and urgent
    buffer.put_back([7, 8, 9])
    buffer.append(10)  # the batch put back filled it
    assert buffer.take(10) == ([7, 8, 9], False)
    assert buffer.dropped == 3


def test_what_cannot_be_put_back_is_counted() -> None:
    buffer: EventBuffer[int] = EventBuffer(capacity=3, batch=2)
    buffer.append(1)
    buffer.append(2)
    buffer.put_back([10, 11])  # room for one of them: the newer is kept
    assert buffer.take(10) == ([11, 1, 2], False)
    assert buffer.dropped == 1


@pytest.mark.asyncio
async def test_batches_are_written_and_alerts_do_not_wait(tmp_path: Path) -> None:
    store = ActivityStore(tmp_path / "state")
    buffer: EventBuffer[tuple[str, str]] = EventBuffer(capacity=1000, batch=50)
    writer = ActivityWriter(buffer, store, to_events, interval=3600)
    writer.start()
    try:
        buffer.append(("dns", "first.example"))
        buffer.append_urgent(("alert", "harm.example"))  # wakes the writer at once
        await eventually(lambda: writer.written == 2)
        assert stored(store) == ["harm.example", "first.example"]
        for i in range(120):  # ordinary events wait for the interval (an hour here) ...
            buffer.append(("dns", f"q{i}.example"))
        await asyncio.sleep(0.2)
        assert writer.written == 2
        buffer.append_urgent(("alert", "harm2.example"))  # ... or the next alert
        await eventually(lambda: writer.written == 123)  # more than a batch: in several
        assert stored(store)[2:4] == ["harm2.example", "q0.example"]
        assert stored(store)[-1] == "q119.example"
    finally:
        await writer.stop()
        store.close()


@pytest.mark.asyncio
async def test_nothing_accepted_is_lost_while_the_disk_fails(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state directory should be", encoding="utf-8")
    store = ActivityStore(blocker)
    buffer: EventBuffer[tuple[str, str]] = EventBuffer(capacity=100, batch=10)
    writer = ActivityWriter(buffer, store, to_events, interval=0.05)
    caplog.set_level(logging.WARNING, logger="schoolgate.agent.activity.writer")
    writer.start()
    try:
        for i in range(30):
            buffer.append(("dns", f"kept{i}.example"))
        await eventually(lambda: writer.failed_batches >= 2)
        assert len(buffer) == 30 and buffer.dropped == 0  # all still waiting
        assert caplog.text.count("cannot write activity events") == 1
        for i in range(80):
            buffer.append(("dns", f"late{i}.example"))
        assert buffer.dropped == 10  # bounded: the excess is counted, not queued
        blocker.unlink()  # the disk is back
        await eventually(lambda: len(buffer) == 0, timeout=20)
        names = stored(store)
        assert names[:30] == [f"kept{i}.example" for i in range(30)]
        assert len(names) == 100
        assert "written again; 10 were dropped meanwhile" in caplog.text
    finally:
        await writer.stop()
        store.close()


@pytest.mark.asyncio
async def test_stopping_writes_what_is_waiting(tmp_path: Path) -> None:
    store = ActivityStore(tmp_path / "state")
    buffer: EventBuffer[tuple[str, str]] = EventBuffer(capacity=1000, batch=500)
    writer = ActivityWriter(buffer, store, to_events, interval=3600)
    writer.start()
    for i in range(700):
        buffer.append(("dns", f"q{i}.example"))
    await writer.stop()
    assert store.count() == 700
    store.close()


@pytest.mark.asyncio
async def test_the_writer_thread_gives_way_to_the_dns_service(tmp_path: Path) -> None:
    store = ActivityStore(tmp_path / "state")
    buffer: EventBuffer[tuple[str, str]] = EventBuffer(capacity=10, batch=10)
    writer = ActivityWriter(buffer, store, to_events, interval=3600)
    buffer.append(("dns", "a.example"))
    assert await writer.write_once()
    (thread,) = [t for t in threading.enumerate() if t.name.startswith("activity-writer")]
    assert thread.native_id is not None
    assert os.getpriority(os.PRIO_PROCESS, thread.native_id) == WRITER_NICE
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) != WRITER_NICE
    await writer.stop()
    store.close()
