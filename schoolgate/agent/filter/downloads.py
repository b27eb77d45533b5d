"""Where downloaded sources live, and what is known about each.

``lists/sources/NAME.list`` is the last good copy of each downloaded source: the one the
compiled build uses, kept so that a restart without internet still has every list.
``lists/sources/state.json`` records, per source, the last attempt and the last success, the
validators for the next conditional request, the entry count and the last error. It is
written atomically and read leniently: a damaged state file costs conditional requests, never
a list.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Final

import xxhash

from schoolgate.agent.files import write_atomic

_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass
class SourceState:
    url: str = ""  # as shown to people: without a password
    key: str = ""  # which download the copy is of: URL and archive member, hashed
    etag: str = ""
    last_modified: str = ""
    last_attempt: float = 0.0
    last_success: float = 0.0  # the last attempt that ended with a usable list (new or 304)
    last_change: float = 0.0  # when the list in service last changed
    entries: int = 0  # of the last good copy
    size: int = 0  # bytes of the last good copy, unpacked
    sha256: str = ""
    error: str = ""  # why the last attempt failed, or "" when it did not
    failures: int = 0  # attempts in a row that failed

    @classmethod
    def from_json(cls, raw: Any) -> SourceState:
        if not isinstance(raw, dict):
            return cls()
        known = {f.name: f.type for f in fields(cls)}
        kept = {k: v for k, v in raw.items() if k in known}
        try:
            return cls(**kept)
        except TypeError:  # pragma: no cover - a hand-edited file
            return cls()


@dataclass
class DownloadState:
    sources: dict[str, SourceState] = field(default_factory=dict)

    def get(self, name: str) -> SourceState:
        return self.sources.setdefault(name, SourceState())


class DownloadStore:
    def __init__(self, lists_dir: Path) -> None:
        self.dir = lists_dir / "sources"
        self.state_file = self.dir / "state.json"

    def last_good(self, name: str) -> Path:
        return self.dir / f"{file_stem(name)}.list"

    def candidate(self, name: str) -> Path:
        return self.dir / f"{file_stem(name)}.new"

    def download(self, name: str) -> Path:
        return self.dir / f"{file_stem(name)}.download"

    def load(self) -> DownloadState:
        try:
            raw = json.loads(self.state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return DownloadState()
        sources = raw.get("sources", {}) if isinstance(raw, dict) else {}
        return DownloadState({str(k): SourceState.from_json(v) for k, v in sources.items()})

    def save(self, state: DownloadState) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        body = json.dumps(
            {"sources": {k: asdict(v) for k, v in sorted(state.sources.items())}}, indent=1
        )
        write_atomic(self.state_file, body.encode("utf-8"))

    def forget_others(self, keep: set[str]) -> None:
        """Delete the files of sources no longer configured (their state is kept for status)."""
        wanted = {file_stem(n) for n in keep}
        if not self.dir.is_dir():
            return
        for path in self.dir.iterdir():
            if path.suffix in (".list", ".new", ".download") and path.stem not in wanted:
                path.unlink(missing_ok=True)


def file_stem(name: str) -> str:
    """A file name for a source name: readable, safe, and unique by a hash of the name."""
    readable = _UNSAFE.sub("_", name).strip("._")[:48] or "list"
    return f"{readable}-{xxhash.xxh64_hexdigest(name.encode('utf-8'))[:8]}"
