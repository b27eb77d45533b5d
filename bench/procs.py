"""Start, watch and reliably stop the processes a benchmark run needs.

Every process is started in its own session (process group), so a Ctrl-C in the terminal
reaches only the harness, which then stops each group it started: daemons that fork helpers
(nsd) are stopped whole, and nothing outlives the run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
STOP_GRACE_S = 10.0


@dataclass
class Proc:
    """A started process group and where its output goes."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes] = field(repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        self.log.flush()
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class ProcessGroup:
    """Owns every process of a run; closing it stops them all, newest first."""

    def __init__(self) -> None:
        self.procs: list[Proc] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> Proc:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = log_path.open("ab")
        log.write(f"\n=== {name}: {' '.join(argv)}\n".encode())
        log.flush()
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
        proc = Proc(name, popen, log_path, log)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc, grace: float = STOP_GRACE_S) -> int | None:
        """SIGTERM the process group, then SIGKILL it if it lingers; returns the exit code."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.popen.wait()
        # Helpers forked by the leader may still be in the group after the leader exits.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.log.close()
        if proc in self.procs:
            self.procs.remove(proc)
        return proc.popen.returncode

    def pids(self) -> set[int]:
        """Every live process this group started, with their descendants, and this one."""
        found = {os.getpid()}
        for proc in self.procs:
            found.update(descendants(proc.pid))
        return found

    def close(self) -> None:
        for proc in reversed(list(self.procs)):
            self.stop(proc)

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


@contextlib.contextmanager
def termination_as_interrupt() -> Iterator[None]:
    """Turn SIGINT/SIGTERM/SIGHUP into KeyboardInterrupt so cleanup runs however the run ends.

    SIGINT is included because a shell starts background jobs with it ignored, and Python then
    keeps ignoring it.
    """

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def descendants(pid: int) -> list[int]:
    """pid and all its live descendants (servers may fork workers)."""
    found = [pid]
    index = 0
    while index < len(found):
        current = found[index]
        index += 1
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                found.extend(int(child) for child in task.read_text().split())
    return found


def status_kib(pid: int, key: str) -> int:
    """A kB figure from /proc/PID/status (VmRSS, VmHWM), 0 if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def tree_kib(pid: int, key: str = "VmRSS") -> int:
    return sum(status_kib(p, key) for p in descendants(pid))


def cpu_ticks(pid: int) -> int:
    """User+system CPU time of one process in clock ticks, 0 if it is gone."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        # The command name may contain spaces; fields are counted after its ")".
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    return 0


def cpu_seconds(pid: int) -> float:
    """User+system CPU time of the process tree."""
    return sum(cpu_ticks(p) for p in descendants(pid)) / CLOCK_TICKS


def all_cpu_ticks() -> dict[int, int]:
    """CPU ticks of every process on the machine, to spot load that is not the benchmark's."""
    return {
        int(entry.name): cpu_ticks(int(entry.name))
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit()
    }


def other_cpu_seconds(before: dict[int, int], after: dict[int, int], ours: set[int]) -> float:
    """CPU used between two all_cpu_ticks() readings by processes outside ours.

    A lower bound: a process that started and exited in between is not seen.
    """
    ticks = sum(t - before.get(pid, 0) for pid, t in after.items() if pid not in ours)
    return max(ticks, 0) / CLOCK_TICKS


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing is bound to the UDP port (a stale server would skew every number)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pinned(core: int | None, argv: Sequence[str]) -> list[str]:
    """argv run under taskset on one core; taskset execs, so the PID stays the program's."""
    return list(argv) if core is None else ["taskset", "-c", str(core), *argv]


def wait_exit(proc: Proc, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = proc.popen.poll()
        if code is not None:
            return code
        time.sleep(0.05)
    return None
