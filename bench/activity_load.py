"""Does every query reach the activity log? 100k queries at a fixed rate, counted in the store.

    .venv/bin/python bench/activity_load.py [--queries 100000] [--rate 10000] [--names 100000]

Starts NSD (a wildcard upstream) and `schoolgate-agent run` with the activity log and the
metrics endpoint on, each pinned to its own core (the agent to core 1; NSD and dnsperf share
core 0), sends the first ``--queries`` lines of the generated hit mix (Zipf repeats, about 10%
blocked names, some never seen) with dnsperf at ``--rate`` queries a second, then waits for
the writer and reports: queries answered, events stored (rows in the SQLite file), events
dropped (the agent's own counter), the agent's RSS, and how long the store took to catch up.
A second run sends the same queries as fast as dnsperf can (no rate): the figures of a
saturated agent, where dropping and counting is the designed behaviour.

Needs dnsperf and nsd (Debian packages); every process it starts is stopped when it ends.
Nothing here runs in CI.
"""

from __future__ import annotations

import argparse
import re
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from itertools import islice
from pathlib import Path

import gen_lists
import httpx
from perf import SUMMARY_FIELDS
from procs import ProcessGroup, pinned, status_kib
from servers import nsd_argv

from schoolgate.agent.dns.wire import text_to_wire

DATA = Path(__file__).resolve().parent / "data"
# The network monitor is off: it would watch whichever interface of the machine has a private
# address (scapy and its capture threads, about 35 MB), so the RSS figure would depend on the
# machine. This run measures the activity log.
AGENT = [sys.executable, "-m", "schoolgate.agent.cli"]
CONFIG = """
[server]
listen = ["127.0.0.1:{port}"]
state_dir = "{state}"
[upstream]
servers = ["udp://127.0.0.1:{upstream}"]
[sources]
defaults = false
[identity]
neighbours = false
[metrics]
listen = "127.0.0.1:{metrics}"
[monitor]
enabled = false
[[lists]]
name = "bench"
category = "adult"
path = "{domains}"
"""
_SAMPLE = re.compile(r"^(schoolgate_[a-z_]+)(?:\{[^}]*\})? ([0-9.e+-]+)$", re.M)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def answers(port: int) -> bool:
    query = b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + text_to_wire("x.example")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        try:
            s.sendto(query + b"\x00\x01\x00\x01", ("127.0.0.1", port))
            s.recv(512)
        except OSError:
            return False
    return True


def wait_answering(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answers(port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing answers on port {port}")


def metrics(port: int) -> dict[str, float]:
    """Each schoolgate metric summed over its labels."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    found: dict[str, float] = {}
    for name, value in _SAMPLE.findall(text):
        found[name] = found.get(name, 0.0) + float(value)
    return found


def stored(state: Path) -> int:
    with sqlite3.connect(state / "activity" / "events.sqlite") as db:
        # Not the readiness probes (x.example): only the queries dnsperf sent.
        count: int = db.execute(
            "SELECT count(*) FROM events WHERE kind = 'dns' AND name != 'x.example'"
        ).fetchone()[0]
        return count


def dnsperf(port: int, queries: Path, rate: int | None) -> dict[str, float]:
    argv = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries), "-n", "1"]
    argv += ["-c", "4", "-t", "2"]
    if rate:
        argv += ["-Q", str(rate)]
    out = subprocess.run(pinned(0, argv), capture_output=True, text=True, check=True).stdout
    found = {}
    for key in ("sent", "completed", "lost", "qps", "run_s"):
        match = SUMMARY_FIELDS[key].search(out)
        found[key] = float(match.group(1)) if match else float("nan")
    return found


def one_run(
    label: str, data: gen_lists.DataSet, queries: Path, rate: int | None, work: Path
) -> list[str]:
    port, upstream, metrics_port = free_port(), free_port(), free_port()
    state = work / f"state-{label}"
    config = work / f"{label}.toml"
    config.write_text(
        CONFIG.format(
            port=port,
            upstream=upstream,
            metrics=metrics_port,
            state=state,
            domains=data.path(DATA, "domains"),
        ),
        encoding="utf-8",
    )
    with ProcessGroup() as group:
        group.start("nsd", pinned(0, nsd_argv(work / f"nsd-{label}", upstream)), work / "nsd.log")
        wait_answering(upstream)
        agent = group.start(
            "schoolgate", pinned(1, [*AGENT, "run", "--config", str(config)]), work / "agent.log"
        )
        wait_answering(port, timeout=120)
        before = metrics(metrics_port)
        perf = dnsperf(port, queries, rate)
        sent_at = time.monotonic()
        # The writer catches up: wait until every query answered is written or dropped.
        answered = 0.0
        caught_up = float("nan")
        while time.monotonic() - sent_at < 60:
            now = metrics(metrics_port)
            answered = now.get("schoolgate_dns_queries_total", 0.0) - before.get(
                "schoolgate_dns_queries_total", 0.0
            )
            done = now.get("schoolgate_events_written_total", 0.0) + now.get(
                "schoolgate_events_dropped_total", 0.0
            )
            if answered and done >= answered + before.get("schoolgate_events_written_total", 0.0):
                caught_up = time.monotonic() - sent_at
                break
            time.sleep(0.1)
        rss_mb = status_kib(agent.pid, "VmRSS") / 1024
        after = metrics(metrics_port)
        group.stop(agent)
    rows = stored(state)
    dropped = after.get("schoolgate_events_dropped_total", 0.0)
    return [
        label,
        f"{perf['qps']:,.0f}",
        f"{perf['completed']:,.0f} of {perf['sent']:,.0f}",
        f"{answered:,.0f}",
        f"{rows:,}",
        f"{dropped:,.0f}",
        f"{caught_up:.1f} s",
        f"{rss_mb:.1f} MB",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=100_000)
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--names", type=int, default=100_000)
    opts = parser.parse_args(argv)
    data = gen_lists.ensure(opts.names, 1, DATA)
    with tempfile.TemporaryDirectory(prefix="sg-activity-") as tmp:
        work = Path(tmp)
        queries = work / "queries.txt"
        with open(data.path(DATA, "hits"), encoding="utf-8") as source:
            lines = list(islice(source, opts.queries))
        queries.write_text("".join(lines), encoding="utf-8")
        print(f"{len(lines):,} queries from the hit mix of {opts.names:,} listed names\n")
        print(
            "| run | qps | answered (dnsperf) | answered (agent) | events stored | dropped"
            " | store caught up after | agent RSS |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for label, rate in ((f"{opts.rate:,} qps", opts.rate), ("uncapped", None)):
            row = one_run(label.replace(",", ""), data, queries, rate, work)
            print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
