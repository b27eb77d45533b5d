"""How long the admin pages take over a district with one 1,000-device school's busy day.

    .venv/bin/python bench/admin_pages.py [--database sqlite|postgresql|both]
        [--events 500000] [--devices 1000] [--other-schools 19] [--repeat 10]
        [--page /activity ...]

For each database, in a fresh one (as ``collector_search``): one school's day of
``--events`` events (``collector_search.day_of_events``; one lookup in fifty of a generative
AI tool, and the agent's heartbeats every five minutes), 19 other schools with a tenth of its
traffic each, all through the collector's own ingest. Then the collector's app is served
in-process (its Starlette app over an ASGI transport: no sockets, the same handlers, queries,
templates and translations) to a district admin who signed in through the sign-in form, and
each page is fetched ``--repeat`` times, for the district and for the big school; the median,
95th percentile and slowest are printed; ``--page`` (as often as wanted) times only the pages
that start with it, for the district and the big school. Nothing here runs in CI; tests never
assert on timing.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import msgspec
from collector_load import database
from collector_search import DAY, district_options, load_district

from schoolgate.agent.activity.events import EventKind
from schoolgate.event_batch import ShippedEvent
from schoolgate.server.app import create_app
from schoolgate.server.auth import Role
from schoolgate.server.db import migrate
from schoolgate.server.db.engine import open_engine
from schoolgate.server.repository import SqlRepository
from schoolgate.server.settings import parse
from schoolgate.server.users import UserStore

PASSWORD = "correct horse battery staple"
PAGES = (
    "/",
    "/?days=30",
    "/alerts",
    "/devices",
    "/requests",
    "/activity",
    "/policy",
    "/ai-use",
    "/indicators",
    "/indicators?days=365",
)
SCHOOL_PAGES = ("/review", "/review.csv", "/policy", "/ai-use", "/?days=7")


def with_ai_and_heartbeats(events: list[ShippedEvent], seed: int) -> list[ShippedEvent]:
    """The day's events, one allowed lookup in fifty made a lookup of an AI tool, and a
    heartbeat every five minutes after the last event's number."""
    rng = random.Random(seed)
    made = []
    for e in events:
        if e.kind is EventKind.DNS and e.action == "allow" and rng.random() < 0.02:
            blocked = rng.random() < 0.3
            made.append(
                msgspec.structs.replace(
                    e,
                    name=rng.choice(("chat.ai-one.example", "gen.ai-two.example")),
                    categories=("genai",),
                    action="block" if blocked else "allow",
                )
            )
        else:
            made.append(e)
    start, seq = events[0].time, events[-1].seq
    made += [
        ShippedEvent(
            seq=seq + 1 + i,
            kind=EventKind.STATUS,
            time=start + i * 300,
            action="heartbeat",
            data={"version": "bench", "every": 300.0, "lists": {"updated": start}},
        )
        for i in range(int(DAY // 300))
    ]
    return made


async def sign_in(client: httpx.AsyncClient, name: str) -> None:
    form = (await client.get("/sign-in")).text
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form))
    answer = await client.post("/sign-in", data={**fields, "name": name, "password": PASSWORD})
    if answer.status_code != 303:
        raise SystemExit(f"cannot sign in: {answer.status_code} {answer.text[:200]}")


async def time_pages(app: object, pages: Sequence[str], repeat: int) -> None:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    # https: the session cookie is Secure, and httpx (unlike a browser on loopback) sends
    # such a cookie only over https.
    async with httpx.AsyncClient(transport=transport, base_url="https://127.0.0.1") as client:
        await sign_in(client, "head")
        print(f"{'page':34} {'bytes':>9} {'median ms':>10} {'p95 ms':>8} {'max ms':>8}")
        for page in pages:
            first = await client.get(page)  # warm: as a page after a lull would be
            if first.status_code != 200:
                raise SystemExit(f"{page}: {first.status_code} {first.text[:300]}")
            took = []
            for _ in range(repeat):
                started = time.perf_counter()
                answer = await client.get(page)
                took.append((time.perf_counter() - started) * 1000)
                answer.raise_for_status()
            p95 = statistics.quantiles(took, n=20)[-1] if len(took) > 1 else took[0]
            print(
                f"{page:34} {len(first.content):>9,} {statistics.median(took):>10.1f} "
                f"{p95:>8.1f} {max(took):>8.1f}"
            )


def chosen(pages: Sequence[str], wanted: Sequence[str] | None) -> list[str]:
    """The ``pages`` that start with one of ``wanted``; all of them when none is wanted."""
    return [p for p in pages if not wanted or p.startswith(tuple(wanted))]


def run(kind: str, args: argparse.Namespace, work: Path) -> None:
    with database(kind, work, args.postgresql, "bench_pages") as url:
        engine = open_engine(url)
        try:
            migrate.init(engine)
            repo = SqlRepository(engine)
            _day_start, _site, _events, loaded = load_district(repo, args, with_ai_and_heartbeats)
            if repo.postgresql:
                with engine.begin() as conn:
                    conn.exec_driver_sql("ANALYZE")
            UserStore(engine).add("head", PASSWORD, Role.ADMIN, [])
            print(
                f"\n{kind}: {args.events:,} events of one school loaded in {loaded:.1f} s; "
                f"{repo.count_events():,} events in the table"
            )
            settings = parse(
                f'[server]\nstate_dir = "{work}"\n[database]\nurl = "{url}"\n'
                '[admin]\ntimezone = "UTC"\n',
                "bench",
                work,
            )
            app = create_app(repo, settings)
            print(f"the district ({args.other_schools + 1} schools):")
            asyncio.run(time_pages(app, chosen(PAGES, args.page), args.repeat))
            print("the big school:")
            school = [p + ("&" if "?" in p else "?") + "site=big-school" for p in SCHOOL_PAGES]
            asyncio.run(time_pages(app, chosen(school, args.page), args.repeat))
        finally:
            engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    district_options(parser, repeat=10)
    parser.add_argument(
        "--page", action="append", help="time only the pages starting with this (repeatable)"
    )
    args = parser.parse_args(argv)
    kinds = ("sqlite", "postgresql") if args.database == "both" else (args.database,)
    with tempfile.TemporaryDirectory() as work:
        for kind in kinds:
            run(kind, args, Path(work))
    return 0


if __name__ == "__main__":
    sys.exit(main())
