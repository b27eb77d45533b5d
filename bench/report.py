"""Turn per-server results into the markdown table (and schoolgate's ratios to its peers)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from perf import PerfResult


@dataclass
class ServerResult:
    """Everything measured for one server; runs are keyed hits/rate2000/rate10000/misses."""

    name: str
    status: str = "ok"
    startup_s: float = math.nan
    compile_s: float = math.nan  # the server's own list compile command, when it has one
    first_start_s: float = math.nan  # a warm-up start that compiled the list, when needed
    rss_mb: float = math.nan
    rss_idle_mb: float = math.nan
    runs: dict[str, PerfResult] = field(default_factory=dict)
    probes: dict[str, str] = field(default_factory=dict)
    reload: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def run_value(key: str, attr: str) -> Callable[[ServerResult], float]:
    def get(result: ServerResult) -> float:
        run = result.runs.get(key)
        return float(getattr(run, attr)) if run else math.nan

    return get


@dataclass(frozen=True)
class Column:
    title: str
    get: Callable[[ServerResult], float]
    digits: int
    higher_is_better: bool = False


COLUMNS: tuple[Column, ...] = (
    Column("start-up s", lambda r: r.startup_s, 2),
    Column("hit qps", run_value("hits", "qps"), 0, higher_is_better=True),
    Column("miss qps", run_value("misses", "qps"), 0, higher_is_better=True),
    Column("2k avg ms", run_value("rate2000", "avg_ms"), 3),
    Column("2k p99 ms", run_value("rate2000", "p99_ms"), 3),
    Column("2k max ms", run_value("rate2000", "max_ms"), 2),
    Column("10k avg ms", run_value("rate10000", "avg_ms"), 3),
    Column("10k p99 ms", run_value("rate10000", "p99_ms"), 3),
    Column("10k max ms", run_value("rate10000", "max_ms"), 2),
    Column("RSS MB", lambda r: r.rss_mb, 1),
)


def fmt(value: float, digits: int) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:,.{digits}f}"


def ratio(ours: float, theirs: float) -> str:
    if math.isnan(ours) or math.isnan(theirs) or theirs == 0:
        return "n/a"
    return f"{ours / theirs:.2f}x"


def table_rows(results: Sequence[ServerResult], subject: str) -> list[list[str]]:
    rows = [[r.name] + [fmt(c.get(r), c.digits) for c in COLUMNS] for r in results]
    ours = next((r for r in results if r.name == subject and r.status == "ok"), None)
    if ours is None:
        return rows
    for peer in results:
        if peer.name == subject or peer.status != "ok":
            continue
        rows.append(
            [f"{subject} / {peer.name}"] + [ratio(c.get(ours), c.get(peer)) for c in COLUMNS]
        )
    return rows


def markdown_table(results: Sequence[ServerResult], subject: str = "schoolgate") -> str:
    header = ["server"] + [c.title for c in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(results, subject)]
    return "\n".join(lines)


def details(results: Sequence[ServerResult]) -> str:
    """Facts that do not fit the table but change how it reads."""
    out: list[str] = []
    for r in results:
        out.append(f"- **{r.name}**: {r.status}")
        if not math.isnan(r.compile_s):
            out.append(f"  - list compile before the first start: {r.compile_s:.2f} s")
        if not math.isnan(r.first_start_s):
            out.append(f"  - first start (compiles the list): {r.first_start_s:.2f} s")
        for key, run in r.runs.items():
            out.append(
                f"  - {key}: {run.qps:,.0f} qps, sent {run.sent:,}, lost {run.lost:,}, "
                f"server CPU {run.server_cpu:.0%}, other processes {run.other_cpu:.0%} of a "
                f"core, rcodes {run.rcodes}"
                + (
                    f", p50 {run.p50_ms:.3f} ms, p99.9 {run.p999_ms:.3f} ms"
                    if not math.isnan(run.p99_ms)
                    else ""
                )
            )
        if r.probes:
            out.append("  - answers: " + "; ".join(f"{k}: {v}" for k, v in r.probes.items()))
        if r.reload:
            out.append("  - reload: " + ", ".join(f"{k} {v}" for k, v in r.reload.items()))
        out.extend(f"  - note: {note}" for note in r.notes)
    return "\n".join(out)
