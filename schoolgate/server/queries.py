"""The admin API's reads: events, counts, devices and requests, always within given sites.

Every method takes the ids of the sites it may read and never looks outside them; which sites
those are is the caller's business (``auth.Principal``). Lists come newest first in pages
(keyset pagination): a page ends with the key of its last row, and the next page starts after
that key, so rows arriving meanwhile neither shift a page nor repeat one. Keys end with
columns that make them unique (site and sequence number for an event), so rows with equal
times are never skipped or repeated at a page boundary.

The key is handed to clients as an opaque cursor (``encode_cursor``): base64 of JSON.

An event search over several sites reads each site's newest events on its own and merges them
here: each site's are one range of an index, while in order across sites they are in none, and
the database would read and sort every event of the period to find one page.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import itertools
import json
import operator
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Final, cast

import sqlalchemy as sa
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Engine,
    Select,
    Table,
    and_,
    bindparam,
    case,
    false,
    func,
    literal,
    or_,
    select,
    true,
)

from schoolgate.agent.activity.events import EventKind
from schoolgate.agent.activity.store import reversed_name
from schoolgate.server.db.engine import is_postgresql
from schoolgate.server.db.schema import (
    BlockedName,
    CategoryUse,
    Device,
    Event,
    EventCount,
    Site,
    UnblockRequest,
)
from schoolgate.server.rollups import BLOCKING_ACTIONS, DAY

_events = cast(Table, Event.__table__)
_sites = cast(Table, Site.__table__)
_counts = cast(Table, EventCount.__table__)
_blocked = cast(Table, BlockedName.__table__)
_devices = cast(Table, Device.__table__)
_use = cast(Table, CategoryUse.__table__)
_requests = cast(Table, UnblockRequest.__table__)

Key = tuple[Any, ...]
Row = dict[str, Any]

EVENT_COLUMNS: Final = (
    "site_id",
    "seq",
    "time",
    "kind",
    "client_ip",
    "mac",
    "hostname",
    "grp",
    "name",
    "qtype",
    "action",
    "category",
    "categories",
    "rule",
    "rcode",
    "latency_ms",
    "cache_hit",
    "severity",
    "data",
)
# The shapes of the keys, checked when a cursor comes back from a client.
EVENT_KEY: Final = (float, int, int)  # time, site, sequence number
DEVICE_KEY: Final = (float, int, str, str)  # last seen, site, address, MAC
REQUEST_KEY: Final = (float, int, str)  # created, site, the agent's id
EVENT_KEY_COLUMNS: Final = ("time", "site_id", "seq")
_event_key = operator.itemgetter(*EVENT_KEY_COLUMNS)
# A search over several sites first asks each site for its share of the page (the page over
# the sites), at least this many: a read costs a round trip, about what a few dozen rows cost,
# and a site with few matching events is then walked only as far as its share. A site that gives
# more (a large school) is asked for twice as many each time, so no site is read much further
# than the page takes from it, and a page holds no more than a few pages' rows however large it
# is (an export's pages are thousands).
LEAST_SITE_READ: Final = 8


def encode_cursor(key: Key) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def decode_cursor(text: str, shape: Sequence[type]) -> Key:
    """The key in a cursor made by ``encode_cursor``; ``ValueError`` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        values = json.loads(raw)
    except (binascii.Error, ValueError):
        raise ValueError("not a cursor this collector made") from None
    if not isinstance(values, list) or len(values) != len(shape):
        raise ValueError("not a cursor this collector made")
    key: list[Any] = []
    for value, kind in zip(values, shape, strict=True):
        whole = isinstance(value, int) and not isinstance(value, bool)
        found = float(value) if kind is float and whole else value
        if type(found) is not kind:
            raise ValueError("not a cursor this collector made")
        key.append(found)
    return tuple(key)


