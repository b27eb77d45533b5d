"""Compile list sources into one compiled file (see ``compiled``).

Runs in the list worker process (``worker``) when the agent starts, reloads or updates, so
that the millions of short-lived strings of a compile never inflate the resident size of the
DNS server; the agent only maps the result.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from schoolgate.agent.dns.wire import encode_name
from schoolgate.agent.filter.compiled import filter_bits_for, write_compiled
from schoolgate.agent.filter.names import fingerprint
from schoolgate.agent.filter.parsers import ListFormat, ParseReport, detect_format, parse_lines
from schoolgate.agent.filter.sources import (
    BuildError,
    BuildResult,
    Candidate,
    ListSource,
    SourceResult,
)

_SNIFF_LINES = 200
_MAX_SOURCE_SETS = 0xFFFF


def read_source(source: ListSource) -> tuple[np.ndarray[Any, np.dtype[np.uint64]], SourceResult]:
    """Parse one list into an array of fingerprints, with its report and content digest."""
    digest = hashlib.sha256()
    report = ParseReport(confidential=source.confidential)
    try:
        raw = open(source.path, "rb")  # noqa: SIM115 - closed below, wrapped for text
    except OSError as exc:
        raise BuildError(
            f"list {source.name!r}: cannot read {source.path}: {exc.strerror}"
        ) from None
    with raw:
        text = io.TextIOWrapper(
            # utf-8-sig: lists saved by Windows editors start with a byte-order mark.
            io.BufferedReader(_Digesting(raw, digest)),
            encoding="utf-8-sig",
            errors="replace",
        )
        head = list(itertools.islice(text, _SNIFF_LINES))
        fmt = source.format
        if fmt is ListFormat.AUTO:
            fmt = detect_format(head)
        names = parse_lines(itertools.chain(head, text), fmt, report)
        counted = _label_counted(names, report)
        prints = np.fromiter((fingerprint(encode_name(n)) for n in counted), np.uint64)
    return prints, SourceResult(source, report, digest.hexdigest())


def _label_counted(names: Iterator[str], report: ParseReport) -> Iterator[str]:
    """Pass names through, noting the fewest and most labels among them in ``report``."""
    fewest, most = report.fewest_labels, report.most_labels
    for name in names:
        labels = name.count(".") + 1
        fewest = min(fewest, labels)
        most = max(most, labels)
        yield name
    report.fewest_labels, report.most_labels = fewest, most


class _Digesting(io.RawIOBase):
    """A reader that hashes what passes through it, so a list is read from disk once."""

    def __init__(self, inner: io.BufferedReader, digest: Any) -> None:
        self._inner = inner
        self._digest = digest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._inner.readinto(buffer)
        if n:
            self._digest.update(memoryview(buffer)[:n])
        return n


def build(
    sources: Sequence[ListSource],
    out: Path,
    candidates: Mapping[str, Candidate] | None = None,
) -> BuildResult:
    """Compile ``sources`` into ``out``, replacing it atomically.

    A source with a candidate (a fresh download) is read from the candidate; if the candidate
    passes its checks it goes into the build (``verdicts`` says None, and the caller renames
    it over the source's file once the build is in service), otherwise it is deleted and the
    source's last good file is read instead. A source left with no file at all is left out.
    """
    started = time.monotonic()
    if len(sources) > 0xFFFF:
        raise BuildError("too many lists in one build (at most 65535)")
    chunks = []
    owners = []
    results: list[SourceResult] = []
    verdicts: dict[str, str | None] = {}
    for source in sources:
        loaded = _read_with_candidate(source, (candidates or {}).get(source.name), verdicts)
        if loaded is None:
            continue
        prints, result = loaded
        chunks.append(prints)
        owners.append(np.full(len(prints), len(results), dtype=np.uint16))
        results.append(result)
    sources = [r.source for r in results]
    prints_all = np.concatenate(chunks) if chunks else np.zeros(0, np.uint64)
    owners_all = np.concatenate(owners) if owners else np.zeros(0, np.uint16)
    unique_prints, set_ids, set_table = _merge(prints_all, owners_all, len(sources))
    count = len(unique_prints)

    categories: list[str] = []
    for source in sources:
        if source.category not in categories:
            categories.append(source.category)
    meta = {
        "build_id": f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-"
        f"{fingerprint(unique_prints.tobytes()):016x}",
        "built_at": time.time(),
        "categories": categories,
        "sets": set_table,
        "sources": [
            {
                "name": r.source.name,
                "category": r.source.category,
                "format": r.report.format.value,
                "origin": str(r.source.path),
                "sha256": r.sha256,
                "entries": r.report.entries,
                "invalid": r.report.invalid,
                "unsupported": r.report.unsupported,
            }
            for r in results
        ],
        "stamps": [s.stamp(_accepted(s, candidates, verdicts)) for s in sources],
        "category_names": _category_names(set_ids, set_table, sources, categories),
        # Lookups only probe suffixes with as many labels as some entry has.
        "labels": _label_range(results),
    }
    size = write_compiled(
        out,
        prints=unique_prints.astype("<u8").tobytes(),
        sets=set_ids.astype("<u2").tobytes(),
        filter_bytes=_filter(unique_prints, filter_bits_for(count)),
        count=count,
        meta=meta,
    )
    return BuildResult(
        path=out,
        names=count,
        size=size,
        seconds=time.monotonic() - started,
        build_id=str(meta["build_id"]),
        sources=results,
        verdicts=verdicts,
    )


def _accepted(
    source: ListSource,
    candidates: Mapping[str, Candidate] | None,
    verdicts: dict[str, str | None],
) -> Path | None:
    if source.name in verdicts and verdicts[source.name] is None and candidates:
        return candidates[source.name].path
    return None


def _read_with_candidate(
    source: ListSource, candidate: Candidate | None, verdicts: dict[str, str | None]
) -> tuple[np.ndarray[Any, np.dtype[np.uint64]], SourceResult] | None:
    if candidate is not None:
        prints, result = read_source(replace(source, path=candidate.path))
        reason = candidate.refusal(result.report)
        verdicts[source.name] = reason
        if reason is None:
            # Renamed over the last good copy by whoever puts the build in service, once it is
            # in service: a build that fails must leave the last good copies as they were.
            result.source = source
            return prints, result
        candidate.path.unlink(missing_ok=True)
    if not source.path.exists() and candidate is not None:
        return None  # never had a good copy: nothing to serve for it yet
    return read_source(source)


def _category_names(
    set_ids: np.ndarray[Any, Any],
    set_table: list[list[int]],
    sources: Sequence[ListSource],
    categories: list[str],
) -> dict[str, int]:
    """Unique names in each category (a name in two lists of one category counts once)."""
    per_set: list[int] = (
        np.bincount(set_ids, minlength=len(set_table)).tolist() if len(set_ids) else []
    )
    counts = dict.fromkeys(categories, 0)
    for members, n in zip(set_table, per_set, strict=False):
        for category in {sources[m].category for m in members}:
            counts[category] += int(n)
    return counts


def _label_range(results: Sequence[SourceResult]) -> list[int]:
    counted = [r.report for r in results if r.report.entries]
    if not counted:
        return [0, 0]
    return [min(r.fewest_labels for r in counted), max(r.most_labels for r in counted)]


def _merge(
    prints: np.ndarray[Any, np.dtype[np.uint64]],
    owners: np.ndarray[Any, np.dtype[np.uint16]],
    n_sources: int,
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], list[list[int]]]:
    """Sorted unique fingerprints, the source-set id of each, and the set table."""
    if len(prints) == 0:
        return prints, np.zeros(0, np.uint16), []
    order = np.lexsort((owners, prints))
    prints = prints[order]
    owners = owners[order]
    fresh = np.ones(len(prints), dtype=bool)
    fresh[1:] = (prints[1:] != prints[:-1]) | (owners[1:] != owners[:-1])
    prints = prints[fresh]
    owners = owners[fresh]
    starts = np.flatnonzero(np.concatenate(([True], prints[1:] != prints[:-1])))
    words = (n_sources + 63) // 64
    bits = np.zeros((len(owners), words), dtype=np.uint64)
    bits[np.arange(len(owners)), owners // 64] = np.left_shift(
        np.uint64(1), (owners % 64).astype(np.uint64)
    )
    masks = np.bitwise_or.reduceat(bits, starts, axis=0)
    table, inverse = np.unique(masks, axis=0, return_inverse=True)
    if len(table) > _MAX_SOURCE_SETS:
        raise BuildError("too many distinct combinations of lists (at most 65535)")
    set_table = [
        [w * 64 + b for w in range(words) for b in range(64) if int(row[w]) >> b & 1]
        for row in table
    ]
    return prints[starts], inverse.reshape(-1).astype(np.uint16), set_table


def _filter(prints: np.ndarray[Any, Any], bits: int) -> bytes:
    """The bit filter of ``compiled``: bit ``fp % bits`` set for every fingerprint."""
    flags = np.zeros(bits, dtype=bool)
    flags[(prints % np.uint64(bits)).astype(np.int64)] = True
    return np.packbits(flags, bitorder="little").tobytes()
