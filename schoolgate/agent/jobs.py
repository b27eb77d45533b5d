"""The agent's background jobs, on one APScheduler scheduler in the agent's event loop.

* ``lists-update``: download every list source, compile, swap the new build in. Every
  ``updates.interval`` seconds with up to ``updates.jitter`` seconds of random delay, so that a
  district's schools do not all knock on a list host at the same moment. The first run is
  timed from the last success recorded on disk, so a box that reboots every night still
  updates once a day rather than never, and a fresh install fetches its lists straight away.
  When a source fails it is tried again sooner (15 minutes, doubling up to the interval).
* ``identity``: every ``identity.refresh`` seconds, read the neighbour table and DHCP lease
  files again (in a thread) and hand the client identifier the new device map.
* ``policy``: every second, switch groups to the actions of the schedules on now, and take
  exceptions granted, removed or expired (a stat of the exceptions file, nothing more).
* ``lists-watch``: every few seconds, notice a build put in service by another process
  (``schoolgate-agent lists update`` or ``lists compile``) and serve it.
* ``config-watch``: every two seconds, a stat of the configuration file and the list files it
  names; a change that has settled reloads, as SIGHUP does.
* ``activity-retention``: every hour (the first a minute after start), delete activity events
  older than ``activity.retention_days``, a slice at a time, in a thread.
* ``monitor-save``: every five minutes, write the device inventory if it changed (in a thread).
* ``monitor-bandwidth``: every ``monitor.bandwidth_interval`` seconds, the bandwidth events:
  bytes through each watched interface, and the top talkers.
* ``activity-counts``: every minute, find the oldest stored event (in a thread), for the
  metrics; the number stored is counted after each prune and kept up to date between.
* ``status-heartbeat`` and ``status-policy-test``, with a collector only: the agent's status
  events (``status_events``), a heartbeat at once and every ``collector.heartbeat_interval``
  seconds, the policy test of what is in service at once and daily.

Jobs only ever start work in the list worker process or read a few bytes of metadata: nothing
here blocks the DNS event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from schoolgate.agent import lists as lists_mod
from schoolgate.agent.filter.compiled import CompiledListError
from schoolgate.agent.filter.sources import BuildError
from schoolgate.agent.filter.store import ListStore, UpdateError, WorkerResult

if TYPE_CHECKING:
    from schoolgate.agent.app import Agent

log = logging.getLogger(__name__)

FIRST_RUN_DELAY: Final = 5.0  # seconds after start: let the listeners settle first
RETENTION_INTERVAL: Final = 3_600.0
RETENTION_FIRST: Final = 60.0
COUNTS_INTERVAL: Final = 60.0
MONITOR_SAVE_INTERVAL: Final = 300.0
WATCH_INTERVAL: Final = 5.0
CONFIG_WATCH_INTERVAL: Final = 2.0
POLICY_TICK: Final = 1.0  # a schedule boundary or a new exception takes effect within a second
RETRY_FIRST: Final = 900.0
_LAUNCH_JITTER_CAP: Final = 300.0
_FRESH_JITTER_CAP: Final = 25.0
HEARTBEAT_JOB: Final = "status-heartbeat"
POLICY_TEST_JOB: Final = "status-policy-test"
POLICY_TEST_INTERVAL: Final = 86_400.0  # at least daily, whether anything changed or not


def retry_delay(failures: int, interval: float) -> float:
    """Seconds before a source that failed ``failures`` times in a row is tried again."""
    return float(min(interval, RETRY_FIRST * 2 ** min(max(failures - 1, 0), 16)))


class Jobs:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.scheduler: AsyncIOScheduler | None = None
        self.last_update: WorkerResult | None = None
        self.updating = False
        self._running: asyncio.Task[object] | None = None

    def start(self) -> None:
        # The scheduler logs every run of every job at INFO: three lines a second from the
        # policy tick alone would bury what the agent has to say. Its warnings still show.
        for name in ("apscheduler.executors.default", "apscheduler.scheduler"):
            logger = logging.getLogger(name)
            logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        activity = self.agent.activity
        self._every(self._watch, WATCH_INTERVAL, "lists-watch")
        self._every(self.agent.reload_if_changed, CONFIG_WATCH_INTERVAL, "config-watch")
        self._every(activity.prune, RETENTION_INTERVAL, "activity-retention", RETENTION_FIRST)
        self._every(self._save_devices, MONITOR_SAVE_INTERVAL, "monitor-save")
        self._every(activity.refresh_counts, COUNTS_INTERVAL, "activity-counts")
        self.scheduler.start()
        self.reschedule()

    def _every(
        self,
        job: Callable[[], Awaitable[object]],
        seconds: float,
        job_id: str,
        first_in: float | None = None,
        late: bool = False,
    ) -> None:
        """Run ``job`` every ``seconds`` (the first time after ``first_in`` seconds, if given),
        replacing a job of the same id; a run that would overlap the last one is skipped. A
        run the loop was too busy to start on time is skipped too, unless ``late``: then it
        runs late (once, however many were missed)."""
        if self.scheduler is None:
            return
        first: dict[str, object] = (
            {}
            if first_in is None
            else {"next_run_time": datetime.now(UTC) + timedelta(seconds=first_in)}
        )
        if late:
            first["misfire_grace_time"] = max(1, int(seconds))
        self.scheduler.add_job(
            job,
            IntervalTrigger(seconds=seconds, timezone=UTC),
            id=job_id,
            replace_existing=True,
            coalesce=True,
            max_instances=1,
            **first,
        )

    def _schedule_bandwidth(self) -> None:
        scheduler = self.scheduler
        if scheduler is None:
            return
        interval = self.agent.config.monitor.bandwidth_interval
        if interval:
            self._every(self._bandwidth, interval, "monitor-bandwidth")
        elif scheduler.get_job("monitor-bandwidth") is not None:
            scheduler.remove_job("monitor-bandwidth")

    def _schedule_status(self) -> None:
        """The status jobs while the agent has a collector. Kept as they are across reloads
        that do not change the heartbeat's interval: a reload is no reason to beat at once."""
        scheduler = self.scheduler
        if scheduler is None:
            return
        status = self.agent.status
        if status is None:
            for job_id in (HEARTBEAT_JOB, POLICY_TEST_JOB):
                if scheduler.get_job(job_id) is not None:
                    scheduler.remove_job(job_id)
            return
        beat = scheduler.get_job(HEARTBEAT_JOB)
        if beat is None or beat.trigger.interval != timedelta(seconds=status.every):
            first = 0.0 if beat is None else None  # the first soon after start
            self._every(status.heartbeat, status.every, HEARTBEAT_JOB, first, late=True)
        if scheduler.get_job(POLICY_TEST_JOB) is None:
            self._every(status.policy_test, POLICY_TEST_INTERVAL, POLICY_TEST_JOB, 0.0, late=True)

    async def _bandwidth(self) -> None:
        monitor = self.agent.monitor
        if monitor is not None:
            await monitor.bandwidth()

    def reschedule(self) -> None:
        """(Re)plan the update job from the configuration and what is on disk."""
        scheduler = self.scheduler
        if scheduler is None:
            return
        for job_id in ("lists-update", "lists-retry"):
            if scheduler.get_job(job_id) is not None:
                scheduler.remove_job(job_id)
        self._every(self.agent.refresh_devices, self.agent.config.identity.refresh, "identity")
        self._schedule_bandwidth()
        self._every(self.agent.policy_tick, POLICY_TICK, "policy")
        self._schedule_status()
        config = self.agent.config
        if not config.updates.enabled or not config.remote_lists:
            return
        u = config.updates
        first = datetime.now(UTC) + timedelta(seconds=self._first_delay())
        scheduler.add_job(
            self.run_update,
            IntervalTrigger(seconds=u.interval, jitter=u.jitter or None, timezone=UTC),
            id="lists-update",
            next_run_time=first,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=u.interval,
        )
        log.info("next list update at %s", first.strftime("%Y-%m-%d %H:%M:%S UTC"))

    def _first_delay(self) -> float:
        """Seconds until the first update after a start or a reload: when the source due
        soonest is due. A source is due ``interval`` after its last success; one that failed
        is due when its back-off (15 minutes, doubling) ends, so restarts and reloads do not
        hammer a list host that is down; one never tried, or whose URL changed, is due now."""
        config = self.agent.config
        u = config.updates
        state = ListStore(config.state_dir).downloads.load()
        now = time.time()
        due: list[float] = []
        fresh = False
        for remote in lists_mod.remote_sources(config):
            s = state.get(remote.name)
            if s.key != remote.key or not s.last_attempt:
                due.append(now)
                fresh = True
            elif s.failures:
                due.append(s.last_attempt + retry_delay(s.failures, u.interval))
            else:
                due.append(s.last_success + u.interval)
        due_in = min(due, default=now) - now
        if due_in <= FIRST_RUN_DELAY:
            # Due now: soon after the listeners settle, spread so a district's schools starting
            # together (after a power cut) do not all knock at once. A list never fetched is
            # fetched sooner: a new install should filter with everything it has been given.
            cap = _FRESH_JITTER_CAP if fresh else _LAUNCH_JITTER_CAP
            return FIRST_RUN_DELAY + random.uniform(0, min(u.jitter, cap))
        return due_in + random.uniform(0, u.jitter)

    async def run_update(self, force: bool = False) -> WorkerResult | None:
        """Download, compile and serve; returns None when the update produced no build."""
        if self.updating:
            log.info("a list update is already running; not starting another")
            return None
        self.updating = True
        self._running = asyncio.current_task()
        try:
            async with self.agent.lists_lock:
                return await self._update(force)
        finally:
            self.updating = False
            self._running = None

    async def _update(self, force: bool) -> WorkerResult | None:
        config = self.agent.config
        started = time.monotonic()
        try:
            result = await lists_mod.update(config, force=force)
        except UpdateError as exc:
            log.error("list update made no new build, the running lists stay: %s", exc)
            self._log_sources(exc.sources)
            self._plan_retry(exc.sources)
            return None
        except (BuildError, CompiledListError, OSError) as exc:
            log.error("list update failed, the running lists stay: %s", exc)
            return None
        if result.lists.identity == self.agent.lists.identity:
            result.lists.close()  # nothing changed: keep the memos of the build in service
        else:
            self.agent.use_lists(result.lists)
        self.last_update = result
        self._log_sources(result.sources)
        self._plan_retry(result.sources)
        log.info(
            "list update done in %.1f s: %d names, build %s",
            time.monotonic() - started,
            result.lists.count,
            result.lists.build_id,
        )
        return result

    @staticmethod
    def _log_sources(sources: dict[str, dict[str, object]]) -> None:
        for name, s in sources.items():
            if s["status"] in ("failed", "refused") and not s["entries"]:
                log.warning(
                    "list source %s %s and has no copy yet, so none of it is in service: %s",
                    name,
                    s["status"],
                    s["error"],
                )
            elif s["status"] in ("failed", "refused"):
                log.warning(
                    "list source %s %s, its last good copy stays in service (%s entries): %s",
                    name,
                    s["status"],
                    s["entries"],
                    s["error"],
                )
            else:
                log.info("list source %s: %s, %s entries", name, s["status"], s["entries"])

    def _plan_retry(self, sources: dict[str, dict[str, object]]) -> None:
        scheduler = self.scheduler
        if scheduler is None or not any(
            s["status"] in ("failed", "refused") for s in sources.values()
        ):
            return
        config = self.agent.config
        if not config.updates.enabled:
            return
        state = ListStore(config.state_dir).downloads.load()
        failures = max((state.get(n).failures for n in sources), default=1)
        delay = retry_delay(failures, config.updates.interval)
        when = datetime.now(UTC) + timedelta(seconds=delay)
        upcoming = scheduler.get_job("lists-update")
        if upcoming is not None and upcoming.next_run_time <= when:
            return
        scheduler.add_job(
            self.run_update,
            DateTrigger(when, timezone=UTC),
            id="lists-retry",
            replace_existing=True,
        )
        log.info("failed list sources will be tried again at %s", when.strftime("%H:%M UTC"))

    async def _save_devices(self) -> None:
        monitor = self.agent.monitor
        if monitor is not None:
            await monitor.save()

    async def _watch(self) -> None:
        await self.agent.adopt_new_build()

    async def stop(self) -> None:
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        self.scheduler = None
        running = self._running
        if running is not None and not running.done():
            # Cancelling kills the worker; the build in service and the last good copies
            # on disk are untouched by a worker that did not finish.
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
