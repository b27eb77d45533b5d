"""Files that are either wholly the old version or wholly the new one, whatever happens.

Everything the agent keeps on disk (compiled lists, downloaded copies, the download state, the
exceptions, unblock requests) is written the same way: to a temporary file beside the target,
flushed to the disk, renamed over the target, and then the directory is flushed too, so that
after a power cut the rename is either there or not. A failure on the way (a full disk) leaves
the old file untouched and no temporary file behind.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def fsync_dir(directory: Path) -> None:
    """Make the renames and new names in ``directory`` survive a power cut."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_writer(path: Path, suffix: str = ".tmp") -> Iterator[BinaryIO]:
    """A binary file that replaces ``path`` when the ``with`` block ends without an error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # The process id keeps two writers (the agent and a command) off each other's temp file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}{suffix}")
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``, all or nothing."""
    with atomic_writer(path) as f:
        f.write(data)
