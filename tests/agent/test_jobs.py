"""The background jobs, as the running agent schedules them."""

from __future__ import annotations

import inspect

from tests.conftest import AgentFactory


def test_every_job_runs_on_the_event_loop(make_agent: AgentFactory) -> None:
    # APScheduler runs a plain function in a thread pool and a coroutine function on the loop.
    # Jobs empty the memos the query path fills, which is only safe on the loop's own thread.
    agent = make_agent()
    assert agent.agent is not None and agent.agent.jobs.scheduler is not None
    jobs = agent.agent.jobs.scheduler.get_jobs()
    assert {job.id for job in jobs} >= {"policy", "identity", "lists-watch", "config-watch"}
    for job in jobs:
        assert inspect.iscoroutinefunction(job.func), job.id
