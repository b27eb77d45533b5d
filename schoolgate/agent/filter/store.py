"""Where compiled builds live, and how a new one replaces the one in service.

``current.sgl`` is the build in service and ``previous.sgl`` the one before it. A new build is
made by the list worker (``worker``) in its own process: it downloads what it is asked to,
compiles into ``next.sgl``, opens and checks it, and only then renames it over ``current.sgl``.
Anything that fails on the way leaves the running build as it was.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xxhash

from schoolgate.agent.files import fsync_dir
from schoolgate.agent.filter.compiled import CompiledListError, CompiledLists
from schoolgate.agent.filter.downloads import DownloadStore
from schoolgate.agent.filter.sources import BuildError, ListSource, is_current

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemoteSource:
    """A source the worker downloads: the name it has in builds, and where it comes from."""

    name: str
    url: str
    shown_url: str
    member: str = ""

    @property
    def key(self) -> str:
        """Identifies the download: a copy fetched from another URL or member is another list."""
        return xxhash.xxh64_hexdigest(f"{self.url}\0{self.member}".encode())


@dataclass
class WorkerResult:
    """A build the worker put in service, with its report and what each download did."""

    lists: CompiledLists
    report: list[str]
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)


class UpdateError(BuildError):
    """An update that produced no build; ``sources`` says what each download did."""

    def __init__(self, message: str, sources: dict[str, dict[str, Any]]) -> None:
        super().__init__(message)
        self.sources = sources


class ListStore:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "lists"
        self.current = self.dir / "current.sgl"
        self.previous = self.dir / "previous.sgl"
        self.next = self.dir / "next.sgl"
        self.downloads = DownloadStore(self.dir)

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
        """Compile ``sources`` as they are on disk and put the result in service.

        Returns the new build and the worker's report, one line per list and a summary.
        """
        result = await self._work({"sources": _jobs(sources)})
        return result.lists, result.report

    async def update(
        self,
        sources: Sequence[ListSource],
        remote: Sequence[RemoteSource],
        limits: dict[str, Any],
        max_shrink: float,
        force: bool = False,
    ) -> WorkerResult:
        """Download ``remote``, compile every source and put the result in service.

        ``sources`` holds every source, the downloaded ones at their last-good paths.
        """
        job = {
            "sources": _jobs(sources),
            "remote": [
                {
                    "name": r.name,
                    "url": r.url,
                    "shown_url": r.shown_url,
                    "member": r.member,
                    "key": r.key,
                }
                for r in remote
            ],
            "fetch": True,
            "limits": limits,
            "max_shrink": max_shrink,
            "force": force,
        }
        return await self._work(job)

    async def _work(self, job: dict[str, Any]) -> WorkerResult:
        job["lists_dir"] = str(self.dir)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "schoolgate.agent.filter.worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await proc.communicate(json.dumps(job).encode())
        except asyncio.CancelledError:
            # The agent is stopping: the worker must not outlive it holding the lock.
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
        result = _worker_result(out, err, proc.returncode)
        # Opening checks the whole file (checksum, tables): tens of milliseconds at millions of
        # names, which a thread keeps off the event loop that answers DNS.
        lists = await asyncio.to_thread(CompiledLists, self.current)
        return WorkerResult(lists, result["report"], result.get("sources", {}))

    def promote(self) -> CompiledLists:
        """Open ``next.sgl``; if it is sound, make it current and keep the old one as previous.

        The worker does this itself while it holds the lock; this is for builds made here.
        """
        return promote(self.dir)

    def open_fallback(self) -> CompiledLists | None:
        """The newest intact build on disk, whatever its sources: better than no filter."""
        for path in (self.current, self.previous):
            try:
                return CompiledLists(path)
            except CompiledListError:
                continue
        return None


def promote(lists_dir: Path) -> CompiledLists:
    """Open ``next.sgl``; if it is sound, make it current and keep the old one as previous."""
    current, previous, nxt = (lists_dir / n for n in ("current.sgl", "previous.sgl", "next.sgl"))
    lists = CompiledLists(nxt)  # raises CompiledListError when the build is bad
    if current.exists():
        # A second name for the build in service becomes previous.sgl, so current.sgl exists
        # at every moment: an agent starting right now always finds a build.
        keep = lists_dir / ".previous.tmp"
        keep.unlink(missing_ok=True)
        os.link(current, keep)
        os.replace(keep, previous)
    os.replace(nxt, current)
    fsync_dir(lists_dir)
    lists.path = current
    return lists


def _jobs(sources: Sequence[ListSource]) -> list[dict[str, Any]]:
    return [
        {
            "name": s.name,
            "category": s.category,
            "path": str(s.path),
            "format": s.format.value,
            "confidential": s.confidential,
        }
        for s in sources
    ]


def _worker_result(out: bytes, err: bytes, returncode: int | None) -> dict[str, Any]:
    try:
        result: dict[str, Any] = json.loads(out) if out else {}
    except ValueError:
        result = {}
    if returncode == 0 and result.get("ok"):
        return result
    reason = result.get("error") or next(
        reversed(err.decode("utf-8", "replace").strip().splitlines()),
        f"the list worker exited with {returncode}",
    )
    raise UpdateError(reason, result.get("sources", {}))
