"""The agent's SQLite files: WAL, private, and errors in the database's own words."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, insert, select, text

from schoolgate.agent.sqlite import SqliteError, SqliteFile

metadata = MetaData()
numbers = Table("numbers", metadata, Column("n", Integer, primary_key=True))


class NumbersError(SqliteError):
    pass


def test_a_file_is_made_private_in_wal_mode_and_keeps_what_was_committed(tmp_path: Path) -> None:
    path = tmp_path / "state" / "numbers" / "n.sqlite"
    store = SqliteFile(path, metadata, "numbers", NumbersError, synchronous="NORMAL")
    with store.connection() as conn:
        conn.execute(insert(numbers).values(n=7))
        assert conn.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
        assert conn.execute(text("PRAGMA synchronous")).scalar_one() == 1  # NORMAL
    store.close()
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    again = SqliteFile(path, metadata, "numbers")
    with again.connection() as conn:
        assert conn.execute(select(numbers.c.n)).scalars().all() == [7]
    again.close()


def test_a_failed_write_is_rolled_back_and_named(tmp_path: Path) -> None:
    store = SqliteFile(tmp_path / "n.sqlite", metadata, "numbers", NumbersError)
    failed = pytest.raises(NumbersError, match=r"numbers in .*n\.sqlite: UNIQUE constraint")
    with failed, store.connection() as conn:
        conn.execute(insert(numbers).values(n=1))
        conn.execute(insert(numbers).values(n=1))
    with store.connection() as conn:
        assert conn.execute(select(numbers.c.n)).scalars().all() == []
    store.close()


def test_a_directory_that_cannot_be_made_is_an_error_and_tried_again(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the directory should be", encoding="utf-8")
    store = SqliteFile(blocker / "n" / "n.sqlite", metadata, "numbers", NumbersError)
    with pytest.raises(NumbersError, match="cannot make"), store.connection():
        pass
    blocker.unlink()
    with store.connection() as conn:  # the next call opens it
        conn.execute(insert(numbers).values(n=2))
    store.close()
