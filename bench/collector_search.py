"""How long the admin's common searches take over one day of a 1,000-device school.

    .venv/bin/python bench/collector_search.py [--database sqlite|postgresql|both]
        [--events 500000] [--devices 1000] [--repeat 15]

For each database, in a fresh one (SQLite in a temporary directory; PostgreSQL in a schema of
its own, ``bench_search``, dropped at the end): registers one school and, alongside it, 19
other schools with a tenth of its traffic each (so that "the school's events" is a part of
the table, as in a district), loads one day of events through the collector's own ingest
(``SqlRepository.ingest``, 5,000 events a call, so the counts kept at ingest are kept as in
service), then times each search ``--repeat`` times through ``EventQueries``, the code the
API's handlers call, and reports the median, the 95th percentile and the slowest.

The day: ``--events`` events from ``--devices`` devices in four groups, names drawn with Zipf
repeats from the pools of ``collector_load`` (about 8% blocked, with their categories; one
event in a thousand an alert), spread evenly over the 24 hours.

The searches are those of the admin UI's activity and overview pages: the newest page of the
day, the next page by cursor, one device by address, by MAC and by name, a name and the names
below it, a category, the blocked events, the alerts, the day's counts per group and category,
the top blocked names, and the devices seen; then the activity searches again over the whole
district (every school, as a district admin opens the page). A category that nothing is in is
the worst case of both. Nothing here runs in CI; tests never assert on timing.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from collector_load import POSTGRESQL, _name_pools, database
from gen_lists import zipf_cum_weights

from schoolgate.agent.activity.events import EventKind, Severity
from schoolgate.event_batch import ShippedEvent
from schoolgate.server.db import migrate
from schoolgate.server.db.engine import open_engine
from schoolgate.server.queries import DeviceFilter, EventFilter, EventQueries
from schoolgate.server.repository import SiteRef, SqlRepository

DAY = 86_400.0
CHUNK = 5_000
GROUPS = (("ks3", 0.35), ("ks4", 0.35), ("sixth-form", 0.15), ("staff", 0.15))


def day_of_events(
    site_index: int, events: int, devices: int, day_start: float, seed: int
) -> list[ShippedEvent]:
    rng = random.Random(seed * 7919 + site_index)
    allowed, blocked = _name_pools(seed)
    allowed_cum = zipf_cum_weights(len(allowed), 1.0)
    blocked_cum = zipf_cum_weights(len(blocked), 1.0)
    group_names = [g for g, _ in GROUPS]
    group_weights = [w for _, w in GROUPS]
    fleet = []
    for d in range(devices):
        group = rng.choices(group_names, weights=group_weights)[0]
        mac = ":".join(f"{rng.randrange(256):02x}" for _ in range(6))
        ip = f"10.{site_index}.{d // 250}.{d % 250 + 2}"
        fleet.append((ip, mac, f"{group}-{d:04d}", group))
    step = DAY / events
    made: list[ShippedEvent] = []
    for seq in range(1, events + 1):
        ip, mac, hostname, group = fleet[rng.randrange(devices)]
        when = day_start + (seq - 1) * step
        r = rng.random()
        kind, severity = EventKind.DNS, None
        if r < 0.001:
            name, categories = rng.choices(blocked, cum_weights=blocked_cum)[0]
            kind, action, severity = EventKind.ALERT, "block+alert", Severity.HIGH
        elif r < 0.08:
            name, categories = rng.choices(blocked, cum_weights=blocked_cum)[0]
            action = "block"
        else:
            name, categories = rng.choices(allowed, cum_weights=allowed_cum)[0], ()
            action = "allow"
        made.append(
            ShippedEvent(
                seq=seq,
                kind=kind,
                time=when,
                client_ip=ip,
                mac=mac,
                hostname=hostname,
                group=group,
                name=name,
                qtype="A",
                action=action,
                categories=categories,
                rule="category" if categories else "",
                rcode="NOERROR",
                latency_ms=1.0,
                cache_hit=False,
                severity=severity,
            )
        )
    return made


def load(repo: SqlRepository, site: SiteRef, events: list[ShippedEvent]) -> float:
    started = time.perf_counter()
    for start in range(0, len(events), CHUNK):
        chunk = events[start : start + CHUNK]
        repo.ingest(site, f"{site.name}:{start}", chunk, keep_after=0)
    return time.perf_counter() - started


def load_district(
    repo: SqlRepository,
    args: argparse.Namespace,
    shape: Callable[[list[ShippedEvent], int], list[ShippedEvent]] = lambda events, _seed: events,
) -> tuple[float, SiteRef, list[ShippedEvent], float]:
    """Yesterday (UTC) for the big school and ``--other-schools`` smaller ones, each day's
    events through ``shape`` (given the seed) first: the day's start, the big school, its
    events and the seconds they took to load."""
    day_start = float(int(time.time() // DAY - 1) * DAY)
    site, _token = repo.add_site("big-school")
    events = shape(day_of_events(0, args.events, args.devices, day_start, args.seed), args.seed)
    loaded = load(repo, site, events)
    for other in range(1, args.other_schools + 1):
        ref, _token = repo.add_site(f"school-{other:02d}")
        small = day_of_events(other, args.events // 10, args.devices // 10, day_start, args.seed)
        load(repo, ref, shape(small, args.seed + other))
    return day_start, site, events, loaded


def timed(work: Callable[[], Any], repeat: int) -> tuple[list[float], Any]:
    took: list[float] = []
    result: Any = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = work()
        took.append((time.perf_counter() - started) * 1000)
    return took, result


def event_searches(
    queries: EventQueries, sites: tuple[int, ...], sample: ShippedEvent, day_start: float
) -> list[tuple[str, Callable[[], Any]]]:
    """The activity page's searches of the day over ``sites``, a page of 100 each."""

    def day(**asked: Any) -> EventFilter:
        return EventFilter(sites, since=day_start, until=day_start + DAY, **asked)

    def page(**asked: Any) -> Callable[[], Any]:
        return lambda: queries.events(day(**asked), 100)

    first = queries.events(day(), 100)
    return [
        ("newest 100 of the day", page()),
        ("the next 100 (cursor)", lambda: queries.events(day(), 100, first.next)),
        ("a device by address", page(client=sample.client_ip)),
        ("a device by MAC", page(mac=sample.mac)),
        ("a device by name", page(hostname=sample.hostname)),
        ("a name and below", page(name=sample.name)),
        ("a category", page(category=sample.categories[0])),
        ("blocked events", page(action="block")),
        ("alerts", page(kinds=("alert",))),
        # The worst case: no index serves the filter, so the whole day is read.
        ("a category no one looked up", page(category="unlisted")),
    ]


