"""The local activity store: every event the agent recorded, for searching and for the spool.

``STATE_DIR/activity/events.sqlite``, one SQLite table in WAL mode, written in batches by one
writer (never on the DNS event loop) and read by the ``log`` command and, later, the collector
uploader at the same time. Each event gets a sequence number that is never used again, even
after old events are deleted, so a batch can be named by its numbers when it is shipped.

``synchronous=NORMAL``: a power cut can lose the last batches committed before it (the events
still in memory are lost then anyway), never the file. Searching by name covers the name and
every name below it through an index on the name written backwards (``com.example.www.``), so
``example.com`` is a range of that index rather than a scan of the table.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec
from sqlalchemy import (
    Boolean,
    Column,
    ColumnElement,
    Connection,
    Float,
    Index,
    Integer,
    MetaData,
    Row,
    String,
    Table,
    Text,
    and_,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)

from schoolgate.agent.activity.events import Event, EventKind, Severity, StoredEvent
from schoolgate.agent.sqlite import SqliteError, SqliteFile

# Deleting old events a slice at a time keeps each transaction short, so the writer never
# waits long behind the retention job.
_PRUNE_SLICE: Final = 5_000

_metadata = MetaData()
_events = Table(
    "events",
    _metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),
    Column("time", Float, nullable=False),
    Column("client_ip", String(45), nullable=False, default=""),
    Column("mac", String(17), nullable=False, default=""),
    Column("hostname", String(255), nullable=False, default=""),
    Column("grp", String(63), nullable=False, default=""),
    Column("name", String(253), nullable=False, default=""),
    Column("rname", String(254), nullable=False, default=""),
    Column("qtype", String(16), nullable=False, default=""),
    Column("action", String(16), nullable=False, default=""),
    Column("categories", Text, nullable=False, default=""),  # ",a,b," for exact matching
    Column("rule", Text, nullable=False, default=""),
    Column("rcode", String(16), nullable=False, default=""),
    Column("latency_ms", Float),
    Column("cache_hit", Boolean),
    Column("severity", String(16)),
    Column("data", Text, nullable=False, default=""),
    # Every index costs each write a B-tree insert (the names' one at a random place), and
    # writing must keep up with the busiest school: only the searches staff make most have
    # one. A group or a kind is searched within a time range, which the time index narrows.
    Index("events_by_time", "time"),
    Index("events_by_client", "client_ip", "time"),
    Index("events_by_name", "rname"),
    # AUTOINCREMENT: a sequence number is never handed out twice, even after a prune.
    sqlite_autoincrement=True,
)


# The upload's bookkeeping (see ``spool``), in the same file so that an event and its place in
# the queue are written in one transaction. One row of state: this store's identity (a new
# store, after a reinstall, names its batches anew) and the sequence number up to which every
# event has been shipped or given up on.
_upload_state = Table(
    "upload_state",
    _metadata,
    Column("id", Integer, primary_key=True),
    Column("store_id", String(32), nullable=False),
    Column("sent_through", Integer, nullable=False, default=0),
)
# Alerts waiting to be shipped ahead of the events before them; ``sent`` once they have been,
# until the watermark passes them.
_upload_alerts = Table(
    "upload_alerts",
    _metadata,
    Column("seq", Integer, primary_key=True),
    Column("sent", Boolean, nullable=False, default=False),
)
# Unsent events that retention deleted before they could be shipped: counted as they go (in
# the same transaction), reported and reset by the spool (one row).
_upload_pruned = Table(
    "upload_pruned",
    _metadata,
    Column("id", Integer, primary_key=True),
    Column("events", Integer, nullable=False, default=0),
)
# Batches the collector refused as malformed (a 4xx other than 401, 408, 413 and 429): kept
# in the log, never sent again, counted and listed here.
_upload_quarantine = Table(
    "upload_quarantine",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("time", Float, nullable=False),
    Column("first_seq", Integer, nullable=False),
    Column("last_seq", Integer, nullable=False),
    Column("events", Integer, nullable=False),
    Column("reason", Text, nullable=False),
)


class ActivityStoreError(SqliteError):
    """The activity store cannot be opened, read or written; the message says why."""


@dataclass(frozen=True)
class EventFilter:
    """What ``search`` keeps: every condition given must hold."""

    kinds: tuple[EventKind, ...] = ()
    clients: tuple[str, ...] = ()  # any of these IP addresses, MAC addresses or device names
    group: str = ""
    name: str = ""  # this name and every name below it
    category: str = ""
    action: str = ""
    since: float | None = None  # seconds since the epoch, inclusive
    until: float | None = None  # exclusive
    after_seq: int | None = None  # only events written after this one (paging oldest first)


def reversed_name(name: str) -> str:
    """'www.example.com' -> 'com.example.www.': names below a name share its prefix."""
    labels = [label for label in name.lower().rstrip(".").split(".") if label]
    return ".".join(reversed(labels)) + "." if labels else ""


class ActivityStore:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "activity" / "events.sqlite"
        self._file = SqliteFile(
            self.path, _metadata, "activity events", ActivityStoreError, synchronous="NORMAL"
        )

    def add(self, events: Sequence[Event]) -> int:
        """Write ``events`` in one transaction; how many were written."""
        return self.add_rows([event_row(e) for e in events])

    def add_rows(self, rows: Sequence[EventRow]) -> int:
        """Write rows made by ``event_row`` (or made the same way) in one transaction."""
        if not rows:
            return 0
        with self._file.connection() as conn:
            # The driver's executemany with plain tuples: the writer shares the interpreter
            # with the DNS service, and building SQLAlchemy parameters for every row cost
            # five times as much.
            conn.exec_driver_sql(_INSERT, rows)
            alerts = [i for i, row in enumerate(rows) if row[0] == "alert"]
            if alerts:
                # One writer, one transaction, AUTOINCREMENT: the rows got consecutive
                # numbers ending at the last one inserted.
                last = conn.exec_driver_sql("SELECT last_insert_rowid()").scalar_one()
                first = last - len(rows) + 1
                conn.execute(_upload_alerts.insert(), [{"seq": first + i} for i in alerts])
        return len(rows)

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A connection to the store in a transaction (for the upload's bookkeeping)."""
        with self._file.connection() as conn:
            yield conn

    def search(
        self, where: EventFilter, limit: int = 1000, newest_first: bool = True
    ) -> builtins.list[StoredEvent]:
        """Events matching ``where``: the newest ``limit`` of them, newest first unless told."""
        t = _events
        query = select(t).where(*_conditions(where)).limit(limit)
        query = query.order_by(t.c.seq.desc() if newest_first else t.c.seq)
        with self._file.connection() as conn:
            return [stored_event(row) for row in conn.execute(query)]

    def count(self) -> int:
        with self._file.connection() as conn:
            return int(conn.execute(select(func.count()).select_from(_events)).scalar_one())

    def oldest(self) -> float | None:
        """The time of the oldest event, None when there is none (read from the time index)."""
        with self._file.connection() as conn:
            found = conn.execute(select(func.min(_events.c.time))).scalar_one()
        return None if found is None else float(found)

    def prune(self, before: float) -> int:
        """Delete events older than ``before`` (seconds since the epoch); how many went.

        Events not yet shipped to the collector are counted as they go, in the transaction
        that deletes them, for the spool to report (``upload_pruned``): a clock that jumped
        can put old times in the middle of the queue, so position alone cannot tell.
        """
        t = _events
        deleted = 0
        while True:
            with self._file.connection() as conn:
                oldest = (
                    select(t.c.seq)
                    .where(t.c.time < before)
                    .order_by(t.c.seq)
                    .limit(_PRUNE_SLICE)
                    .subquery()
                )
                top = conn.execute(select(func.max(oldest.c.seq))).scalar_one()
                if top is None:
                    break
                doomed = [t.c.time < before, t.c.seq <= top]
                state = conn.execute(select(_upload_state.c.sent_through)).first()
                if state is not None:
                    shipped_alerts = select(_upload_alerts.c.seq).where(
                        _upload_alerts.c.sent.is_(True)
                    )
                    unsent = conn.execute(
                        select(func.count()).where(
                            *doomed,
                            t.c.seq > state.sent_through,
                            t.c.seq.not_in(shipped_alerts),
                        )
                    ).scalar_one()
                    if unsent:
                        _count_pruned(conn, unsent)
                gone = conn.execute(delete(t).where(*doomed)).rowcount
                conn.execute(
                    delete(_upload_alerts).where(
                        _upload_alerts.c.seq <= top, _upload_alerts.c.seq.not_in(select(t.c.seq))
                    )
                )
            deleted += gone
            if gone < _PRUNE_SLICE:
                break
        return deleted

    def take_pruned(self) -> int:
        """Unsent events retention deleted since the last call (the count is reset)."""
        with self._file.connection() as conn:
            found = conn.execute(select(_upload_pruned.c.events)).scalar_one_or_none()
            if found:
                conn.execute(update(_upload_pruned).values(events=0))
        return int(found or 0)

    def close(self) -> None:
        self._file.close()


