"""Opening the collector's database: SQLite by default, PostgreSQL for a district.

SQLite runs in WAL mode with ``synchronous=FULL``: once the collector has answered a batch
with 2xx the agent forgets it, so a commit must survive a power cut. PostgreSQL URLs without
a driver get psycopg (version 3), installed with ``schoolgate[postgresql]``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError


class DatabaseUrlError(ValueError):
    """A database URL the collector cannot use; the message says why."""


def database_url(text: str) -> URL:
    """``text`` as a URL the collector can open, or ``DatabaseUrlError``."""
    try:
        url = make_url(text)
    except ArgumentError:
        raise DatabaseUrlError(
            f"{text!r} is not a database URL (sqlite:///PATH or postgresql://...)"
        ) from None
    backend = url.get_backend_name()
    if backend == "postgresql" and url.get_driver_name() in ("", "psycopg2"):
        url = url.set(drivername="postgresql+psycopg")
    if backend not in ("sqlite", "postgresql"):
        raise DatabaseUrlError(f"{backend} is not supported: use SQLite or PostgreSQL")
    if backend == "sqlite" and url.database in (None, "", ":memory:"):
        raise DatabaseUrlError("an SQLite database must be a file: sqlite:///PATH")
    return url


def is_postgresql(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def open_engine(text: str) -> Engine:
    """An engine for the database at URL ``text`` (nothing is connected yet)."""
    url = database_url(text)
    if url.get_backend_name() == "sqlite":
        assert url.database is not None
        path = Path(url.database)
        # The database names pupils' devices: only the collector's user may read it.
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        if not path.exists():
            fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
        return engine
    try:
        return create_engine(url, pool_size=8, max_overflow=8, pool_pre_ping=True)
    except (NoSuchModuleError, ModuleNotFoundError):
        raise DatabaseUrlError(
            "PostgreSQL needs the psycopg driver: pip install 'schoolgate[postgresql]'"
        ) from None
