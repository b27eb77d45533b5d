"""The activity log of a running agent: retention, reloads, and the counts the metrics show."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from schoolgate.agent.activity.alerts import AlertSettings
from schoolgate.agent.activity.events import Event, EventKind
from schoolgate.agent.activity.service import ActivityLog
from schoolgate.agent.activity.settings import ActivitySettings, QueryLogging
from schoolgate.agent.activity.store import EventFilter


def event(name: str, when: float) -> Event:
    return Event(kind=EventKind.DEVICE, time=when, name=name)


@pytest.mark.asyncio
async def test_retention_deletes_what_is_older_and_counts_stay_right(tmp_path: Path) -> None:
    log = ActivityLog(ActivitySettings(retention_days=7, write_interval=0.05), tmp_path)
    await log.start()
    try:
        now = time.time()
        assert log.stored_now == 0
        assert log.oldest is None
        for days in (30, 8, 6, 0):
            log.buffer.append(event(f"{days}d", now - days * 86_400))
        await log.writer.write_once()
        assert log.stored_now == 4
        assert await log.prune() == 2
        assert log.stored_now == 2 and log.pruned == 2
        oldest: float | None = log.oldest  # found again by the prune
        assert oldest is not None and abs(oldest - (now - 6 * 86_400)) < 1
    finally:
        await log.stop()


@pytest.mark.asyncio
async def test_a_reload_keeps_the_buffer_and_takes_the_new_settings(tmp_path: Path) -> None:
    log = ActivityLog(ActivitySettings(write_interval=60), tmp_path / "a")
    await log.start()
    try:
        log.buffer.append(event("waiting", time.time()))
        new = ActivitySettings(
            queries=QueryLogging.BLOCKED, buffer_events=5_000, write_interval=0.05
        )
        await log.reconfigure(new, tmp_path / "b", AlertSettings(repeated_blocks=3), None)
        assert log.buffer.capacity == 5_000 and log.maker.queries is QueryLogging.BLOCKED
        assert len(log.buffer) == 1 and log.alerts.settings.repeated_blocks == 3
        assert log.store.path == tmp_path / "b" / "activity" / "events.sqlite"
    finally:
        await log.stop()
    # Stopping wrote what waited, to the store in use.
    assert log.writer.written == 1 and log.store.path.exists()


@pytest.mark.asyncio
async def test_pseudonyms_are_kept_even_when_the_key_cannot_be_made(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("not a directory", encoding="utf-8")
    log = ActivityLog(ActivitySettings(pseudonymise=True), blocker)
    with caplog.at_level(logging.ERROR):
        await log.start()
    try:
        assert "match no other run's" in caplog.text
        hide = log.maker.pseudonyms
        assert hide is not None and hide("10.0.0.7").startswith("p-")
    finally:
        await log.stop()


@pytest.mark.asyncio
async def test_turning_pseudonyms_on_covers_what_was_already_buffered(tmp_path: Path) -> None:
    log = ActivityLog(ActivitySettings(write_interval=60), tmp_path)
    await log.start()
    try:
        log.buffer.append(Event(kind=EventKind.DEVICE, time=time.time(), client_ip="10.0.0.7"))
        on = ActivitySettings(pseudonymise=True, write_interval=60)
        await log.reconfigure(on, tmp_path, AlertSettings(), None)
        assert await log.writer.write_once()
        (stored,) = log.store.search(EventFilter())
        assert stored.event.client_ip.startswith("p-")  # written after the switch: hidden
    finally:
        await log.stop()
