"""The compiled list file: what the matcher maps into memory.

Layout (little-endian, every section 8-byte aligned)::

    header   64 bytes  magic, version, header size, count, bucket bits, meta length,
                       checksum (XXH3-64 of everything after the header)
    meta     JSON      sources (name, category, format, digest, counts), categories, source sets
    buckets  u32 x (2**bits + 1)   start index of each fingerprint bucket
    prints   u64 x count           sorted fingerprints of the names
    sets     u16 x count           source-set id of each name (which lists hold it)

A name's fingerprint is XXH3-64 of its lowercased wire form. The top ``bits`` of a fingerprint
pick a bucket of about four entries, which a C-level bisect searches; a lookup is one probe per
label of the queried name. Storing source sets rather than category bits keeps an entry at
10 bytes and lets every decision name the list that caused it; the category of each set is
derived when the file is opened.
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

from schoolgate.agent.filter.names import fingerprint

MAGIC: Final = b"SGLIST\r\n"
VERSION: Final = 1
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


def layout(count: int, bits: int, meta_len: int) -> tuple[int, int, int, int]:
    """Offsets of buckets, prints and sets, and the total file size."""
    buckets_at = HEADER.size + align8(meta_len)
    prints_at = buckets_at + align8(4 * ((1 << bits) + 1))
    sets_at = prints_at + 8 * count
    total = sets_at + align8(2 * count)
    return buckets_at, prints_at, sets_at, total


def bucket_bits_for(count: int) -> int:
    """Enough buckets for about four names each: the table costs about one byte a name."""
    bits = 0
    while (1 << bits) * 4 < count:
        bits += 1
    return bits


class CompiledLists:
    """A compiled list file mapped read-only. Cheap to share: the pages live in the page cache.

    ``lookup`` returns the union of the category bits of every entry that covers the name;
    ``categories`` gives the meaning of each bit.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < HEADER.size:
                    raise CompiledListError(f"{path}: truncated (only {size} bytes)")
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as exc:
            raise CompiledListError(f"{path}: cannot open: {exc.strerror}") from None
        try:
            self._open(size)
        except CompiledListError:
            self._map.close()
            raise

    def _open(self, size: int) -> None:
        path = self.path
        magic, version, header_size, count, bits, _reserved, meta_len, checksum = (
            HEADER.unpack_from(self._map, 0)
        )
        if magic != MAGIC:
            raise CompiledListError(f"{path}: not a schoolgate compiled list (bad magic)")
        if version != VERSION:
            raise CompiledListError(
                f"{path}: format version {version}, this agent reads version {VERSION}"
            )
        if header_size != HEADER.size or bits > 32:
            raise CompiledListError(f"{path}: corrupt header")
        buckets_at, prints_at, sets_at, total = layout(count, bits, meta_len)
        if size != total:
            raise CompiledListError(f"{path}: truncated or padded ({size} bytes, expected {total})")
        if xxhash.xxh3_64_intdigest(memoryview(self._map)[HEADER.size :]) != checksum:
            raise CompiledListError(f"{path}: checksum mismatch (file is corrupt)")
        try:
            meta = json.loads(self._map[HEADER.size : HEADER.size + meta_len])
            self._load_meta(meta)
        except (ValueError, KeyError, TypeError) as exc:
            raise CompiledListError(f"{path}: corrupt metadata ({exc})") from None
        self.count = count
        self.meta: dict[str, Any] = meta
        self._shift = 64 - bits
        view = memoryview(self._map)
        if sys.byteorder == "little":
            self._buckets: Any = view[buckets_at:prints_at].cast("I")
            self._prints: Any = view[prints_at:sets_at].cast("Q")
            self._sets: Any = view[sets_at : sets_at + 2 * count].cast("H")
        else:  # pragma: no cover - big-endian hosts copy and swap instead of sharing pages
            self._buckets, self._prints, self._sets = _swapped(
                view, buckets_at, prints_at, sets_at, count
            )
        if self._buckets[(1 << bits)] != count:
            raise CompiledListError(f"{path}: corrupt bucket table")
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

    def lookup(self, qname: bytes, labels: list[int]) -> int:
        """Category bits of every entry covering ``qname`` (lowercased wire form); 0 for none.

        ``labels`` are the offsets of the label starts in ``qname``, i.e. of its suffixes.
        """
        prints = self._prints
        buckets = self._buckets
        shift = self._shift
        mask = 0
        for off in labels:
            fp = fingerprint(qname[off:])
            b = fp >> shift
            hi = buckets[b + 1]
            i = bisect_left(prints, fp, buckets[b], hi)
            if i < hi and prints[i] == fp:
                mask |= self._set_masks[self._sets[i]]
        return mask

    def matches(self, qname: bytes, labels: list[int]) -> list[tuple[int, tuple[SourceInfo, ...]]]:
        """Every entry covering ``qname``: (offset of the matching suffix, lists holding it).

        The slow, explaining twin of ``lookup``, for ``check`` and decision reasons.
        """
        found = []
        for off in labels:
            fp = fingerprint(qname[off:])
            b = fp >> self._shift
            hi = self._buckets[b + 1]
            i = bisect_left(self._prints, fp, self._buckets[b], hi)
            if i < hi and self._prints[i] == fp:
                members = self.source_sets[self._sets[i]]
                found.append((off, tuple(self.sources[m] for m in members)))
        return found

    def category_names(self, mask: int) -> list[str]:
        return [c for i, c in enumerate(self.categories) if mask >> i & 1]

    @property
    def file_size(self) -> int:
        return len(self._map)

    def close(self) -> None:
        """Unmap now (tests and tools); the agent simply drops its reference."""
        for view in (self._buckets, self._prints, self._sets):
            if isinstance(view, memoryview):
                view.release()
        self._map.close()


def _swapped(
    view: memoryview, buckets_at: int, prints_at: int, sets_at: int, count: int
) -> tuple[Any, Any, Any]:  # pragma: no cover
    out = []
    for code, start, end in (
        ("I", buckets_at, prints_at),
        ("Q", prints_at, sets_at),
        ("H", sets_at, sets_at + 2 * count),
    ):
        arr = array(code, bytes(view[start:end]))
        arr.byteswap()
        out.append(arr)
    return out[0], out[1], out[2]


def write_compiled(
    path: Path,
    prints: bytes,
    sets: bytes,
    buckets: bytes,
    count: int,
    bits: int,
    meta: dict[str, Any],
) -> int:
    """Write a compiled file atomically: temp file, fsync, rename, fsync the directory.

    The arrays are already little-endian bytes. Returns the size written.
    """
    meta_raw = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode("utf-8")
    buckets_at, prints_at, sets_at, total = layout(count, bits, len(meta_raw))
    body = b"".join(
        (
            meta_raw.ljust(align8(len(meta_raw)), b" "),
            buckets.ljust(prints_at - buckets_at, b"\x00"),
            prints,
            sets.ljust(total - sets_at, b"\x00"),
        )
    )
    assert HEADER.size + len(body) == total
    checksum = xxhash.xxh3_64_intdigest(body)
    header = HEADER.pack(MAGIC, VERSION, HEADER.size, count, bits, 0, len(meta_raw), checksum)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(header)
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return total
