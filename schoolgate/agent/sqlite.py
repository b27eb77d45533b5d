"""The agent's SQLite files: opened on first use, in WAL mode, readable only by the agent.

Every local store (unblock requests, the activity log) is one SQLite file under the state
directory, opened through SQLAlchemy the same way: the directory made with mode 0700 (the files
name pupils' devices), the tables created if missing, WAL so a reader (a staff command, the
collector uploader) never waits for the writer. The database's and the file system's errors
come out as one exception type whose message is the database's own words ("database or disk is
full") and the file's name; the next call tries to open the file again.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, MetaData, create_engine, event
from sqlalchemy.exc import SQLAlchemyError


class SqliteError(Exception):
    """A store that cannot be opened, read or written; the message names the file."""


def reason(exc: SQLAlchemyError) -> str:
    """The database's own words, without the statement."""
    return str(getattr(exc, "orig", None) or exc)


class SqliteFile:
    """One SQLite file holding the tables of ``metadata``, for one kind of record.

    ``what`` names the records in error messages ("unblock requests"); ``error`` is the
    exception type the store raises, a subclass of ``SqliteError``. ``synchronous`` is SQLite's
    setting: ``FULL`` makes each commit survive a power cut, ``NORMAL`` (with WAL) may lose the
    last commits to one but never corrupts the file, for a fraction of the disk writes.
    """

    def __init__(
        self,
        path: Path,
        metadata: MetaData,
        what: str,
        error: type[SqliteError] = SqliteError,
        synchronous: str = "FULL",
    ) -> None:
        self.path = path
        self.metadata = metadata
        self.what = what
        self.error = error
        self.synchronous = synchronous
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A connection in a transaction, committed when the block ends without an error."""
        try:
            engine = self._open()
            with engine.begin() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise self.error(f"{self.what} in {self.path}: {reason(exc)}") from exc

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None

    def _open(self) -> Engine:
        with self._lock:
            if self._engine is not None:
                return self._engine
            try:
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                raise self.error(
                    f"cannot make {self.path.parent} for {self.what}: {exc.strerror or exc}"
                ) from exc
            engine = create_engine(f"sqlite:///{self.path}", connect_args={"timeout": 5.0})
            synchronous = self.synchronous

            def on_connect(dbapi_connection: Any, _record: Any) -> None:
                cursor = dbapi_connection.cursor()
                try:
                    cursor.execute("PRAGMA journal_mode=WAL")
                    cursor.execute(f"PRAGMA synchronous={synchronous}")
                finally:
                    cursor.close()

            event.listen(engine, "connect", on_connect)
            try:
                self.metadata.create_all(engine)
            except SQLAlchemyError as exc:
                engine.dispose()
                raise self.error(f"cannot open {self.path}: {reason(exc)}") from exc
            self._engine = engine
            return engine
