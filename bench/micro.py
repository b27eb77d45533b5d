"""Microbenchmarks of the filter alone: compile time, compiled size, and one decision.

    .venv/bin/python bench/micro.py --names 1000000 --names 5000000

For each list size it compiles the generated list (bench/gen_lists.py makes it if missing),
reports time and bytes per name, then times decisions on the mapped file:

- miss5: a 5-label name none of whose suffixes is listed (five probes: the issue's target case);
- hit:   a name below a listed entry (the probes stop mattering, the match is found);
- memo:  the same question again through the per-group memo (what repeated queries cost).

Each figure is the best of 25 rounds of 20,000 calls, so other load on the machine does not
inflate it. Nothing here runs in CI.
"""

from __future__ import annotations

import argparse
import gc
import random
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import gen_lists

from schoolgate.agent.dns.wire import parse_query, text_to_wire
from schoolgate.agent.filter.build import build
from schoolgate.agent.filter.compiled import CompiledLists
from schoolgate.agent.filter.parsers import ListFormat
from schoolgate.agent.filter.sources import ListSource
from schoolgate.agent.policy.clients import Group
from schoolgate.agent.policy.decide import Decider

DATA = Path(__file__).resolve().parent / "data"
ROUNDS = 25
CALLS = 20_000


def best_of(fn: Callable[[], object], drain: Callable[[], object] | None = None) -> float:
    """Microseconds per call: the best round of ``CALLS`` calls; ``drain`` runs between rounds,
    outside the timing."""
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(CALLS):
            fn()
        best = min(best, (time.perf_counter() - start) / CALLS)
        if drain is not None:
            drain()
    return best * 1e6


def query_for(name: str) -> bytes:
    return (
        b"\x00\x00\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
        + text_to_wire(name)
        + b"\x00\x01\x00\x01"
    )


def bench_size(names: int) -> dict[str, float]:
    data = gen_lists.ensure(names, 1, DATA)
    listed = data.path(DATA, "domains")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "lists.sgl"
        gc.collect()
        started = time.perf_counter()
        result = build([ListSource("bench", "adult", listed, ListFormat.DOMAINS)], out)
        compile_s = time.perf_counter() - started
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        open_started = time.perf_counter()
        lists = CompiledLists(out)
        open_s = time.perf_counter() - open_started
        decider = Decider(lists)

        rng = random.Random(7)
        sample = [line.strip() for line in _head(listed, 2000)]
        hit_name = "a.b." + rng.choice(sample)
        miss_name = "w1.x2.y3.notlisted-zz9.example"
        miss = parse_query(query_for(miss_name))
        hit = parse_query(query_for(hit_name))
        group = Group("bench")
        assert not decider._decide(group, miss.qname, miss.labels).blocked
        assert decider._decide(group, hit.qname, hit.labels).blocked
        miss_labels = miss.labels
        hit_labels = hit.labels
        decider.decide(group, miss)

        figures = {
            "names": float(result.names),
            "compile_s": compile_s,
            "compile_peak_rss_mb": peak_mb,
            "bytes_per_name": result.size / result.names,
            "file_mb": result.size / 2**20,
            "open_ms": open_s * 1e3,
            "miss5_us": best_of(lambda: decider._decide(group, miss.qname, miss_labels)),
            "hit_us": best_of(lambda: decider._decide(group, hit.qname, hit_labels)),
            "lookup5_us": best_of(lambda: lists.lookup(miss.qname, miss_labels)),
            "memo_us": best_of(lambda: decider.decide(group, miss)),
        }
        lists.close()
    return figures


def _head(path: Path, n: int) -> list[str]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                out.append(line)
                if len(out) >= n:
                    break
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", type=int, action="append", default=[])
    args = parser.parse_args(argv)
    sizes = args.names or [1_000_000]
    rows = [bench_size(n) for n in sizes]
    print(
        "| names | compile s | compile peak RSS MB | bytes/name | file MB | open ms |"
        " decision miss, 5 labels us | lookup only us | decision hit us | memo hit us |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {int(r['names']):,} | {r['compile_s']:.1f} | {r['compile_peak_rss_mb']:.0f} |"
            f" {r['bytes_per_name']:.2f} | {r['file_mb']:.1f} | {r['open_ms']:.1f} |"
            f" {r['miss5_us']:.2f} | {r['lookup5_us']:.2f} | {r['hit_us']:.2f} |"
            f" {r['memo_us']:.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
