"""What ``config check`` adds to loading a configuration: the files and directories it names
that loading does not open, seen as the user running the check sees them.

Run as the service's ``ExecStartPre=``, that is the service's own user inside its sandbox, so
a state directory the unit cannot write, or a file only root can read, is found before the
service starts rather than by a failure half-way through it.
"""

from __future__ import annotations

import os
from pathlib import Path


def unusable_directory(path: Path) -> str | None:
    """Why a program cannot keep its files in ``path``; None when it can write there, or can
    make the directory (the programs make their state directory when it is missing)."""
    for place in (path, *path.parents):
        problem = _missing_or_unreachable(place)
        if problem == "no such file":
            continue  # the program makes it, if it can write in the one that holds it
        if problem is None and not place.is_dir():
            problem = "not a directory"
        if problem is None and not os.access(place, os.W_OK | os.X_OK):
            problem = "not writable by this user"
        if problem is None or place == path:
            return problem
        return f"does not exist, and cannot be made in {place}: {problem}"
    return None  # unreachable: "/" exists


def unreadable_file(path: Path) -> str | None:
    """Why ``path`` cannot be read; None when it can."""
    problem = _missing_or_unreachable(path)
    if problem is None and not os.access(path, os.R_OK):
        problem = "cannot be read by this user"
    return problem


def _missing_or_unreachable(path: Path) -> str | None:
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return "no such file"
    except OSError as exc:  # a directory on the way this user may not enter, most often
        return exc.strerror or str(exc)
    return None
