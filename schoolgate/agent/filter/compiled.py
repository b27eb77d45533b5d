"""The compiled list file: what the matcher maps into memory.

Layout (little-endian, every section 8-byte aligned)::

    header   64 bytes  magic, version, header size, count, filter size, meta length,
                       checksum (XXH3-64 of everything after the header)
    meta     JSON      sources (name, category, format, digest, counts), categories, source sets
    filter   bits      one bit per fingerprint modulo the filter size: 8 bits a name
    prints   u64 x count           sorted fingerprints of the names
    sets     u16 x count           source-set id of each name (which lists hold it)

A name's fingerprint is XXH3-64 of its lowercased wire form. A lookup makes one probe per label
of the queried name, and nearly all probes are for suffixes no list holds (``com``,
``example.com``): the filter answers most of those with one bit test, and only the rest (about
one in nine, and the real matches) pay a binary search, done in C, of the sorted fingerprints.
Storing source sets rather than category bits keeps an entry at 10 bytes and lets every
decision name the list that caused it; the category of each set is derived when the file is
opened.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import sys
from array import array
from bisect import bisect_left
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import xxhash

from schoolgate.agent.files import atomic_writer
from schoolgate.agent.filter.names import fingerprint

MAGIC: Final = b"SGLIST\r\n"
VERSION: Final = 2  # 1 had a bucket table where 2 has the bit filter
HEADER: Final = struct.Struct("<8sIIQIIQQ16x")
assert HEADER.size == 64


class CompiledListError(Exception):
    """A compiled list file that cannot be used; the message names the file and the fault."""


@dataclass(frozen=True)
class SourceInfo:
    """One list that went into a build, as recorded in its header."""

    name: str
    category: str
    format: str
    origin: str
    sha256: str
    entries: int
    invalid: int
    unsupported: int


def align8(n: int) -> int:
    return (n + 7) & ~7


def layout(count: int, filter_bits: int, meta_len: int) -> tuple[int, int, int, int]:
    """Offsets of the filter, prints and sets, and the total file size."""
    filter_at = HEADER.size + align8(meta_len)
    prints_at = filter_at + filter_bits // 8
    sets_at = prints_at + 8 * count
    total = sets_at + align8(2 * count)
    return filter_at, prints_at, sets_at, total


def filter_bits_for(count: int) -> int:
    """Eight bits a name, in whole 64-bit words: about one absent probe in nine gets through."""
    return max(64, (8 * count + 63) // 64 * 64)


class CompiledLists:
    """A compiled list file mapped read-only. Cheap to share: the pages live in the page cache.

    ``lookup`` returns the union of the category bits of every entry that covers the name;
    ``categories`` gives the meaning of each bit.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                size = st.st_size
                # Which file this is, so a replacement on disk can be told apart from it.
                self.identity = (st.st_ino, st.st_mtime_ns)
                if size < HEADER.size:
                    raise CompiledListError(f"{path}: truncated (only {size} bytes)")
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as exc:
            raise CompiledListError(f"{path}: cannot open: {exc.strerror}") from None
        self._filter: Any = None
        self._prints: Any = None
        self._sets: Any = None
        try:
            self._open(size)
        except CompiledListError:
            self.close()
            raise

    def _open(self, size: int) -> None:
        path = self.path
        magic, version, header_size, count, filter_bits, _reserved, meta_len, checksum = (
            HEADER.unpack_from(self._map, 0)
        )
        if magic != MAGIC:
            raise CompiledListError(f"{path}: not a schoolgate compiled list (bad magic)")
        if version != VERSION:
            raise CompiledListError(
                f"{path}: format version {version}, this agent reads version {VERSION}"
                " (made by another version of schoolgate; it will be rebuilt)"
            )
        if header_size != HEADER.size or filter_bits != filter_bits_for(count):
            raise CompiledListError(f"{path}: corrupt header")
        filter_at, prints_at, sets_at, total = layout(count, filter_bits, meta_len)
        if size != total:
            raise CompiledListError(f"{path}: truncated or padded ({size} bytes, expected {total})")
        if xxhash.xxh3_64_intdigest(memoryview(self._map)[HEADER.size :]) != checksum:
            raise CompiledListError(f"{path}: checksum mismatch (file is corrupt)")
        try:
            meta = json.loads(self._map[HEADER.size : HEADER.size + meta_len])
            self._load_meta(meta)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise CompiledListError(f"{path}: corrupt metadata ({exc!r})") from None
        self.count = count
        self.meta: dict[str, Any] = meta
        self._filter_bits = filter_bits
        # Slices keep the map exported on their own; the whole view must not outlive this
        # method, or a failed open could not close the map.
        with memoryview(self._map) as view:
            self._filter = view[filter_at:prints_at]
            if sys.byteorder == "little":
                self._prints = view[prints_at:sets_at].cast("Q")
                self._sets = view[sets_at : sets_at + 2 * count].cast("H")
            else:  # pragma: no cover - big-endian hosts copy and swap instead of sharing pages
                self._prints, self._sets = _swapped(view, prints_at, sets_at, count)
        # The checksum catches accidents; this catches a writer that got the set table wrong,
        # which would otherwise surface as an IndexError in the middle of a query.
        if count and max(self._sets) >= len(self._set_masks):
            raise CompiledListError(f"{path}: corrupt source-set table")

    def _load_meta(self, meta: dict[str, Any]) -> None:
        self.sources = tuple(SourceInfo(**s) for s in meta["sources"])
        self.categories: tuple[str, ...] = tuple(meta["categories"])
        index = {c: i for i, c in enumerate(self.categories)}
        self.source_sets: tuple[tuple[int, ...], ...] = tuple(tuple(s) for s in meta["sets"])
        masks = []
        for members in self.source_sets:
            mask = 0
            for src in members:
                mask |= 1 << index[self.sources[src].category]
            masks.append(mask)
        self._set_masks = tuple(masks)
        self.build_id: str = meta["build_id"]
        self.built_at = float(meta.get("built_at", 0.0))  # seconds since the epoch
        fewest, most = meta["labels"]
        self._fewest_labels: int = int(fewest)
        self._most_labels: int = int(most)

    def _window(self, labels: list[int]) -> list[int]:
        """The suffixes worth probing: those with as many labels as some entry has."""
        n = len(labels)
        first = n - self._most_labels
        stop = n - self._fewest_labels + 1
        if first <= 0 and stop >= n:
            return labels
        return labels[max(first, 0) : max(stop, 0)]

    def lookup(self, qname: bytes, labels: list[int]) -> int:
        """Category bits of every entry covering ``qname`` (lowercased wire form); 0 for none.

        ``labels`` are the offsets of the label starts in ``qname``, i.e. of its suffixes.
        """
        filt = self._filter
        m = self._filter_bits
        prints = self._prints
        mask = 0
        for off in self._window(labels):
            fp = fingerprint(qname[off:])
            bit = fp % m
            if filt[bit >> 3] >> (bit & 7) & 1:
                i = bisect_left(prints, fp)
                if i < self.count and prints[i] == fp:
                    mask |= self._set_masks[self._sets[i]]
        return mask

    def matches(self, qname: bytes, labels: list[int]) -> list[tuple[int, tuple[SourceInfo, ...]]]:
        """Every entry covering ``qname``: (offset of the matching suffix, lists holding it).

        The slow, explaining twin of ``lookup``, for ``check`` and decision reasons.
        """
        found = []
        for off in self._window(labels):
            fp = fingerprint(qname[off:])
            i = bisect_left(self._prints, fp)
            if i < self.count and self._prints[i] == fp:
                members = self.source_sets[self._sets[i]]
                found.append((off, tuple(self.sources[m] for m in members)))
        return found

    def category_names(self, mask: int) -> list[str]:
        return [c for i, c in enumerate(self.categories) if mask >> i & 1]

    def category_entries(self) -> dict[str, int]:
        """Entries per category, summed over the lists of the build (a name two lists share
        counts twice)."""
        found = dict.fromkeys(self.categories, 0)
        for source in self.sources:
            found[source.category] = found.get(source.category, 0) + source.entries
        return found

    @property
    def file_size(self) -> int:
        return len(self._map)

    def close(self) -> None:
        """Unmap now (tests and tools); the agent simply drops its reference."""
        for view in (self._filter, self._prints, self._sets):
            if isinstance(view, memoryview):
                view.release()
        self._filter = self._prints = self._sets = None
        self._map.close()


