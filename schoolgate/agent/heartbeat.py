"""What the agent's heartbeat says about it: the ``data`` of a ``status`` event ``heartbeat``.

The collector keeps the newest heartbeat of each school for its admin pages (see
docs/monitoring.md, "Status events"), and counts them for uptime, so the shape is a contract:

    {"version": str, "started": float, "every": float,
     "lists": {"build": str, "names": int, "updated": float | None, "oldest": float | None,
               "stale": int},
     "dropped": {"spool": int, "buffer": int, "total": int},
     "waiting": int}

Only figures the agent already keeps go in; this module just puts them in that shape.
"""

from __future__ import annotations

from typing import Any, Final

from schoolgate.agent.config import AgentConfig
from schoolgate.agent.filter.compiled import CompiledLists
from schoolgate.agent.filter.downloads import DownloadState
from schoolgate.agent.lists import remote_sources

# A downloaded source is due every ``updates.interval``, up to ``updates.jitter`` late; this
# much more leaves room for an update in progress or a restart before it counts as stale.
STALE_GRACE: Final = 3_600.0


def lists_data(
    config: AgentConfig, lists: CompiledLists, downloads: DownloadState, now: float
) -> dict[str, Any]:
    """The build in service and how fresh the downloaded sources behind it are.

    ``oldest`` is the oldest last success among the configured downloads (local list files
    are the school's own and have none); a download never fetched from its configured URL has
    no success to count there, but is stale, as is one whose last success is older than the
    update interval allows.
    """
    allowed = config.updates.interval + config.updates.jitter + STALE_GRACE
    successes: list[float] = []
    stale = 0
    for remote in remote_sources(config):
        state = downloads.sources.get(remote.name)
        # A copy of another URL than the configured one is not what the school asked for.
        last = state.last_success if state is not None and state.key == remote.key else 0.0
        if last:
            successes.append(last)
        if not last or now - last > allowed:
            stale += 1
    return {
        "build": lists.build_id,
        "names": lists.count,
        "updated": lists.built_at or None,
        "oldest": min(successes, default=None),
        "stale": stale,
    }


def heartbeat_data(
    *,
    version: str,
    started: float,
    every: float,
    lists: dict[str, Any],
    dropped_spool: int,
    dropped_buffer: int,
    waiting: int,
) -> dict[str, Any]:
    """The heartbeat's data: ``lists`` from ``lists_data``; ``dropped_spool`` the events the
    spool gave up on since the agent started, ``dropped_buffer`` those dropped before they
    reached it; ``waiting`` the events in the spool not yet shipped."""
    return {
        "version": version,
        "started": float(started),
        "every": float(every),
        "lists": lists,
        "dropped": {
            "spool": dropped_spool,
            "buffer": dropped_buffer,
            "total": dropped_spool + dropped_buffer,
        },
        "waiting": waiting,
    }
