"""The list commands of ``schoolgate-agent``: compile, update, status, sources, categories."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

from schoolgate.agent import lists as lists_mod
from schoolgate.agent.config import AgentConfig, redact_url
from schoolgate.agent.filter import catalogue
from schoolgate.agent.filter.compiled import CompiledListError, CompiledLists
from schoolgate.agent.filter.store import ListStore, UpdateError
from schoolgate.agent.policy.categories import AgeTier

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_PARTIAL = 3  # a build was made, but some sources kept their last good copy


def compile_lists(config: AgentConfig) -> int:
    # The same worker the agent uses, so what is printed is what the agent would serve.
    store = ListStore(config.state_dir)
    lists, report = asyncio.run(store.compile(lists_mod.list_sources(config)))
    for line in report:
        print(line)
    print(f"build {lists.build_id} is now current in {store.dir}; {_served_when()}")
    lists.close()
    return EXIT_OK


def _served_when() -> str:
    return "a running agent serves it within a few seconds"


def update_lists(config: AgentConfig, force: bool) -> int:
    if not config.remote_lists:
        print("no downloaded sources are configured ([sources] and url lists); compiling only")
        return compile_lists(config)
    started = time.monotonic()
    try:
        result = asyncio.run(lists_mod.update(config, force=force))
    except UpdateError as exc:
        _print_sources(exc.sources)
        print(f"no new build: {exc}; the build in service stays")
        return EXIT_FAILED
    _print_sources(result.sources)
    for line in result.report:
        print(line)
    print(
        f"build {result.lists.build_id} is now current ({time.monotonic() - started:.1f} s);"
        f" {_served_when()}"
    )
    result.lists.close()
    bad = [s for s in result.sources.values() if s["status"] in ("failed", "refused")]
    return EXIT_PARTIAL if bad else EXIT_OK


def _print_sources(sources: dict[str, dict[str, Any]]) -> None:
    for name, s in sources.items():
        line = f"{name}: {s['status']}, {s['entries']} entries in service"
        if s["error"]:
            line += f" ({s['error']})"
        print(line)


def status(config: AgentConfig, fmt: str) -> int:
    data = status_data(config)
    if fmt == "json":
        print(json.dumps(data, indent=2))
        return EXIT_OK
    build = data["build"]
    if build is None:
        print("no compiled build yet: run 'schoolgate-agent lists compile' or start the agent")
    else:
        print(
            f"build {build['id']}: {build['names']} names, made {_when(build['built_at'])}"
            f" ({build['file']})"
        )
        if not build["current"]:
            print("  made from other lists than the configuration names: the next start,")
            print("  reload or update rebuilds it")
    print()
    rows = [
        (
            s["name"],
            s["category"],
            str(s["entries"]),
            _when(s["last_success"]) if s["kind"] == "download" else "(local file)",
            _when(s["last_attempt"]) if s["kind"] == "download" else "",
            s["error"] or ("ok" if s["in_build"] else "not in the build yet"),
        )
        for s in data["sources"]
    ]
    _table(("SOURCE", "CATEGORY", "ENTRIES", "LAST SUCCESS", "LAST ATTEMPT", "STATUS"), rows)
    print()
    tier = data["age_tier"]
    _table(
        ("CATEGORY", "NAMES", f"ACTION ({tier})", "NAME"),
        [(c["id"], str(c["names"]), c["action"], c["name"]) for c in data["categories"]],
    )
    return EXIT_OK


def status_data(config: AgentConfig) -> dict[str, Any]:
    """Everything ``lists status`` shows, as plain data."""
    store = ListStore(config.state_dir)
    state = store.downloads.load()
    try:
        lists: CompiledLists | None = CompiledLists(store.current)
    except CompiledListError:
        lists = None
    in_build: dict[str, int] = {}
    per_category: dict[str, int] = {}
    build = None
    if lists is not None:
        in_build = {s.name: s.entries for s in lists.sources}
        per_category = dict(lists.meta.get("category_names", {}))
        build = {
            "id": lists.build_id,
            "names": lists.count,
            "built_at": float(lists.meta.get("built_at", 0)),
            "file": str(store.current),
            "current": store.open_current(lists_mod.list_sources(config)) is not None,
        }
        lists.close()
    sources: list[dict[str, Any]] = []
    for f in config.lists:
        sources.append(
            {
                "name": f.name,
                "category": f.category,
                "kind": "file",
                "origin": str(f.path),
                "entries": in_build.get(f.name, 0),
                "in_build": f.name in in_build,
                "last_success": None,
                "last_attempt": None,
                "error": "",
            }
        )
    for r in config.remote_lists:
        s = state.get(r.name)
        sources.append(
            {
                "name": r.name,
                "category": r.category,
                "kind": "download",
                "origin": redact_url(r.url),
                "entries": in_build.get(r.name, 0),
                "in_build": r.name in in_build,
                "last_success": s.last_success or None,
                "last_attempt": s.last_attempt or None,
                "last_change": s.last_change or None,
                "failures": s.failures,
                "error": s.error,
            }
        )
    categories = [
        {
            "id": c.id,
            "tier": c.tier.value,
            "name": c.name(),
            "names": per_category.get(c.id, 0),
            "action": config.actions[c.id].value,
        }
        for c in config.taxonomy
    ]
    return {
        "age_tier": config.age_tier.value,
        "build": build,
        "sources": sources,
        "categories": categories,
    }


def sources(config: AgentConfig) -> int:
    in_use = {r.name for r in config.remote_lists if r.catalogue}
    rows = [
        (
            s.id,
            s.category,
            s.format.value,
            s.licence,
            "yes" if s.default else "no",
            "yes" if s.id in in_use else "no",
        )
        for s in catalogue.bundled().values()
    ]
    _table(("SOURCE", "CATEGORY", "FORMAT", "LICENCE", "DEFAULT", "IN USE"), rows)
    print()
    print("Attribution for the sources in use:")
    for s in catalogue.bundled().values():
        if s.id in in_use:
            print(f"  {s.id}: {s.attribution} <{s.homepage}>")
    return EXIT_OK


def categories(config: AgentConfig, language: str) -> int:
    ages = [a.value for a in AgeTier]
    rows = []
    for c in config.taxonomy:
        rows.append(
            (
                c.id,
                c.tier.value + (" (site)" if c.site else ""),
                config.actions[c.id].value,
                *(c.defaults[AgeTier(a)].value for a in ages),
                c.name(language),
            )
        )
    _table(
        ("CATEGORY", "TIER", f"ACTION ({config.age_tier.value})", *ages, "NAME"),
        rows,
    )
    return EXIT_OK


def _when(stamp: float | None) -> str:
    if not stamp:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(stamp))


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    rows = list(rows)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
