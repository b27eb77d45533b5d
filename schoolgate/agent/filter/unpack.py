"""Turning a downloaded file into a list file: plain, gzip/bzip2/xz, or a tar archive.

The kind is read from the file's first bytes, not its name or the server's headers. From a tar
archive one member is taken (``member`` is a glob such as ``adult/domains``); its content is
copied to our own file name, so no path inside an archive ever reaches the file system. Output
is capped, so a small archive that unpacks to gigabytes (a "zip bomb") is refused rather than
filling the disk. A truncated or corrupt archive is an ``UnpackError``.
"""

from __future__ import annotations

import bz2
import fnmatch
import gzip
import lzma
import os
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, Final, cast

from schoolgate.agent.files import atomic_writer, fsync_dir

_CHUNK: Final = 256 * 1024
_TAR_MAGIC_AT: Final = 257


class UnpackError(Exception):
    """A download that cannot be unpacked into a list."""


def unpack(raw: Path, out: Path, member: str, max_bytes: int) -> None:
    """Write the list held in ``raw`` to ``out`` (atomically), at most ``max_bytes`` of it."""
    try:
        with open(raw, "rb") as f:
            head = f.read(6)
        opener = _decompressor(head)
        with opener(raw) as stream:
            peek = stream.read(_TAR_MAGIC_AT + 8)
            is_tar = peek[_TAR_MAGIC_AT : _TAR_MAGIC_AT + 5] == b"ustar"
        if is_tar:
            with opener(raw) as stream, atomic_writer(out) as dest:
                _from_tar(stream, dest, member or "*", max_bytes)
        elif member:
            raise UnpackError(f"expected a tar archive holding {member!r}, got a plain file")
        elif opener is _plain_open:
            # Already a list, written to the disk by the download and capped by size: it only
            # moves.
            if raw.stat().st_size > max_bytes:
                raise UnpackError(f"more than {max_bytes} bytes (updates.max_list_mb): refused")
            os.replace(raw, out)
            fsync_dir(out.parent)
        else:
            with opener(raw) as stream, atomic_writer(out) as dest:
                _copy(stream, dest, max_bytes)
    except (EOFError, OSError, zlib.error, lzma.LZMAError, tarfile.TarError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise  # a real file-system error (disk full), not a bad archive
        raise UnpackError(f"truncated or corrupt archive: {exc or type(exc).__name__}") from None


def _decompressor(head: bytes) -> Callable[[Path], IO[bytes]]:
    if head.startswith(b"\x1f\x8b"):
        return lambda path: cast(IO[bytes], gzip.open(path, "rb"))
    if head.startswith(b"BZh"):
        return lambda path: cast(IO[bytes], bz2.open(path, "rb"))
    if head.startswith(b"\xfd7zXZ\x00"):
        return lambda path: cast(IO[bytes], lzma.open(path, "rb"))
    return _plain_open


def _plain_open(path: Path) -> IO[bytes]:
    return open(path, "rb")


def _from_tar(stream: IO[bytes], dest: IO[bytes], member: str, max_bytes: int) -> None:
    seen: list[str] = []
    found = False
    # Streaming mode: members are read in order, never seeking. Decompression is ours, not
    # tarfile's, because ours checks the compressed stream's end (length and checksum).
    with tarfile.open(fileobj=stream, mode="r|") as archive:
        for info in archive:
            if found or not info.isfile():
                # Read on to the end even after the member: a truncated archive is a failed
                # download, and its end is where truncation shows.
                continue
            if fnmatch.fnmatchcase(info.name.lstrip("./"), member):
                source = archive.extractfile(info)
                if source is None:  # pragma: no cover - isfile() members always have data
                    break
                _copy(source, dest, max_bytes)
                found = True
            elif len(seen) < 10:
                seen.append(info.name)
    # The tar end marker can come before the end of the compressed stream: read that too.
    while stream.read(_CHUNK):
        pass
    if not found:
        shown = ", ".join(seen) or "no files"
        raise UnpackError(f"the archive has no file matching {member!r} (it has: {shown})")


def _copy(source: IO[bytes], dest: IO[bytes], max_bytes: int) -> None:
    written = 0
    while chunk := source.read(_CHUNK):
        written += len(chunk)
        if written > max_bytes:
            raise UnpackError(
                f"unpacks to more than {max_bytes} bytes (updates.max_list_mb): refused"
            )
        dest.write(chunk)
