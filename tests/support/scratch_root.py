"""A scratch root for the installer: this machine's file system, seen through overlays that
catch every write.

A process is started in a mount namespace of its own, where ``/etc``, ``/opt``, ``/usr`` and
``/var`` are overlay file systems: reads see this machine's files, writes land in an upper
directory under the test's temporary directory. Commands are run in that namespace with
``nsenter``, as root, so the installer runs exactly as on a Raspberry Pi: it makes its users
in ``/etc/passwd``, its venv in ``/opt``, runs commands as those users with ``runuser``, and
enables its units with ``systemctl``. The machine itself is never changed: the upper
directories hold everything the installer wrote (a deleted file is a whiteout there), so
they are the installation, file by file.

Networking is the machine's own: a program the installer set up and a test starts in the
namespace is reached on 127.0.0.1 from the test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

# What the installer may write to; anything else it touched would show on the machine.
OVERLAID: Final = ("/etc", "/opt", "/usr", "/var")


class ScratchRoot:
    def __init__(self, base: Path, holder: subprocess.Popen[str]) -> None:
        self.base = base
        self._holder = holder

    def upper(self, path: str | Path) -> Path:
        """Where a file the installer wrote at ``path`` is kept: ``/etc/x`` -> ``UPPER/etc/x``."""
        path = Path(path)
        top = "/" + path.parts[1]
        assert top in OVERLAID, f"{path} is not under an overlaid directory"
        return self.base / "upper" / top.strip("/") / Path(*path.parts[2:])

    def written(self) -> set[str]:
        """Every path written under the overlaid directories, as the machine would see it."""
        found: set[str] = set()
        for top in OVERLAID:
            upper = self.base / "upper" / top.strip("/")
            for path in upper.rglob("*"):
                found.add(top + "/" + str(path.relative_to(upper)))
        return found

    def command(self, argv: Sequence[str | Path]) -> list[str]:
        """``argv`` as run inside the namespace."""
        pid = str(self._holder.pid)
        return ["nsenter", "--target", pid, "--mount", "--", *[str(a) for a in argv]]

    def run(
        self, argv: Sequence[str | Path], *, stdin: str | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(argv),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd="/",
            env={**os.environ, "LC_ALL": "C.UTF-8"},
        )

    def start(self, argv: Sequence[str | Path], log: Path) -> subprocess.Popen[str]:
        """A long-running program inside the namespace, its output in ``log``."""
        with log.open("w", encoding="utf-8") as out:
            return subprocess.Popen(
                self.command(argv), stdout=out, stderr=subprocess.STDOUT, cwd="/", text=True
            )


def unavailable() -> str | None:
    """Why a scratch root cannot be made here, or None."""
    if os.geteuid() != 0:
        return "the installer's scratch root needs root (mount namespaces and overlays)"
    for tool in ("unshare", "nsenter", "systemd-sysusers", "runuser", "systemctl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    missing = [top for top in OVERLAID if not Path(top).is_dir()]
    if missing:
        return f"this machine has no {', '.join(missing)}"
    return None


@contextlib.contextmanager
def scratch_root(base: Path) -> Iterator[ScratchRoot]:
    """The namespace, for as long as the block runs; the upper directories stay afterwards."""
    mounts = []
    for top in OVERLAID:
        name = top.strip("/")
        for part in ("upper", "overlay-work"):
            (base / part / name).mkdir(parents=True)
        mounts.append(
            f"mount -t overlay overlay -o lowerdir={top},upperdir={base}/upper/{name},"
            f"workdir={base}/overlay-work/{name} {top}"
        )
    script = " && ".join([*mounts, "echo ready", "exec sleep 3600"])
    holder = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stderr is not None
    try:
        if holder.stdout.readline().strip() != "ready":
            holder.wait(timeout=10)
            raise RuntimeError(f"no scratch root: {holder.stderr.read().strip()}")
        yield ScratchRoot(base, holder)
    finally:
        if holder.poll() is None:
            holder.send_signal(signal.SIGTERM)
        holder.wait(timeout=10)
        holder.stdout.close()
        holder.stderr.close()
