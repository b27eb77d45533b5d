"""The collector's store, behind one interface: what the API and the CLI may ask of it.

``Repository`` is the interface; ``SqlRepository`` keeps everything in one SQL database
through SQLAlchemy Core (SQLite or PostgreSQL). A bigger store can follow by implementing the
same methods. Every method is synchronous and short; the web app calls them in worker threads.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import msgspec
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Double,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError

from schoolgate.agent.activity.store import categories_text, reversed_name
from schoolgate.event_batch import ShippedEvent
from schoolgate.server import agent_status, rollups
from schoolgate.server.db.engine import is_postgresql
from schoolgate.server.db.partitions import Partitions
from schoolgate.server.db.schema import Event, IngestBatch, Site
from schoolgate.server.tokens import new_token, token_hash

_events = cast(Table, Event.__table__)
_batches = cast(Table, IngestBatch.__table__)
_sites = cast(Table, Site.__table__)
_json = msgspec.json.Encoder()
_EVENT_COLUMNS = tuple(column.name for column in _events.columns)
_event_columns = operator.itemgetter(*_EVENT_COLUMNS)  # a row's values, in that order
# Binary: the collector spends a quarter of the time formatting the rows that it spends on
# text, and the server parses no numbers.
_COPY_EVENTS = f"COPY events ({', '.join(_EVENT_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
_COUNT_COPIED = rollups.count_copied()
_UNIQUE_VIOLATION = "23505"
# A session's own table, emptied at each commit (only in a transaction that used it).
_MAKE_STAGE = "CREATE TEMP TABLE IF NOT EXISTS ingest_events (LIKE events) ON COMMIT DELETE ROWS"
_COPY_STAGE = f"COPY pg_temp.ingest_events ({', '.join(_EVENT_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
_stage = Table(
    "ingest_events",
    MetaData(),
    *(Column(column.name, column.type) for column in _events.columns),
    schema="pg_temp",
)
_INSERT_STAGED = rollups.insert_staged(_stage)


_PRUNE_SLICE = 10_000


class SiteExists(ValueError):
    """A site of that name is already registered."""


@dataclass(frozen=True)
class SiteRef:
    id: int
    name: str


@dataclass(frozen=True)
class SiteInfo:
    id: int
    name: str
    created: float
    last_seen: float | None
    events: int


@dataclass(frozen=True)
class Ingested:
    """What became of a batch: events inserted, already held, too old to keep."""

    inserted: int
    duplicates: int
    expired: int
    replayed: bool  # the same Idempotency-Key was accepted before: nothing was written


class Repository(Protocol):
    engine: Engine

    def add_site(self, name: str) -> tuple[SiteRef, str]: ...

    def sites(self) -> list[SiteInfo]: ...

    def site_for_token(self, token: str) -> SiteRef | None: ...

    def ingest(
        self, site: SiteRef, key: str, events: Sequence[ShippedEvent], keep_after: float
    ) -> Ingested: ...

    def prune(self, before: float) -> int: ...

    def count_events(self, site_id: int | None = None) -> int: ...


def event_values(site_id: int, event: ShippedEvent, received: float) -> dict[str, Any]:
    """The row of ``events`` for one shipped event."""
    return {
        "site_id": site_id,
        "seq": event.seq,
        "time": event.time,
        "kind": event.kind.value,
        "client_ip": event.client_ip,
        "mac": event.mac,
        "hostname": event.hostname,
        "grp": event.group,
        "name": event.name,
        "rname": reversed_name(event.name),
        "qtype": event.qtype,
        "action": event.action,
        "category": event.categories[0] if event.categories else "",
        "categories": categories_text(event.categories),
        "rule": event.rule,
        "rcode": event.rcode,
        "latency_ms": event.latency_ms,
        "cache_hit": event.cache_hit,
        "severity": event.severity.value if event.severity is not None else None,
        "data": _json.encode(event.data).decode() if event.data else "",
        "received": received,
    }


def _went_in(rows: list[dict[str, Any]], keys: Iterable[Any]) -> list[dict[str, Any]]:
    """The rows whose (seq, time) are among ``keys``, as RETURNING names the rows inserted."""
    by_key: dict[tuple[int, float], dict[str, Any]] = {}
    for row in rows:
        by_key.setdefault((row["seq"], row["time"]), row)
    return [by_key[(seq, when)] for seq, when in keys]


def _insert_postgresql(conn: Connection, site_id: int, rows: list[dict[str, Any]]) -> int:
    """PostgreSQL: the rows (sorted by key) into ``events``, skipping those held already, and
    counted (``rollups``); how many went in.

    COPY costs a fraction of an INSERT of the same rows (no statement of 40,000 parameters to
    build and parse), but it cannot skip a row that is there already. So the rows are copied
    straight into ``events`` under a savepoint, the usual case, and read back from there to
    be counted. When one of them is held already (a batch regrouped after the agent
    restarted) the savepoint is rolled back and the rows are copied into a temporary table
    instead, and one statement moves on those not held and counts them. All of it is in the
    caller's transaction.
    """
    driver = conn.connection.driver_connection
    assert driver is not None
    error: type[Exception] = conn.dialect.loaded_dbapi.Error
    values = [_event_columns(row) for row in rows]
    try:
        with conn.begin_nested(), driver.cursor() as cursor:
            _copy(cursor, _COPY_EVENTS, values)
    except error as exc:
        if getattr(exc, "sqlstate", None) != _UNIQUE_VIOLATION:
            raise _wrapped(exc, _COPY_EVENTS, error) from exc
    else:
        times = [row["time"] for row in rows]
        read_back = {
            "site_id": site_id,
            "first_seq": rows[0]["seq"],
            "last_seq": rows[-1]["seq"],
            "first_time": min(times),
            "last_time": max(times),
            "received": rows[0]["received"],
            "expected": len(rows),
        }
        if conn.execute(_COUNT_COPIED, read_back).scalar_one() != len(rows):
            rollups.record(conn, site_id, rows)
        return len(rows)
    try:
        with driver.cursor() as cursor:
            # Every time: this path is rare, and a transaction that made the table and then
            # failed took it with it.
            cursor.execute(_MAKE_STAGE)
            _copy(cursor, _COPY_STAGE, values)
    except error as exc:
        raise _wrapped(exc, _COPY_STAGE, error) from exc
    return int(conn.execute(_INSERT_STAGED).scalar_one())


def _postgresql_type(column: Column[Any]) -> str:
    """The PostgreSQL type of a column of ``events``, as binary COPY must be told it."""
    if isinstance(column.type, BigInteger):
        return "int8"
    for sql_type, name in ((Integer, "int4"), (Double, "float8"), (Boolean, "bool")):
        if isinstance(column.type, sql_type):
            return name
    if isinstance(column.type, Text):
        return "text"
    if isinstance(column.type, String):
        return "varchar"
    raise TypeError(f"binary COPY of events.{column.name} ({column.type}) is not mapped")


_EVENT_TYPES = [_postgresql_type(column) for column in _events.columns]


def _copy(cursor: Any, statement: str, values: list[tuple[Any, ...]]) -> None:
    with cursor.copy(statement) as copy:
        copy.set_types(_EVENT_TYPES)
        for row in values:
            copy.write_row(row)


def _wrapped(exc: Exception, statement: str, error: type[Exception]) -> BaseException:
    """The driver's error as SQLAlchemy's (IntegrityError, DataError, ...), as the callers
    expect of every database error."""
    return DBAPIError.instance(statement, None, exc, error)


class SqlRepository:
    """The store in one SQL database (SQLite or PostgreSQL), through SQLAlchemy Core."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.postgresql = is_postgresql(engine)
        self.partitions = Partitions(engine) if self.postgresql else None
        self._insert = postgresql.insert if self.postgresql else sqlite.insert

    # --- sites ------------------------------------------------------------------------------

    def add_site(self, name: str) -> tuple[SiteRef, str]:
        """Register a site; its token, to be shown once (only its hash is kept)."""
        token = new_token()
        try:
            with self.engine.begin() as conn:
                site_id = conn.execute(
                    _sites.insert()
                    .values(name=name, token_hash=token_hash(token), created=time.time())
                    .returning(_sites.c.id)
                ).scalar_one()
        except IntegrityError:
            raise SiteExists(f"a site named {name!r} exists already") from None
        return SiteRef(site_id, name), token

    def sites(self) -> list[SiteInfo]:
        counts = (
            select(_events.c.site_id, func.count().label("n"))
            .group_by(_events.c.site_id)
            .subquery()
        )
        query = (
            select(_sites.c.id, _sites.c.name, _sites.c.created, _sites.c.last_seen, counts.c.n)
            .outerjoin(counts, counts.c.site_id == _sites.c.id)
            .order_by(_sites.c.name)
        )
        with self.engine.connect() as conn:
            return [
                SiteInfo(row.id, row.name, row.created, row.last_seen, row.n or 0)
                for row in conn.execute(query)
            ]

    def site_for_token(self, token: str) -> SiteRef | None:
        query = select(_sites.c.id, _sites.c.name).where(_sites.c.token_hash == token_hash(token))
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return SiteRef(row.id, row.name) if row is not None else None

    # --- events -----------------------------------------------------------------------------

    def ingest(
        self, site: SiteRef, key: str, events: Sequence[ShippedEvent], keep_after: float
    ) -> Ingested:
        """Insert a batch once: a key seen before, or events held already, insert nothing.

        Events older than ``keep_after`` (the retention period) are counted and not kept.
        The batch's key, its events, the counts kept beside them (``rollups``) and the site's
        last-seen time are one transaction, so a batch is either wholly recorded or not at all,
        and a retry after a lost answer finds it by its key.
        """
        now = time.time()
        if self._key_seen(site, key):
            return Ingested(0, 0, 0, replayed=True)
        kept = [e for e in events if e.time >= keep_after]
        if self.partitions is not None and kept:
            self.partitions.ensure(e.time for e in kept)
        # In key order: two batches holding the same events (a retry sent while the first try
        # is still being written) then wait on each other's rows in the same order, never in
        # a cycle PostgreSQL has to break as a deadlock.
        rows = [event_values(site.id, e, now) for e in sorted(kept, key=lambda e: (e.seq, e.time))]
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    _batches.insert().values(
                        site_id=site.id, key=key, received=now, events=len(events), inserted=0
                    )
                )
                inserted = self._insert_events(conn, site, rows)
                agent_status.record(conn, self._insert, site.id, kept)
                conn.execute(
                    update(_batches)
                    .where(_batches.c.site_id == site.id, _batches.c.key == key)
                    .values(inserted=inserted)
                )
                conn.execute(update(_sites).where(_sites.c.id == site.id).values(last_seen=now))
        except IntegrityError:
            # The same key, committed by a concurrent request between the check and here, is a
            # replay. Anything else (no partition for a row, say) is a failure the agent must
            # retry, never a batch to forget.
            if self._key_seen(site, key):
                return Ingested(0, 0, 0, replayed=True)
            if self.partitions is not None:
                self.partitions.forget()
            raise
        return Ingested(inserted, len(kept) - inserted, len(events) - len(kept), replayed=False)

    def _insert_events(self, conn: Connection, site: SiteRef, rows: list[dict[str, Any]]) -> int:
        """Insert ``rows`` into ``events``, skipping those held already, and add the ones that
        went in to the counts kept beside them (``rollups``); how many went in."""
        if not rows:
            return 0
        if self.postgresql:
            return _insert_postgresql(conn, site.id, rows)
        # One compiled statement for every row: SQLAlchemy sends it as multi-row INSERTs of up
        # to 1,000 rows ("insertmanyvalues", within SQLite's 32,766 parameters). Building a
        # statement from the rows' values instead costs ten times as much as the insert.
        statement = (
            self._insert(_events).on_conflict_do_nothing().returning(_events.c.seq, _events.c.time)
        )
        written = _went_in(rows, conn.execute(statement, rows))
        rollups.record(conn, site.id, written)
        return len(written)

    def _key_seen(self, site: SiteRef, key: str) -> bool:
        query = select(_batches.c.id).where(_batches.c.site_id == site.id, _batches.c.key == key)
        with self.engine.connect() as conn:
            return conn.execute(query).first() is not None

    def count_events(self, site_id: int | None = None) -> int:
        query = select(func.count()).select_from(_events)
        if site_id is not None:
            query = query.where(_events.c.site_id == site_id)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def prune(self, before: float) -> int:
        """Remove events older than ``before``, the batch keys of the same age, and the counts
        of the hours and days that ended by then (``rollups.prune``).

        PostgreSQL drops whole days (partitions); SQLite deletes rows in slices so that
        ingest never waits long behind it. How many partitions or rows went.
        """
        gone = 0
        if self.partitions is not None:
            gone = len(self.partitions.drop_before(before))
        else:
            # By rowid, a slice at a time: SQLite has no DELETE ... LIMIT by default.
            slice_of_old = text(
                "DELETE FROM events WHERE rowid IN "
                "(SELECT rowid FROM events WHERE time < :before LIMIT :n)"
            )
            while True:
                with self.engine.begin() as conn:
                    went = conn.execute(slice_of_old, {"before": before, "n": _PRUNE_SLICE})
                gone += went.rowcount
                if went.rowcount < _PRUNE_SLICE:
                    break
        with self.engine.begin() as conn:
            conn.execute(delete(_batches).where(_batches.c.received < before))
            rollups.prune(conn, before)
        return gone
