"""The background jobs, as the running agent schedules them."""

from __future__ import annotations

import inspect
import logging
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from schoolgate.agent.config import parse
from schoolgate.agent.filter.downloads import DownloadState, SourceState
from schoolgate.agent.filter.store import ListStore
from schoolgate.agent.jobs import FIRST_RUN_DELAY, Jobs
from schoolgate.agent.lists import remote_sources
from tests.conftest import AgentFactory
from tests.support.waiting import wait_for


def test_every_job_runs_on_the_event_loop(make_agent: AgentFactory) -> None:
    # APScheduler runs a plain function in a thread pool and a coroutine function on the loop.
    # Jobs empty the memos the query path fills, which is only safe on the loop's own thread.
    agent = make_agent()
    assert agent.agent is not None and agent.agent.jobs.scheduler is not None
    jobs = agent.agent.jobs.scheduler.get_jobs()
    assert {job.id for job in jobs} >= {"policy", "identity", "lists-watch", "config-watch"}
    for job in jobs:
        assert inspect.iscoroutinefunction(job.func), job.id


def planned(tmp_path: Path, **state: Any) -> float:
    """The delay the update job is first planned with, for one remote list in ``state``."""
    config = parse(
        f'[server]\nstate_dir = "{tmp_path / "state"}"\n[sources]\ndefaults = false\n'
        "[updates]\ninterval = 86400\njitter = 0\n"
        '[[lists]]\nname = "adult"\ncategory = "adult"\nurl = "https://lists.example/a.txt"\n',
        "test.toml",
        base=tmp_path,
    )
    (remote,) = remote_sources(config)
    store = ListStore(config.state_dir).downloads
    if state:
        store.save(DownloadState({"adult": SourceState(key=remote.key, **state)}))
    return Jobs(SimpleNamespace(config=config))._first_delay()  # type: ignore[arg-type]


def test_the_first_update_waits_for_what_is_due(tmp_path: Path) -> None:
    now = time.time()
    assert planned(tmp_path) <= FIRST_RUN_DELAY  # never fetched: at once (no jitter here)
    fetched = planned(tmp_path, last_attempt=now - 3600, last_success=now - 3600)
    assert 86400 - 3600 - 60 < fetched <= 86400 - 3600
    # A source that failed twice waits out its back-off (30 minutes), however often the agent
    # restarts or reloads.
    failing = planned(tmp_path, last_attempt=now - 60, failures=2)
    assert 1800 - 120 < failing <= 1800 - 60


def test_job_runs_are_not_logged(
    make_agent: AgentFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    agent = make_agent()
    assert agent.agent is not None and agent.agent.jobs.scheduler is not None
    assert not logging.getLogger("apscheduler.executors.default").isEnabledFor(logging.INFO)
    ticks = agent.agent.jobs.scheduler.get_job("policy")
    assert ticks is not None
    first = ticks.next_run_time
    assert wait_for(lambda: ticks.next_run_time != first, 10)  # the tick has run since
    assert "Running job" not in caplog.text and "executed successfully" not in caplog.text
