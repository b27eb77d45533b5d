"""Runs ``schoolgate-agent`` as a real process, as an IT provider would."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dns.exception
import dns.message
import dns.query


def promtool() -> str | None:
    """Prometheus's checker: on PATH, or where ./dev test puts it (beside the venv's python)."""
    return shutil.which("promtool") or shutil.which(
        "promtool", path=str(Path(sys.executable).parent)
    )


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


def agent_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "schoolgate.agent.cli", *args]


def run_agent_command(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``schoolgate-agent ARGS`` to the end, its output captured as text."""
    return subprocess.run(
        agent_command(*args), capture_output=True, text=True, timeout=timeout, check=False
    )


def wait_until_answering(port: int, proc: subprocess.Popen[str], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    query = dns.message.make_query("startup-probe.invalid", "A")
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"agent exited with {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}"
            )
        with contextlib.suppress(dns.exception.Timeout, OSError):
            dns.query.udp(query, "127.0.0.1", port=port, timeout=0.2)
            return
    raise RuntimeError("agent did not start answering")


@contextlib.contextmanager
def running_agent(*args: str, port: int, log: Path) -> Iterator[subprocess.Popen[str]]:
    """Start the agent, wait until it answers, and make sure it is gone afterwards."""
    with open(log, "w", encoding="utf-8") as err:
        proc = subprocess.Popen(
            agent_command("run", *args),
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            wait_until_answering(port, proc)
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
