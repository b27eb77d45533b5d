"""What the block page costs: the agent's memory with and without it, and pages a second.

    .venv/bin/python bench/blockpage.py [--pages 2000] [--clients 4]

Starts `schoolgate-agent run` twice on loopback with the same small configuration, once with
`[blockpage] enabled = false` and once with it on, and reads the agent's RSS once it serves.
Then, with the page on, `--clients` keep-alive HTTP clients fetch the page for a blocked name
`--pages` times in all; reported: pages a second and the median and 99th-percentile time of
one page. Every process it starts is stopped when it ends. Nothing here runs in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
from procs import ProcessGroup, status_kib

AGENT = [sys.executable, "-m", "schoolgate.agent.cli"]

CONFIG = """
[server]
listen = ["127.0.0.1:{dns_port}"]
state_dir = "{state}"
[upstream]
servers = ["udp://127.0.0.1:9"]
[sources]
defaults = false
[filter]
block_response = "blockpage"
blockpage_ipv4 = ["127.0.0.1"]
[blockpage]
enabled = {enabled}
listen = ["127.0.0.1:{page_port}"]
school_name = "Bench Primary"
[[lists]]
name = "games"
category = "games"
path = "{games}"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_listening(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def start(group: ProcessGroup, work: Path, enabled: bool) -> tuple[int, int]:
    """Start an agent; (pid, block page port)."""
    dns_port, page_port = free_port(), free_port()
    config = work / f"agent-{enabled}.toml"
    config.write_text(
        CONFIG.format(
            dns_port=dns_port,
            page_port=page_port,
            state=work / f"state-{enabled}",
            enabled=str(enabled).lower(),
            games=work / "games.txt",
        ),
        encoding="utf-8",
    )
    proc = group.start(
        f"agent-{enabled}", [*AGENT, "run", "--config", str(config)], work / "agent.log"
    )
    wait_listening(dns_port)  # TCP on the DNS port: the agent serves
    if enabled:
        wait_listening(page_port)
    time.sleep(1.0)  # let start-up garbage settle
    return proc.pid, page_port


async def fetch_pages(port: int, pages: int, clients: int) -> list[float]:
    times: list[float] = []
    per_client = pages // clients

    async def client() -> None:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            for _ in range(per_client):
                started = time.perf_counter()
                response = await http.get("/", headers={"Host": "www.game.example"})
                times.append(time.perf_counter() - started)
                assert response.status_code == 200, response.status_code

    await asyncio.gather(*(client() for _ in range(clients)))
    return times


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, ProcessGroup() as group:
        work = Path(tmp)
        (work / "games.txt").write_text("game.example\n", encoding="utf-8")
        rss: dict[bool, float] = {}
        for enabled in (False, True):
            pid, page_port = start(group, work, enabled)
            rss[enabled] = status_kib(pid, "VmRSS") / 1024
            if enabled:
                started = time.perf_counter()
                times = asyncio.run(fetch_pages(page_port, args.pages, args.clients))
                elapsed = time.perf_counter() - started
            group.close()
    times.sort()
    print("| agent RSS, block page off | on | pages/s | median ms | p99 ms |")
    print("|---|---|---|---|---|")
    print(
        f"| {rss[False]:.1f} MB | {rss[True]:.1f} MB | {len(times) / elapsed:,.0f} |"
        f" {statistics.median(times) * 1e3:.2f} | {times[int(len(times) * 0.99)] * 1e3:.2f} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
