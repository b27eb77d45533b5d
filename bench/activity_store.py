"""How fast the activity store takes events, and what they cost on disk.

    .venv/bin/python bench/activity_store.py [--events 200000] [--batch 500]

Writes ``--events`` DNS events shaped like a school's (a few hundred devices, a few thousand
names, one in twenty blocked) in batches of ``--batch``, one transaction each, as the agent's
writer will; then times a search by name (a range of the reversed-name index), by client and by
category, and a prune of half the events. Reported: events a second written, bytes a stored
event, and each search's time. Nothing here runs in CI.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from schoolgate.agent.activity.events import Event, EventKind
from schoolgate.agent.activity.store import ActivityStore, EventFilter


def events(count: int, start: float) -> list[Event]:
    rng = random.Random(7)
    names = [f"www.site{i}.example" for i in range(3000)]
    made = []
    for i in range(count):
        blocked = rng.random() < 0.05
        device = rng.randrange(400)
        made.append(
            Event(
                kind=EventKind.DNS,
                time=start + i * 0.01,
                client_ip=f"10.20.{device // 250}.{device % 250 + 2}",
                mac=f"aa:bb:cc:00:{device // 256:02x}:{device % 256:02x}",
                hostname=f"ks2-lab-{device}",
                group="ks2" if device < 300 else "staff",
                name=rng.choice(names),
                qtype="A" if rng.random() < 0.7 else "AAAA",
                action="block" if blocked else "allow",
                categories=("games",) if blocked else (),
                rule="category" if blocked else "no list matched",
                rcode="NOERROR",
                latency_ms=round(rng.random() * 20, 3),
                cache_hit=rng.random() < 0.8,
            )
        )
    return made


def timed(label: str, fn: object) -> None:
    started = time.perf_counter()
    found = fn()  # type: ignore[operator]
    print(f"| {label} | {(time.perf_counter() - started) * 1e3:.1f} ms | {found} |")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args(argv)
    start = time.time() - args.events * 0.01
    made = events(args.events, start)
    with tempfile.TemporaryDirectory() as tmp:
        store = ActivityStore(Path(tmp))
        began = time.perf_counter()
        for i in range(0, len(made), args.batch):
            store.add(made[i : i + args.batch])
        elapsed = time.perf_counter() - began
        size = sum(p.stat().st_size for p in store.path.parent.iterdir())
        print("| events | batch | written a second | bytes an event |")
        print("|---|---|---|---|")
        rate = args.events / elapsed
        print(f"| {args.events:,} | {args.batch} | {rate:,.0f} | {size / args.events:.0f} |")
        print()
        print("| search | time | found |")
        print("|---|---|---|")
        timed(
            "by name (site7.example and below), newest 1000",
            lambda: len(store.search(EventFilter(name="site7.example"))),
        )
        timed(
            "by client, newest 1000", lambda: len(store.search(EventFilter(clients=("10.20.0.9",))))
        )
        timed("by category, newest 1000", lambda: len(store.search(EventFilter(category="games"))))
        timed("prune the older half", lambda: store.prune(start + args.events * 0.005))
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