def _count_pruned(conn: Connection, events: int) -> None:
    went = conn.execute(
        update(_upload_pruned).values(events=_upload_pruned.c.events + events)
    ).rowcount
    if not went:
        conn.execute(insert(_upload_pruned).values(id=1, events=events))


def _conditions(where: EventFilter) -> list[ColumnElement[bool]]:
    t = _events
    found: list[ColumnElement[bool]] = []
    if where.kinds:
        found.append(t.c.kind.in_([k.value for k in where.kinds]))
    if where.clients:
        clients = [c.strip().lower() for c in where.clients]
        found.append(
            or_(t.c.client_ip.in_(clients), t.c.mac.in_(clients), t.c.hostname.in_(clients))
        )
    if where.group:
        found.append(t.c.grp == where.group)
    if where.name:
        prefix = reversed_name(where.name)
        # Every reversed name starting with the prefix: '/' is the character after '.'.
        found.append(and_(t.c.rname >= prefix, t.c.rname < prefix[:-1] + "/"))
    if where.category:
        found.append(func.instr(t.c.categories, f",{where.category},") > 0)
    if where.action:
        found.append(t.c.action == where.action)
    if where.since is not None:
        found.append(t.c.time >= where.since)
    if where.until is not None:
        found.append(t.c.time < where.until)
    if where.after_seq is not None:
        found.append(t.c.seq > where.after_seq)
    return found


