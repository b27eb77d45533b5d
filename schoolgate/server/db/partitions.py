"""Daily partitions of ``events`` on PostgreSQL.

Each UTC day of events is one table, ``events_YYYYMMDD``, a partition of ``events`` for
``time`` in [midnight, next midnight). A batch's days are made before the batch is inserted,
in a short transaction of their own under an advisory lock, so two batches never race to make
the same one; the retention job makes the next days ahead of time, so the ingest path rarely
has to, and drops the days that are older than the retention period whole, which frees their
disk at once (deleting rows would not).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Final

from sqlalchemy import Connection, Engine, text

DAY: Final = 86_400
_LOCK: Final = 0x5C6A7E  # the advisory lock taken while partitions are made or dropped
_NAME = re.compile(r"^events_(\d{8})$")


def day_of(when: float) -> int:
    """The number of the UTC day ``when`` falls in (days since the epoch)."""
    return int(when // DAY)


def partition_name(day: int) -> str:
    return "events_" + datetime.fromtimestamp(day * DAY, UTC).strftime("%Y%m%d")


def _day_of_name(name: str) -> int | None:
    found = _NAME.match(name)
    if found is None:
        return None
    made = datetime.strptime(found.group(1), "%Y%m%d").replace(tzinfo=UTC)
    return int(made.timestamp()) // DAY


class Partitions:
    """The days of ``events`` that exist, made on demand and dropped by age."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._known: set[int] = set()

    def ensure(self, times: Iterable[float]) -> int:
        """Make the partitions for the days of ``times`` that are missing; how many were made."""
        wanted = {day_of(t) for t in times} - self._known
        if not wanted:
            return 0
        made = 0
        with self._engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK})
            existing = self._existing(conn)
            missing = sorted(wanted - existing)
            for day in missing:
                name = partition_name(day)
                conn.execute(
                    text(
                        f"CREATE TABLE {name} PARTITION OF events "
                        f"FOR VALUES FROM ({day * DAY}) TO ({(day + 1) * DAY})"
                    )
                )
                made += 1
        # Remembered once committed: a failed transaction made nothing.
        self._known |= existing | wanted
        return made

    def forget(self) -> None:
        """Look at the database again next time (after an insert found a day missing)."""
        self._known.clear()

    def ahead(self, days: int = 2, now: float | None = None) -> int:
        """Make today's partition and the next ``days``; how many were made."""
        today = day_of(time.time() if now is None else now)
        return self.ensure((today + d) * DAY for d in range(days + 1))

    def drop_before(self, cutoff: float) -> list[str]:
        """Drop the partitions whose whole day is before ``cutoff``; their names."""
        dropped: list[str] = []
        with self._engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK})
            for day in sorted(self._existing(conn)):
                if (day + 1) * DAY <= cutoff:
                    name = partition_name(day)
                    conn.execute(text(f"DROP TABLE {name}"))
                    dropped.append(name)
                    self._known.discard(day)
        return dropped

    def days(self) -> list[int]:
        with self._engine.connect() as conn:
            return sorted(self._existing(conn))

    @staticmethod
    def _existing(conn: Connection) -> set[int]:
        rows = conn.execute(
            text(
                "SELECT c.relname FROM pg_inherits i "
                "JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_class p ON p.oid = i.inhparent "
                "WHERE p.relname = 'events' AND p.relnamespace = c.relnamespace "
                "AND pg_table_is_visible(p.oid)"
            )
        )
        found = (_day_of_name(name) for (name,) in rows)
        return {day for day in found if day is not None}
