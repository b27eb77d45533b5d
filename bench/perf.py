"""Run dnsperf and turn its output into numbers.

Percentiles come from dnsperf's verbose mode (-v), which prints one line per completed query,
"> RCODE name type latency_seconds", or "> T name type" for a query that timed out. That costs
dnsperf some CPU, so it is only used for the fixed-rate runs, never for throughput.
"""

from __future__ import annotations

import math
import re
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from procs import (
    ProcessGroup,
    all_cpu_ticks,
    cpu_seconds,
    other_cpu_seconds,
    pinned,
)

SUMMARY_FIELDS = {
    "sent": re.compile(r"Queries sent:\s+(\d+)"),
    "completed": re.compile(r"Queries completed:\s+(\d+)"),
    "lost": re.compile(r"Queries lost:\s+(\d+)"),
    "run_s": re.compile(r"Run time \(s\):\s+([\d.]+)"),
    "qps": re.compile(r"Queries per second:\s+([\d.]+)"),
    "avg_s": re.compile(r"Average Latency \(s\):\s+([\d.]+)"),
    "min_s": re.compile(r"Average Latency \(s\):\s+[\d.]+ \(min ([\d.]+)"),
    "max_s": re.compile(r"Average Latency \(s\):.*max ([\d.]+)\)"),
}
RCODES = re.compile(r"Response codes:\s+(.*)")


@dataclass
class PerfResult:
    """One dnsperf run, with latency percentiles when it ran verbose."""

    label: str
    argv: list[str]
    qps: float = 0.0
    sent: int = 0
    completed: int = 0
    lost: int = 0
    run_s: float = 0.0
    avg_ms: float = math.nan
    max_ms: float = math.nan
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    p999_ms: float = math.nan
    timeouts: int = 0
    rcodes: dict[str, int] = field(default_factory=dict)
    server_cpu: float = math.nan  # share of one core used by the server under test
    other_cpu: float = math.nan  # cores' worth of CPU used by processes not in the benchmark
    summary: str = ""


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile; nan for no data."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def parse_verbose(lines: Iterable[str]) -> tuple[list[float], int]:
    """Per-query latencies in ms (sorted) and the number of timeouts."""
    latencies: list[float] = []
    timeouts = 0
    for line in lines:
        if not line.startswith("> "):
            continue
        parts = line.split()
        if parts[1] == "T":
            timeouts += 1
        elif len(parts) >= 5:
            latencies.append(float(parts[4]) * 1000.0)
    latencies.sort()
    return latencies, timeouts


def parse_summary(text: str, result: PerfResult) -> None:
    values: dict[str, float] = {}
    for key, pattern in SUMMARY_FIELDS.items():
        match = pattern.search(text)
        if match:
            values[key] = float(match.group(1))
    result.sent = int(values.get("sent", 0))
    result.completed = int(values.get("completed", 0))
    result.lost = int(values.get("lost", 0))
    result.run_s = values.get("run_s", 0.0)
    result.qps = values.get("qps", 0.0)
    result.avg_ms = values.get("avg_s", math.nan) * 1000.0
    result.max_ms = values.get("max_s", math.nan) * 1000.0
    match = RCODES.search(text)
    if match:
        for item in match.group(1).split(", "):
            parts = item.split()
            if len(parts) >= 2 and parts[1].isdigit():
                result.rcodes[parts[0]] = int(parts[1])


@dataclass(frozen=True)
class PerfSettings:
    """What every dnsperf invocation of a run shares."""

    core: int | None
    outstanding: int = 100
    clients: int = 1
    timeout_s: float = 2.0


def dnsperf_argv(
    settings: PerfSettings,
    port: int,
    datafile: Path,
    seconds: float,
    qps: int | None,
    verbose: bool,
    once: bool,
) -> list[str]:
    argv = [
        "dnsperf",
        "-s",
        "127.0.0.1",
        "-p",
        str(port),
        "-d",
        str(datafile),
        "-l",
        f"{seconds:g}",
        "-q",
        str(settings.outstanding),
        "-c",
        str(settings.clients),
        "-t",
        f"{settings.timeout_s:g}",
    ]
    if qps is not None:
        argv += ["-Q", str(qps)]
    if verbose:
        argv.append("-v")
    if once:
        argv += ["-n", "1"]  # never loop: a repeated "miss" would be a cache hit
    return pinned(settings.core, argv)


def run_dnsperf(
    group: ProcessGroup,
    settings: PerfSettings,
    label: str,
    port: int,
    datafile: Path,
    seconds: float,
    *,
    qps: int | None = None,
    verbose: bool = False,
    once: bool = False,
    server_pid: int | None = None,
) -> PerfResult:
    """Run dnsperf to completion (bounded by -l) and parse what it printed."""
    argv = dnsperf_argv(settings, port, datafile, seconds, qps, verbose, once)
    result = PerfResult(label=label, argv=argv)
    with tempfile.TemporaryDirectory(prefix="dnsperf-") as tmp:
        out_path = Path(tmp) / "out.txt"
        cpu_before = cpu_seconds(server_pid) if server_pid else 0.0
        others_before = all_cpu_ticks()
        started = time.monotonic()
        proc = group.start(f"dnsperf {label}", argv, out_path)
        try:
            # -l bounds the run; the slack covers start-up and draining outstanding queries.
            proc.popen.wait(timeout=seconds + settings.timeout_s + 30)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"dnsperf {label} did not finish") from exc
        finally:
            group.stop(proc)
        elapsed = time.monotonic() - started
        ours = group.pids()
        result.other_cpu = other_cpu_seconds(others_before, all_cpu_ticks(), ours) / elapsed
        if server_pid:
            result.server_cpu = (cpu_seconds(server_pid) - cpu_before) / elapsed
        text = out_path.read_text(errors="replace")
    if proc.popen.returncode != 0:
        raise RuntimeError(f"dnsperf {label} failed ({proc.popen.returncode}):\n{text[-2000:]}")
    parse_summary(text, result)
    if verbose:
        latencies, result.timeouts = parse_verbose(text.splitlines())
        result.p50_ms = percentile(latencies, 50)
        result.p99_ms = percentile(latencies, 99)
        result.p999_ms = percentile(latencies, 99.9)
    # Keep the summary block only: verbose per-query lines would bloat the JSON.
    result.summary = "\n".join(line for line in text.splitlines() if not line.startswith("> "))
    return result