COLUMNS: Final = (
    "kind",
    "time",
    "client_ip",
    "mac",
    "hostname",
    "grp",
    "name",
    "rname",
    "qtype",
    "action",
    "categories",
    "rule",
    "rcode",
    "latency_ms",
    "cache_hit",
    "severity",
    "data",
)
_INSERT: Final = (  # built from the constant column names above; values are bound
    f"INSERT INTO events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})"  # noqa: S608
)


EventRow = tuple[Any, ...]


def event_row(e: Event) -> EventRow:
    """An event as the values of the table's columns, in order (``COLUMNS``)."""
    return (
        e.kind.value,
        e.time,
        e.client_ip,
        e.mac,
        e.hostname,
        e.group,
        e.name,
        reversed_name(e.name),
        e.qtype,
        e.action,
        categories_text(e.categories),
        e.rule,
        e.rcode,
        e.latency_ms,
        None if e.cache_hit is None else int(e.cache_hit),
        e.severity.value if e.severity is not None else None,
        msgspec.json.encode(e.data).decode() if e.data else "",
    )


def categories_text(categories: tuple[str, ...]) -> str:
    """How categories are stored: ",a,b," so that one is found whole with instr()."""
    return f",{','.join(categories)}," if categories else ""


def event_from_row(values: Sequence[Any]) -> Event:
    """The event a row (``COLUMNS`` in order) holds: ``event_row`` turned back."""
    (
        kind,
        when,
        client_ip,
        mac,
        hostname,
        group,
        name,
        _rname,
        qtype,
        action,
        categories,
        rule,
        rcode,
        latency_ms,
        cache_hit,
        severity,
        data,
    ) = values
    return Event(
        kind=EventKind(kind),
        time=when,
        client_ip=client_ip,
        mac=mac,
        hostname=hostname,
        group=group,
        name=name,
        qtype=qtype,
        action=action,
        categories=tuple(c for c in categories.split(",") if c),
        rule=rule,
        rcode=rcode,
        latency_ms=latency_ms,
        cache_hit=None if cache_hit is None else bool(cache_hit),
        severity=Severity(severity) if severity else None,
        data=msgspec.json.decode(data) if data else {},
    )


def stored_event(row: Row[Any]) -> StoredEvent:
    # The table's columns are the sequence number and then COLUMNS, in order.
    return StoredEvent(seq=row[0], event=event_from_row(tuple(row)[1:]))