def before_key(columns: Sequence[Any], key: Key) -> ColumnElement[bool]:
    """(columns) < (key) in descending order, spelt out so that any database can use an index
    on the first column: c1 <= k1 AND (c1 < k1 OR (c1 = k1 AND (c2 < k2 OR ...)))."""
    condition: ColumnElement[bool] = columns[-1] < key[-1]
    for column, value in zip(reversed(columns[:-1]), reversed(key[:-1]), strict=True):
        condition = or_(column < value, and_(column == value, condition))
    return and_(columns[0] <= key[0], condition)


def _like_prefix(prefix: str) -> str:
    """A LIKE pattern for strings starting with ``prefix`` (backslash, the default escape)."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


@dataclass(frozen=True)
class Page:
    rows: list[Row]
    next: Key | None  # the key to continue after, None on the last page


@dataclass(frozen=True)
class EventFilter:
    """What an event search asks for; empty strings and None ask nothing."""

    sites: tuple[int, ...]
    since: float | None = None
    until: float | None = None  # exclusive
    client: str = ""
    mac: str = ""
    hostname: str = ""
    group: str = ""
    name: str = ""  # the name and every name below it
    category: str = ""  # the deciding category or any other the name is listed in
    action: str = ""
    kinds: tuple[str, ...] = ()  # any of these; empty: every kind
    severity: str = ""
    received_by: float | None = None  # only events the collector had by then (an export)


@dataclass(frozen=True)
class DeviceFilter:
    sites: tuple[int, ...]
    since: float | None = None  # last seen at or after
    client: str = ""
    mac: str = ""
    hostname: str = ""
    group: str = ""


class EventQueries:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.postgresql = is_postgresql(engine)

    # --- sites --------------------------------------------------------------------------------

    def sites(self) -> list[Row]:
        """Every site, by name: id, name, created, last_seen."""
        s = _sites.c
        query = select(s.id, s.name, s.created, s.last_seen).order_by(s.name)
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    # --- events -------------------------------------------------------------------------------

    def _when(self, f: EventFilter) -> ColumnElement[float]:
        """``time`` as a search's conditions on it are written. Without statistics SQLite
        walks the day newest first by the time index, to spare a sort, reading every event to
        find the few under one name (150 ms over a school's day). ``time + 0`` keeps it off
        that index and on the name's."""
        e = _events.c
        return e.time + 0 if f.name and not self.postgresql else e.time

    def _event_conditions(self, f: EventFilter) -> list[ColumnElement[bool]]:
        e = _events.c
        found: list[ColumnElement[bool]] = [e.site_id.in_(f.sites) if f.sites else false()]
        when = self._when(f)
        if f.since is not None:
            found.append(when >= f.since)
        if f.until is not None:
            found.append(when < f.until)
        for column, value in (
            (e.client_ip, f.client),
            (e.mac, f.mac),
            (e.hostname, f.hostname),
            (e.grp, f.group),
            (e.action, f.action),
            (e.severity, f.severity),
        ):
            if value:
                found.append(column == value)
        if f.name:
            prefix = reversed_name(f.name)
            if self.postgresql:
                # Byte-wise, whatever the collation, through the text_pattern_ops index.
                found.append(e.rname.like(_like_prefix(prefix)))
            else:
                # SQLite compares bytes: the names starting with the prefix are one range
                # ('/' is the character after '.').
                found.append(and_(e.rname >= prefix, e.rname < prefix[:-1] + "/"))
        if f.category:
            found.append(
                or_(
                    e.category == f.category,
                    e.categories.contains(f",{f.category},", autoescape=True),
                )
            )
        if f.kinds:
            # Written into the statement, not bound: only then can the database tell that
            # a search for alerts may read the alerts' own index (ix_events_site_alerts).
            found.append(
                e.kind == bindparam(None, f.kinds[0], literal_execute=True)
                if len(f.kinds) == 1
                else e.kind.in_(bindparam(None, f.kinds, expanding=True, literal_execute=True))
            )
        if f.received_by is not None:
            found.append(e.received <= f.received_by)
        return found

    def events(self, f: EventFilter, limit: int, after: Key | None = None) -> Page:
        """The newest ``limit`` events matching ``f``, after the key ``after``."""
        sites = tuple(dict.fromkeys(f.sites))  # a site named twice must not give rows twice
        # One site is asked for the whole page and one more at once: one read, as it always was.
        share = max(LEAST_SITE_READ, -(-(limit + 1) // max(len(sites), 1)))
        with self._reading() as conn:
            each = (
                self._site_events(conn, replace(f, sites=(site,)), limit + 1, share, after)
                for site in sites
            )
            newest = heapq.merge(*each, key=_event_key, reverse=True)
            rows = list(itertools.islice(newest, limit + 1))
        return page_of(rows, limit, EVENT_KEY_COLUMNS)

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        """A connection for a search, whose statements PostgreSQL plans for their own values.
        psycopg prepares a statement once a connection has run it five times, as a search does
        site by site, and PostgreSQL may then plan it once for any values: a plan that expects
        a filter to match almost nothing, so sorts all of a site's events in the period instead
        of reading them newest first (a name in a large school's day: 50 to 100 ms, not 1)."""
        with self.engine.connect() as conn:
            if self.postgresql:
                conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")
            yield conn

    def _events_query(self, f: EventFilter, most: int, after: Key | None) -> Select[Any]:
        """The newest ``most`` events matching ``f`` after the key ``after``, in key order."""
        f, after = _one_upper_bound(f, after)
        e = _events.c
        query = (
            select(*(e[c] for c in EVENT_COLUMNS))
            .where(*self._event_conditions(f))
            .order_by(*(e[c].desc() for c in EVENT_KEY_COLUMNS))
            .limit(most)
        )
        if after is not None:
            query = query.where(before_key((self._when(f), e.site_id, e.seq), after))
        return query

    def _site_events(
        self, conn: Connection, f: EventFilter, most: int, first: int, after: Key | None
    ) -> Iterator[Row]:
        """The events of the one site of ``f``, newest first after ``after``, at most ``most``,
        read only as far as they are asked for: ``first`` of them, then twice as many at a
        time (``LEAST_SITE_READ``)."""
        wanted = min(most, first)
        while wanted > 0:
            rows = [
                dict(row) for row in conn.execute(self._events_query(f, wanted, after)).mappings()
            ]
            yield from rows
            if len(rows) < wanted:
                return
            most -= wanted
            after = _event_key(rows[-1])
            wanted = min(most, wanted * 2)

    def count_events(self, f: EventFilter, most: int) -> int:
        """How many events match ``f``, counting no further than ``most``."""
        matching = select(literal(1)).where(*self._event_conditions(f)).limit(most).subquery()
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(matching)).scalar_one())

    # --- counts -------------------------------------------------------------------------------

    def daily(
        self,
        sites: Sequence[int],
        since: float,
        until: float | None,
        group: str = "",
        category: str = "",
    ) -> list[Row]:
        """Per site, UTC day, group and category: DNS queries, those blocked, and alerts, over
        the hours that start from ``since`` and before ``until``."""
        c = _counts.c
        # Hours are whole numbers of seconds: as integers, division floors to the day.
        day = (sa.cast(c.hour, BigInteger) // DAY * DAY).label("day")
        dns = c.kind == EventKind.DNS.value

        def total(condition: ColumnElement[bool]) -> Any:
            return func.sum(case((condition, c.count), else_=0))

        query = (
            select(
                c.site_id,
                day,
                c.grp,
                c.category,
                total(dns).label("queries"),
                total(and_(dns, c.action.in_(sorted(BLOCKING_ACTIONS)))).label("blocked"),
                total(c.kind == EventKind.ALERT.value).label("alerts"),
            )
            .where(
                c.site_id.in_(sites) if sites else false(),
                c.hour >= since,
                c.hour < until if until is not None else true(),
                c.kind.in_((EventKind.DNS.value, EventKind.ALERT.value)),
            )
            .group_by(c.site_id, day, c.grp, c.category)
            .order_by(day.desc(), c.site_id, c.grp, c.category)
        )
        if group:
            query = query.where(c.grp == group)
        if category:
            query = query.where(c.category == category)
        numbers = ("queries", "blocked", "alerts")
        with self.engine.connect() as conn:
            return [
                {**row, "day": float(row["day"]), **{n: int(row[n]) for n in numbers}}
                for row in conn.execute(query).mappings()
            ]

    def totals(
        self,
        sites: Sequence[int],
        since: float,
        until: float | None,
        by: Sequence[str],
        group: str = "",
        category: str = "",
    ) -> list[Row]:
        """DNS queries, those blocked, and alerts over the hours from ``since`` to before
        ``until``, summed by the ``event_counts`` columns ``by`` (site_id, hour, grp,
        category), largest number of queries first."""
        c = _counts.c
        dns = c.kind == EventKind.DNS.value
        columns = [c[name] for name in by]

        def total(condition: ColumnElement[bool]) -> Any:
            return func.sum(case((condition, c.count), else_=0))

        queries = total(dns).label("queries")
        query = (
            select(
                *columns,
                queries,
                total(and_(dns, c.action.in_(sorted(BLOCKING_ACTIONS)))).label("blocked"),
                total(c.kind == EventKind.ALERT.value).label("alerts"),
            )
            .where(
                c.site_id.in_(sites) if sites else false(),
                c.hour >= since,
                c.hour < until if until is not None else true(),
                c.kind.in_((EventKind.DNS.value, EventKind.ALERT.value)),
            )
            .group_by(*columns)
            .order_by(queries.desc(), *columns)
        )
        if group:
            query = query.where(c.grp == group)
        if category:
            query = query.where(c.category == category)
        numbers = ("queries", "blocked", "alerts")
        with self.engine.connect() as conn:
            return [
                {**row, **{n: int(row[n] or 0) for n in numbers}}
                for row in conn.execute(query).mappings()
            ]

    def top_blocked(
        self,
        sites: Sequence[int],
        since: float,
        until: float | None,
        limit: int,
        category: str = "",
    ) -> list[Row]:
        """The names blocked most often on the days that start from ``since`` and before
        ``until``."""
        b = _blocked.c
        total = func.sum(b.count).label("count")
        query = (
            select(b.name, func.max(b.category).label("category"), total)
            .where(
                b.site_id.in_(sites) if sites else false(),
                b.day >= since,
                b.day < until if until is not None else true(),
            )
            .group_by(b.name)
            .order_by(total.desc(), b.name)
            .limit(limit)
        )
        if category:
            query = query.where(b.category == category)
        with self.engine.connect() as conn:
            return [{**row, "count": int(row["count"])} for row in conn.execute(query).mappings()]

    def category_use(
        self,
        sites: Sequence[int],
        category: str,
        since: float,
        until: float | None,
        limit: int,
    ) -> tuple[int, list[Row]]:
        """How many devices looked up names of a watched category (``rollups.WATCHED``) on
        the days from ``since`` to before ``until``, and the ``limit`` that did so most: their
        lookups, how many were blocked, on how many days, and when last."""
        u = _use.c
        scope = and_(
            u.site_id.in_(sites) if sites else false(),
            u.category == category,
            u.day >= since,
            u.day < until if until is not None else true(),
        )
        queries = func.sum(u.queries).label("queries")
        query = (
            select(
                u.site_id,
                u.client_ip,
                u.mac,
                # A device's name and group seldom change within a period; when they do,
                # either is a fair name for it here (the devices page has the newest).
                func.max(u.hostname).label("hostname"),
                func.max(u.grp).label("grp"),
                queries,
                func.sum(u.blocked).label("blocked"),
                func.count().label("days"),
                func.max(u.last_seen).label("last_seen"),
            )
            .where(scope)
            .group_by(u.site_id, u.client_ip, u.mac)
            .order_by(queries.desc(), u.site_id, u.client_ip, u.mac)
            .limit(limit)
        )
        devices = select(u.site_id, u.client_ip, u.mac).where(scope).distinct().subquery()
        with self.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(devices)).scalar_one()
            rows = [
                {**row, "queries": int(row["queries"]), "blocked": int(row["blocked"])}
                for row in conn.execute(query).mappings()
            ]
        return int(total), rows

    # --- devices and requests -----------------------------------------------------------------

    def devices(self, f: DeviceFilter, limit: int, after: Key | None = None) -> Page:
        d = _devices.c
        key_columns = (d.last_seen, d.site_id, d.client_ip, d.mac)
        query = (
            select(_devices)
            .where(d.site_id.in_(f.sites) if f.sites else false())
            .order_by(*(c.desc() for c in key_columns))
            .limit(limit + 1)
        )
        if f.since is not None:
            query = query.where(d.last_seen >= f.since)
        for column, value in (
            (d.client_ip, f.client),
            (d.mac, f.mac),
            (d.hostname, f.hostname),
            (d.grp, f.group),
        ):
            if value:
                query = query.where(column == value)
        if after is not None:
            query = query.where(before_key(key_columns, after))
        return self._page(query, limit, ("last_seen", "site_id", "client_ip", "mac"))

    def requests(
        self,
        sites: Sequence[int],
        status: str,
        limit: int,
        after: Key | None = None,
    ) -> Page:
        r = _requests.c
        key_columns = (r.created, r.site_id, r.id)
        query = (
            select(_requests)
            .where(r.site_id.in_(sites) if sites else false())
            .order_by(*(c.desc() for c in key_columns))
            .limit(limit + 1)
        )
        if status:
            query = query.where(r.status == status)
        if after is not None:
            query = query.where(before_key(key_columns, after))
        return self._page(query, limit, ("created", "site_id", "id"))

    def pending_requests(self, sites: Sequence[int]) -> dict[int, int]:
        """Per site, the unblock requests waiting for a decision."""
        r = _requests.c
        query = (
            select(r.site_id, func.count().label("pending"))
            .where(r.site_id.in_(sites) if sites else false(), r.status == "pending")
            .group_by(r.site_id)
        )
        with self.engine.connect() as conn:
            return {row.site_id: int(row.pending) for row in conn.execute(query)}

    def _page(self, query: Select[Any], limit: int, key: Sequence[str]) -> Page:
        return read_page(self.engine, query, limit, key)


def _one_upper_bound(f: EventFilter, after: Key | None) -> tuple[EventFilter, Key | None]:
    """``f`` and ``after`` with only the lower of ``until`` and the key's time left, which
    asks for the same events. SQLite plans without the values, and without statistics: given
    ``time`` below both, it reads a device's events by the time index instead of the device's
    (a next page from 0.2 ms to 13 over a school's day)."""
    if after is None or f.until is None:
        return f, after
    if f.until <= after[0]:
        return f, None  # every event before ``until`` is before the key
    return replace(f, until=None), after


def read_page(engine: Engine, query: Select[Any], limit: int, key: Sequence[str]) -> Page:
    """The rows of ``query``, which asks for ``limit + 1``: a page of ``limit``, and the key
    (the columns ``key`` of its last row) to go on from when there was one more."""
    with engine.connect() as conn:
        rows = [dict(row) for row in conn.execute(query).mappings()]
    return page_of(rows, limit, key)


def page_of(rows: list[Row], limit: int, key: Sequence[str]) -> Page:
    """The page of ``limit`` that ``rows`` (``limit + 1`` when there are more) begin, and the
    key (the columns ``key`` of its last row) to go on from when there was one more."""
    if len(rows) <= limit:
        return Page(rows, None)
    rows = rows[:limit]
    return Page(rows, tuple(rows[-1][k] for k in key))
