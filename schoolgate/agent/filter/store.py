"""Where compiled builds live, and how a new one replaces the one in service.

``current.sgl`` is the build in service and ``previous.sgl`` the one before it. A new build is
compiled by a worker process into ``next.sgl``, opened and checked, and only then renamed over
``current.sgl``. Anything that fails on the way leaves the running build as it was.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from schoolgate.agent.filter.compiled import CompiledListError, CompiledLists
from schoolgate.agent.filter.sources import BuildError, ListSource, is_current

log = logging.getLogger(__name__)


class ListStore:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "lists"
        self.current = self.dir / "current.sgl"
        self.previous = self.dir / "previous.sgl"
        self.next = self.dir / "next.sgl"

    def open_current(self, sources: Sequence[ListSource]) -> CompiledLists | None:
        """The current build when it is intact and made from exactly ``sources``."""
        try:
            lists = CompiledLists(self.current)
        except CompiledListError as exc:
            if self.current.exists():
                log.warning("compiled lists not usable, a new build is needed: %s", exc)
            return None
        if is_current(lists, sources):
            return lists
        lists.close()
        return None

    async def compile(self, sources: Sequence[ListSource]) -> tuple[CompiledLists, list[str]]:
        """Compile ``sources`` in a worker process and put the result in service on disk.

        Returns the new build and the worker's report, one line per list and a summary.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        job = {
            "out": str(self.next),
            "sources": [
                {
                    "name": s.name,
                    "category": s.category,
                    "path": str(s.path),
                    "format": s.format.value,
                }
                for s in sources
            ],
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "schoolgate.agent.filter.build",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate(json.dumps(job).encode())
        result = _worker_result(out, err, proc.returncode)
        report = [line.replace(str(self.next), str(self.current)) for line in result["report"]]
        return self.promote(), report

    def promote(self) -> CompiledLists:
        """Open ``next.sgl``; if it is sound, make it current and keep the old one as previous."""
        lists = CompiledLists(self.next)  # raises CompiledListError when the build is bad
        if self.current.exists():
            os.replace(self.current, self.previous)
        os.replace(self.next, self.current)
        lists.path = self.current
        return lists

    def open_fallback(self) -> CompiledLists | None:
        """The newest intact build on disk, whatever its sources: better than no filter."""
        for path in (self.current, self.previous):
            try:
                return CompiledLists(path)
            except CompiledListError:
                continue
        return None


def _worker_result(out: bytes, err: bytes, returncode: int | None) -> dict[str, Any]:
    try:
        result: dict[str, Any] = json.loads(out) if out else {}
    except ValueError:
        result = {}
    if returncode == 0 and result.get("ok"):
        return result
    reason = (
        result.get("error")
        or err.decode("utf-8", "replace").strip().splitlines()[-1:]
        or [f"worker exited with {returncode}"]
    )
    raise BuildError(reason if isinstance(reason, str) else reason[0])
