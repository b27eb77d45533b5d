"""What a build is made of and what it reports: no numpy here, the agent imports this.

The compile itself (``build``) needs numpy and runs in its own process, so the DNS server
never carries the weight of numpy or of a compile's millions of short-lived strings.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schoolgate.agent.filter.compiled import CompiledLists
from schoolgate.agent.filter.parsers import ListFormat, ParseReport


class BuildError(Exception):
    """A build that could not produce a file; the running build stays in service."""


@dataclass(frozen=True)
class ListSource:
    """A list file feeding one category."""

    name: str
    category: str
    path: Path
    format: ListFormat = ListFormat.AUTO
    confidential: bool = False  # a licensed feed: never quote its lines in reports

    def stamp(self, stat_of: Path | None = None) -> list[Any]:
        """What must be unchanged for a compiled file to still be current.

        ``stat_of`` is a file that is about to be renamed to ``path`` (an accepted download):
        a rename keeps size and modification time, so its stamp is already the final one.
        """
        st = (stat_of or self.path).stat()
        return [
            self.name,
            self.category,
            self.format.value,
            str(self.path),
            st.st_size,
            st.st_mtime_ns,
        ]


@dataclass(frozen=True)
class Candidate:
    """A fresh download of a source, to be checked before it replaces the last good copy."""

    path: Path
    previous_entries: int
    max_shrink: float
    force: bool = False

    def refusal(self, report: ParseReport) -> str | None:
        """Why this download must not go into service, or None when it may."""
        if report.entries == 0:
            return (
                f"no entries in {report.lines} lines ({report.invalid} invalid,"
                f" {report.unsupported} unsupported)"
            )
        if report.invalid > report.entries:
            return (
                f"not a list: {report.invalid} invalid lines against {report.entries} entries"
                " (an error page or the wrong format?)"
            )
        floor = self.previous_entries * (1 - self.max_shrink)
        if not self.force and report.entries < floor:
            return (
                f"shrank from {self.previous_entries} to {report.entries} entries, more than"
                f" {self.max_shrink:.0%} at once (run 'lists update --force' to accept it)"
            )
        return None


@dataclass
class SourceResult:
    source: ListSource
    report: ParseReport
    sha256: str


@dataclass
class BuildResult:
    path: Path
    names: int
    size: int
    seconds: float
    build_id: str
    sources: list[SourceResult] = field(default_factory=list)
    # For each candidate download: None when it went into service, else why it was refused.
    verdicts: dict[str, str | None] = field(default_factory=dict)


def is_current(compiled: CompiledLists, sources: Sequence[ListSource]) -> bool:
    """True when ``compiled`` was built from exactly these sources, unchanged on disk."""
    try:
        stamps = [s.stamp() for s in sources]
    except OSError:
        return False
    return bool(compiled.meta.get("stamps") == stamps)


def report_lines(result: BuildResult) -> Iterator[str]:
    """Human-readable summary of a build, as ``lists compile`` prints it."""
    for r in result.sources:
        rep = r.report
        yield (
            f"{r.source.name} ({r.source.category}, {rep.format.value}): {rep.entries} entries, "
            f"{rep.invalid} invalid, {rep.unsupported} unsupported, {rep.comments} comments, "
            f"{rep.lines} lines"
        )
        for example in rep.examples:
            yield f"    {example}"
    per_name = result.size / result.names if result.names else 0.0
    yield (
        f"compiled {result.names} unique names into {result.path} "
        f"({result.size} bytes, {per_name:.1f} bytes/name) in {result.seconds:.2f} s"
    )