def searches(
    queries: EventQueries, site: SiteRef, sample: ShippedEvent, day_start: float
) -> list[tuple[str, Callable[[], Any]]]:
    sites = (site.id,)
    until = day_start + DAY
    district = tuple(s["id"] for s in queries.sites())
    return [
        *event_searches(queries, sites, sample, day_start),
        ("counts per group and category", lambda: queries.daily(sites, day_start, until)),
        ("top 20 blocked names", lambda: queries.top_blocked(sites, day_start, until, 20)),
        ("devices seen, newest 100", lambda: queries.devices(DeviceFilter(sites, day_start), 100)),
        *(
            (f"district: {label}", work)
            for label, work in event_searches(queries, district, sample, day_start)
        ),
    ]


def run(kind: str, args: argparse.Namespace, work: Path) -> None:
    with database(kind, work, args.postgresql, "bench_search") as url:
        engine = open_engine(url)
        try:
            migrate.init(engine)
            repo = SqlRepository(engine)
            day_start, site, events, loaded = load_district(repo, args)
            if repo.postgresql:
                with engine.begin() as conn:
                    conn.exec_driver_sql("ANALYZE")
            total = repo.count_events()
            print(
                f"\n{kind}: {args.events:,} events of one school loaded in {loaded:.1f} s "
                f"({args.events / loaded:,.0f}/s); {total:,} events in the table"
            )
            sample = next(e for e in events[len(events) // 2 :] if e.action == "block")
            queries = EventQueries(engine)
            print(f"{'search':40} {'rows':>6} {'median ms':>10} {'p95 ms':>8} {'max ms':>8}")
            for label, work_fn in searches(queries, site, sample, day_start):
                work_fn()  # warm: the first run reads from disk, as a search after a lull would
                took, result = timed(work_fn, args.repeat)
                rows = len(result.rows) if hasattr(result, "rows") else len(result)
                p95 = statistics.quantiles(took, n=20)[-1] if len(took) > 1 else took[0]
                print(
                    f"{label:40} {rows:>6} {statistics.median(took):>10.1f} {p95:>8.1f} "
                    f"{max(took):>8.1f}"
                )
        finally:
            engine.dispose()


def district_options(parser: argparse.ArgumentParser, repeat: int) -> None:
    """The options of a bench over the district ``load_district`` makes."""
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--postgresql", default=POSTGRESQL, help="PostgreSQL URL")
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--devices", type=int, default=1_000)
    parser.add_argument("--other-schools", type=int, default=19)
    parser.add_argument("--repeat", type=int, default=repeat)
    parser.add_argument("--seed", type=int, default=1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    district_options(parser, repeat=15)
    args = parser.parse_args(argv)
    kinds = ("sqlite", "postgresql") if args.database == "both" else (args.database,)
    with tempfile.TemporaryDirectory() as work:
        for kind in kinds:
            run(kind, args, Path(work))
    return 0


if __name__ == "__main__":
    sys.exit(main())
