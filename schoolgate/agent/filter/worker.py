"""The list worker: downloads sources, compiles a build and puts it in service, in its own process.

``python -m schoolgate.agent.filter.worker`` reads a JSON job on stdin and writes a JSON result
on stdout. It runs apart from the DNS server so that downloads, archives, numpy and the millions
of short-lived strings of a compile never touch the server's memory or its event loop, and it
runs at a lower priority so that a compile never starves DNS on a two-core box.

One worker at a time works on a state directory (a lock file), so the agent's scheduled update
and an operator's ``lists update`` or ``lists compile`` cannot interleave. The worker itself puts
the new build in service (``current.sgl``, the old one kept as ``previous.sgl``) while it holds
the lock; whoever started it then maps ``current.sgl``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schoolgate.agent.filter.build import build
from schoolgate.agent.filter.compiled import CompiledListError, CompiledLists
from schoolgate.agent.filter.downloads import DownloadState, DownloadStore, SourceState
from schoolgate.agent.filter.fetch import FetchError, FetchLimits, client, fetch
from schoolgate.agent.filter.parsers import ListFormat
from schoolgate.agent.filter.sources import (
    BuildError,
    BuildResult,
    Candidate,
    ListSource,
    is_current,
    report_lines,
)
from schoolgate.agent.filter.store import promote
from schoolgate.agent.filter.unpack import UnpackError, unpack

_PARALLEL_DOWNLOADS = 4


@dataclass(frozen=True)
class Remote:
    """A source to download: where from, and how to turn the download into a list."""

    name: str
    url: str
    shown_url: str  # without a password
    member: str
    key: str  # which download the copy on disk is of (see ``RemoteSource.key``)


@dataclass
class Fetch:
    """What happened to one download."""

    status: str  # "new", "unchanged" or "failed"
    error: str = ""
    etag: str = ""
    last_modified: str = ""


@contextmanager
def locked(lists_dir: Path) -> Iterator[None]:
    """Hold the state directory's list lock, waiting for another worker if need be."""
    lists_dir.mkdir(parents=True, exist_ok=True)
    with open(lists_dir / ".lock", "a+b") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("waiting for another list update to finish", file=sys.stderr, flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def download_all(
    remotes: Sequence[Remote], store: DownloadStore, state: DownloadState, limits: FetchLimits
) -> dict[str, Fetch]:
    """Download every remote source into its candidate file; never raises for one source."""

    def one(remote: Remote) -> Fetch:
        known = state.get(remote.name)
        have_copy = store.last_good(remote.name).exists()
        try:
            with client(limits) as http:
                got = fetch(
                    http,
                    remote.url,
                    store.download(remote.name),
                    limits,
                    # Validators only when there is a copy they describe: a 304 must never
                    # leave a source with nothing.
                    etag=known.etag if have_copy else "",
                    last_modified=known.last_modified if have_copy else "",
                )
            if not got.changed:
                return Fetch("unchanged", etag=got.etag, last_modified=got.last_modified)
            candidate = store.candidate(remote.name)
            unpack(store.download(remote.name), candidate, remote.member, limits.max_list_bytes)
            if have_copy and known.sha256 and _sha256(candidate) == known.sha256:
                # A server without validators sent the same list again.
                candidate.unlink()
                return Fetch("unchanged", etag=got.etag, last_modified=got.last_modified)
            return Fetch("new", etag=got.etag, last_modified=got.last_modified)
        except (FetchError, UnpackError) as exc:
            return Fetch("failed", str(exc))
        except OSError as exc:
            return Fetch("failed", f"cannot store the download: {exc.strerror or exc}")
        except Exception as exc:
            return Fetch("failed", f"{type(exc).__name__}: {exc}")
        finally:
            store.download(remote.name).unlink(missing_ok=True)

    store.dir.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(_PARALLEL_DOWNLOADS, thread_name_prefix="download") as pool:
        return dict(zip((r.name for r in remotes), pool.map(one, remotes), strict=True))


def run(job: dict[str, Any]) -> dict[str, Any]:
    """Do one job (see the module docstring); returns the JSON-able result."""
    lists_dir = Path(job["lists_dir"])
    store = DownloadStore(lists_dir)
    sources = [
        ListSource(
            s["name"],
            s["category"],
            Path(s["path"]),
            ListFormat(s["format"]),
            confidential=bool(s.get("confidential")),
        )
        for s in job["sources"]
    ]
    remotes = [Remote(**r) for r in job.get("remote", [])]
    with locked(lists_dir):
        _remove_leftovers(lists_dir, store)
        state = store.load()
        _forget_changed(remotes, store, state)
        in_service = _entries_in_service(lists_dir)
        fetched: dict[str, Fetch] = {}
        started = time.time()
        if job.get("fetch"):
            lim = job["limits"]
            limits = FetchLimits(
                lim["timeout"],
                lim["max_download_bytes"],
                lim["max_redirects"],
                lim["max_list_bytes"],
            )
            fetched = download_all(remotes, store, state, limits)
        candidates = {
            name: Candidate(
                store.candidate(name),
                _previous_entries(name, store, state, in_service),
                float(job.get("max_shrink", 0.5)),
                force=bool(job.get("force")),
            )
            for name, f in fetched.items()
            if f.status == "new"
        }
        remote_names = {r.name for r in remotes}
        usable = [
            s
            for s in sources
            if s.name not in remote_names or s.path.exists() or s.name in candidates
        ]
        if job.get("fetch") and not candidates:
            unchanged = _unchanged_build(lists_dir, usable)
            if unchanged is not None:
                # Nothing new was downloaded and the build in service is made of exactly these
                # copies: a rebuild would cost minutes of CPU on a Pi for the same file.
                _record(state, remotes, fetched, None, started)
                _save_state(store, state)
                return {
                    "ok": True,
                    "build_id": unchanged[0],
                    "names": unchanged[1],
                    "seconds": 0.0,
                    "report": [f"nothing changed: build {unchanged[0]} stays in service"],
                    "sources": _statuses(state, remotes, fetched, None),
                }
        try:
            result = build(usable, lists_dir / "next.sgl", candidates)
            lists = promote(lists_dir)
            for name, verdict in result.verdicts.items():
                if verdict is None:
                    os.replace(candidates[name].path, store.last_good(name))
        except (BuildError, CompiledListError, OSError) as exc:
            for c in candidates.values():
                c.path.unlink(missing_ok=True)
            _record(state, remotes, fetched, None, started)
            _save_state(store, state)
            reason = str(exc) if not isinstance(exc, OSError) else f"cannot write: {exc}"
            return {"ok": False, "error": reason, "sources": _statuses(state, remotes, fetched)}
        build_id = lists.build_id
        lists.close()
        _record(state, remotes, fetched, result, started)
        _save_state(store, state)
        if job.get("fetch"):
            # Only an update knows every downloaded source; a compile is given none of them.
            store.forget_others({r.name for r in remotes})
    shown = str(lists_dir / "current.sgl")
    report = [line.replace(str(lists_dir / "next.sgl"), shown) for line in report_lines(result)]
    return {
        "ok": True,
        "build_id": build_id,
        "names": result.names,
        "seconds": result.seconds,
        "report": report,
        "sources": _statuses(state, remotes, fetched, result),
    }


def _forget_changed(remotes: Sequence[Remote], store: DownloadStore, state: DownloadState) -> None:
    """Drop the copy of a source whose URL or archive member changed: it is another list now,
    so its copy, validators and entry count must not stand in for it."""
    for remote in remotes:
        known = state.get(remote.name)
        if known.key != remote.key:
            store.last_good(remote.name).unlink(missing_ok=True)
            state.sources[remote.name] = SourceState(url=remote.shown_url, key=remote.key)


def _entries_in_service(lists_dir: Path) -> dict[str, int]:
    """Entries of each source in the current build: the shrink check's floor when the state
    file was lost."""
    try:
        lists = CompiledLists(lists_dir / "current.sgl")
    except CompiledListError:
        return {}
    try:
        return {s.name: s.entries for s in lists.sources}
    finally:
        lists.close()


def _previous_entries(
    name: str, store: DownloadStore, state: DownloadState, in_service: dict[str, int]
) -> int:
    if not store.last_good(name).exists():
        return 0
    return state.get(name).entries or in_service.get(name, 0)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _unchanged_build(lists_dir: Path, sources: Sequence[ListSource]) -> tuple[str, int] | None:
    """(build id, names) of the current build when it was made from exactly ``sources``."""
    try:
        lists = CompiledLists(lists_dir / "current.sgl")
    except CompiledListError:
        return None
    try:
        return (lists.build_id, lists.count) if is_current(lists, sources) else None
    finally:
        lists.close()


def _remove_leftovers(lists_dir: Path, store: DownloadStore) -> None:
    """Temporary files of a worker that was killed (the agent stopped mid-update)."""
    for directory in (lists_dir, store.dir):
        if directory.is_dir():
            for path in directory.glob(".*"):
                if path.suffix in (".part", ".tmp") and path.is_file():
                    path.unlink(missing_ok=True)
    if store.dir.is_dir():
        for path in store.dir.glob("*.new"):
            path.unlink(missing_ok=True)


def _save_state(store: DownloadStore, state: DownloadState) -> None:
    # The state only makes the next update cheaper and the status informative: failing to
    # write it (a full disk) must not fail an update whose build is already in service.
    try:
        store.save(state)
    except OSError as exc:
        print(f"cannot save the download state: {exc}", file=sys.stderr)


def _record(
    state: DownloadState,
    remotes: Sequence[Remote],
    fetched: dict[str, Fetch],
    result: BuildResult | None,
    now: float,
) -> None:
    reports = {r.source.name: r for r in result.sources} if result else {}
    for remote in remotes:
        s = state.get(remote.name)
        s.url = remote.shown_url
        s.key = remote.key
        f = fetched.get(remote.name)
        verdict = result.verdicts.get(remote.name) if result else None
        if f is not None:
            s.last_attempt = now
            refused = f.status == "new" and (result is None or verdict is not None)
            if f.status == "failed" or refused:
                s.error = f.error if f.status == "failed" else (verdict or "the build failed")
                s.failures += 1
            else:
                s.error = ""
                s.failures = 0
                s.last_success = now
                # Validators describe the copy in service: a new one's, or fresh ones a
                # server gave for the same content.
                s.etag = f.etag or (s.etag if f.status == "unchanged" else "")
                s.last_modified = f.last_modified or (
                    s.last_modified if f.status == "unchanged" else ""
                )
                if f.status == "new":
                    s.last_change = now
        served = reports.get(remote.name)
        if served is not None:
            s.entries = served.report.entries
            s.sha256 = served.sha256
            try:
                s.size = served.source.path.stat().st_size
            except OSError:
                s.size = 0


def _statuses(
    state: DownloadState,
    remotes: Sequence[Remote],
    fetched: dict[str, Fetch],
    result: BuildResult | None = None,
) -> dict[str, dict[str, Any]]:
    out = {}
    for remote in remotes:
        s = state.get(remote.name)
        f = fetched.get(remote.name)
        if f is None:
            status = "kept"
        elif f.status == "new" and result is not None and result.verdicts.get(remote.name) is None:
            status = "updated"
        elif f.status == "new":
            status = "refused"
        else:
            status = f.status
        out[remote.name] = {"status": status, "error": s.error, "entries": s.entries}
    return out


def _main() -> int:
    job = json.load(sys.stdin)
    result = run(job)
    json.dump(result, sys.stdout)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    os.nice(5)  # a compile must never starve the DNS server on a two-core box
    sys.exit(_main())