def _swapped(
    view: memoryview, prints_at: int, sets_at: int, count: int
) -> tuple[Any, Any]:  # pragma: no cover
    out = []
    for code, start, end in (("Q", prints_at, sets_at), ("H", sets_at, sets_at + 2 * count)):
        arr = array(code, bytes(view[start:end]))
        arr.byteswap()
        out.append(arr)
    return out[0], out[1]


def write_compiled(
    path: Path,
    prints: bytes,
    sets: bytes,
    filter_bytes: bytes,
    count: int,
    meta: dict[str, Any],
) -> int:
    """Write a compiled file atomically: temp file, fsync, rename, fsync the directory.

    The arrays are already little-endian bytes. Returns the size written.
    """
    meta_raw = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode("utf-8")
    filter_bits = filter_bits_for(count)
    if len(filter_bytes) * 8 != filter_bits:
        raise ValueError("filter has the wrong size")
    _filter_at, _prints_at, sets_at, total = layout(count, filter_bits, len(meta_raw))
    body = b"".join(
        (
            meta_raw.ljust(align8(len(meta_raw)), b" "),
            filter_bytes,
            prints,
            sets.ljust(total - sets_at, b"\x00"),
        )
    )
    assert HEADER.size + len(body) == total
    checksum = xxhash.xxh3_64_intdigest(body)
    header = HEADER.pack(
        MAGIC, VERSION, HEADER.size, count, filter_bits, 0, len(meta_raw), checksum
    )
    with atomic_writer(path) as f:
        f.write(header)
        f.write(body)
    return total
