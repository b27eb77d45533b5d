"""The agent tells the collector about itself: ``status`` events ``heartbeat`` and
``policy-test``.

* ``heartbeat`` (``heartbeat.py``): its version, since when it runs, how fresh its lists are,
  what it had to drop and what waits in its spool. Soon after start, then every
  ``collector.heartbeat_interval`` seconds (the ``status-heartbeat`` job).
* ``policy-test`` (``policy_check.py``): the filtering check of ``policy test``, run against
  the lists and policy in service. Soon after start and then daily (``status-policy-test``),
  and after every reload or new build, when what it finds differs from what was last sent.

Both go into the activity buffer like every other event, so they reach the collector through
the local spool and the uploader, and wait there while it cannot be reached. Only an agent with
a collector sends them: they are for the district. Gathering the figures reads files and the
store, and the check makes a few hundred lookups: that happens in worker threads, never on the
event loop that answers DNS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any, Final

import msgspec

from schoolgate.agent.activity.events import Event, EventKind
from schoolgate.agent.activity.store import ActivityStoreError
from schoolgate.agent.filter.store import ListStore
from schoolgate.agent.heartbeat import heartbeat_data, lists_data
from schoolgate.agent.metrics import version
from schoolgate.agent.policy_check import policy_test
from schoolgate.event_batch import data_limit

if TYPE_CHECKING:
    from schoolgate.agent.app import Agent

log = logging.getLogger(__name__)

HEARTBEAT: Final = "heartbeat"
POLICY_TEST: Final = "policy-test"


def fitted(data: dict[str, Any], limit: int) -> dict[str, Any]:
    """A policy test's data within ``limit`` bytes of JSON, which the collector takes: when
    every result would not fit (dozens of groups), only those that are not ``ok``, the ones a
    reviewer must see; when even those would not, none. The summary still counts them all."""
    if len(msgspec.json.encode(data)) <= limit:
        return data
    kept = [r for r in data["results"] if r["result"] != "ok"]
    trimmed = {**data, "results": kept}
    if len(msgspec.json.encode(trimmed)) > limit:
        trimmed["results"] = []
    log.warning(
        "the policy test has %d results, too many to report: %d sent (those not ok, if they"
        " fit); run 'schoolgate-agent policy test' for all of them",
        len(data["results"]),
        len(trimmed["results"]),
    )
    return trimmed


class StatusReports:
    """Makes the status events of a running agent that has a collector; ``Jobs`` runs
    ``heartbeat`` and ``policy_test`` on their schedules, the agent calls ``served_changed``."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self._last_test: dict[str, Any] | None = None  # the last test sent, less its time
        self._retest: asyncio.Task[None] | None = None
        self._again = False

    @property
    def every(self) -> float:
        """Seconds between heartbeats, as configured now."""
        upload = self.agent.config.upload
        return upload.heartbeat_interval if upload is not None else 0.0

    async def heartbeat(self) -> Event:
        """Send a heartbeat now."""
        agent = self.agent
        config, lists = agent.config, agent.lists
        counters = agent.upload_counters
        waiting = (counters.waiting or 0) if counters is not None else 0
        if agent.uploader is not None:
            try:
                waiting = await agent.uploader.count_waiting()
            except ActivityStoreError as exc:
                log.warning("cannot count the events waiting to be shipped: %s", exc)
        downloads = await asyncio.to_thread(ListStore(config.state_dir).downloads.load)
        data = heartbeat_data(
            version=version(),
            started=agent.started_at,
            every=self.every,
            lists=lists_data(config, lists, downloads, time.time()),
            dropped_spool=counters.events_dropped if counters is not None else 0,
            dropped_buffer=agent.activity.buffer.dropped,
            waiting=waiting,
        )
        return self._send(HEARTBEAT, data)

    async def policy_test(self, always: bool = True) -> Event | None:
        """Test what is in service and send the result; unless ``always``, only when it
        differs from the last one sent (but for its time). The event sent, if any."""
        agent = self.agent
        if agent.config.upload is None:
            return None  # the collector was taken out of the configuration meanwhile
        # Taken together on the event loop: the configuration and the lists it serves.
        config, lists, exceptions = agent.config, agent.lists, tuple(agent.exceptions)
        result = await asyncio.to_thread(
            policy_test, config, lists, moment=config.local_now(), exceptions=exceptions
        )
        data = result.data()
        same = {key: value for key, value in data.items() if key != "at"}
        if not always and same == self._last_test:
            return None  # a reload that changed nothing the filter does
        self._last_test = same
        return self._send(POLICY_TEST, fitted(data, data_limit(EventKind.STATUS)))

    def served_changed(self) -> None:
        """What is in service changed (a reload, a new build): test it soon, once. Changes
        made while a test runs are tested after it."""
        if self._retest is not None and not self._retest.done():
            self._again = True
            return
        self._retest = asyncio.get_running_loop().create_task(
            self._retest_changes(), name="status-policy-test"
        )

    async def stop(self) -> None:
        task, self._retest = self._retest, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _retest_changes(self) -> None:
        try:
            while True:
                self._again = False
                await self.policy_test(always=False)
                if not self._again:
                    return
        except Exception:
            # A report must never take the agent down; the daily test tries again.
            log.exception("the policy test of the new configuration or lists failed")

    def _send(self, action: str, data: dict[str, Any]) -> Event:
        event = Event(kind=EventKind.STATUS, time=time.time(), action=action, data=data)
        self.agent.activity.buffer.append(event)
        return event
