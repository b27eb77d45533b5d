"""The lists a configuration means: local files, and downloaded sources at their last-good copies.

The one place that turns ``[[lists]]`` and ``[sources]`` into what the list store and its worker
work on, so that the agent, ``check``, ``lists compile`` and ``lists update`` always mean the
same build (the same sources in the same order, which is what makes a build "current").
"""

from __future__ import annotations

from typing import Any

from schoolgate.agent.config import AgentConfig, redact_url
from schoolgate.agent.filter.sources import ListSource
from schoolgate.agent.filter.store import ListStore, RemoteSource, WorkerResult


def list_sources(config: AgentConfig, *, with_missing: bool = False) -> list[ListSource]:
    """Every source of a build: local files first, then downloads in configuration order.

    A download with no good copy yet is left out, unless ``with_missing`` (an update, which
    may be about to fetch it); so is a copy of another URL or archive member than the one
    configured now, which the next update replaces.
    """
    store = ListStore(config.state_dir).downloads
    state = store.load() if config.remote_lists else None
    keys = {r.name: r.key for r in remote_sources(config)}
    sources = [
        ListSource(c.name, c.category, c.path, c.format, config.confidential(c.category))
        for c in config.lists
    ]
    for r in config.remote_lists:
        path = store.last_good(r.name)
        usable = path.exists() and state is not None and state.get(r.name).key == keys[r.name]
        if with_missing or usable:
            sources.append(
                ListSource(r.name, r.category, path, r.format, config.confidential(r.category))
            )
    return sources


def remote_sources(config: AgentConfig) -> list[RemoteSource]:
    return [RemoteSource(r.name, r.url, redact_url(r.url), r.member) for r in config.remote_lists]


def update_limits(config: AgentConfig) -> dict[str, Any]:
    u = config.updates
    return {
        "timeout": u.timeout,
        "max_download_bytes": u.max_download_bytes,
        "max_redirects": u.max_redirects,
        "max_list_bytes": u.max_list_bytes,
    }


async def update(config: AgentConfig, force: bool = False) -> WorkerResult:
    """Download every configured source, compile, and put the build in service."""
    return await ListStore(config.state_dir).update(
        list_sources(config, with_missing=True),
        remote_sources(config),
        update_limits(config),
        config.updates.max_shrink,
        force=force,
    )
