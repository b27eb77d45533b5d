"""The counts ingest keeps beside the events: per hour, per blocked name and day, per device,
and per device and day for the watched categories (``WATCHED``).

The counts are kept in the transaction that inserts a batch, from the rows that insert
actually wrote, so an event held already (a batch sent again, an overlap between batches) is
never counted twice, and a batch that fails leaves the counts as they were. There are two
ways, merging by the same rules (``_count_update`` and the two after it):

- ``record`` adds up the rows in the collector and merges the sums, one compiled
  ``INSERT ... ON CONFLICT DO UPDATE`` executed for all of them. SQLite takes this way, and
  PostgreSQL in the rare case ``count_copied`` cannot tell a batch's rows apart.
- ``count_copied`` and ``insert_staged`` make PostgreSQL add up the rows where they already
  are, with one statement: the collector sends nothing twice.

Each table's rows go in sorted by key, so two batches of the same site taking the same way
lock the rows they share in the same order, and PostgreSQL never has to break a deadlock
between them. A batch counted by ``record`` beside one counted in the database may take them
in another order (the database sorts by its collation and runs the statement's parts in an
order of its own); then PostgreSQL may break a deadlock by failing one, which the agent
sends again, as after any failure. That needs the rare case above at the same moment.

Hours and days are UTC, as the numbers of seconds since the epoch at their start.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

from sqlalchemy import (
    CTE,
    ColumnElement,
    Connection,
    Double,
    Integer,
    Select,
    String,
    Table,
    and_,
    bindparam,
    case,
    delete,
    func,
    literal,
    or_,
    select,
    type_coerce,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY

from schoolgate.agent.activity.events import EventKind
from schoolgate.agent.policy.decision import Action
from schoolgate.server.db.schema import BlockedName, CategoryUse, Device, Event, EventCount

HOUR: Final = 3_600
DAY: Final = 86_400
# The actions of a query the filter refused to answer (the agent also writes allow, alert and
# rewrite). Only dns events are counted as blocked names: the alert an agent raises about a
# blocked lookup is the same lookup again.
BLOCKING_ACTIONS: Final = frozenset(a.value for a in Action if a.blocks)
# The categories counted per device and day (``category_use``), for the questions a school
# asks of them by device: which pupils reach generative AI tools, how often, blocked or not.
# Each costs ingest only for its own lookups (the deciding category, as ``event_counts``).
WATCHED: Final = ("genai",)

_events = cast(Table, Event.__table__)
_counts = cast(Table, EventCount.__table__)
_blocked = cast(Table, BlockedName.__table__)
_devices = cast(Table, Device.__table__)
_use = cast(Table, CategoryUse.__table__)

Row = Mapping[str, Any]
# The columns of an event the counts read.
_COUNTED: Final = (
    "site_id",
    "seq",
    "time",
    "kind",
    "grp",
    "category",
    "action",
    "name",
    "client_ip",
    "mac",
    "hostname",
)


def hour_of(when: float) -> float:
    """The start of the UTC hour ``when`` falls in."""
    return float(int(when // HOUR) * HOUR)


def day_of(when: float) -> float:
    """Midnight UTC of the day ``when`` falls in."""
    return float(int(when // DAY) * DAY)


@dataclass
class _DeviceSeen:
    first: float
    last: float
    events: int = 0
    hostname: str = ""
    hostname_at: float = -1.0
    group: str = ""
    group_at: float = -1.0
    blocked: int = 0  # of the events, those the filter refused (category_use only)

    def add(self, row: Row) -> None:
        when = row["time"]
        self.first = min(self.first, when)
        self.last = max(self.last, when)
        self.events += 1
        if row["hostname"] and when >= self.hostname_at:
            self.hostname, self.hostname_at = row["hostname"], when
        if row["grp"] and when >= self.group_at:
            self.group, self.group_at = row["grp"], when


def record(conn: Connection, site_id: int, rows: Sequence[Row]) -> None:
    """Add ``rows`` (events of ``site_id`` just inserted, as ``event_values`` makes them) to
    the hourly counts, the blocked names and the devices."""
    if not rows:
        return
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert

    counts: dict[tuple[float, str, str, str, str], int] = {}
    blocked: dict[tuple[float, str], tuple[int, str, float]] = {}
    devices: dict[tuple[str, str], _DeviceSeen] = {}
    use: dict[tuple[float, str, str, str], _DeviceSeen] = {}
    for row in rows:
        when = row["time"]
        key = (hour_of(when), row["kind"], row["grp"], row["category"], row["action"])
        counts[key] = counts.get(key, 0) + 1
        if row["kind"] == EventKind.DNS and row["action"] in BLOCKING_ACTIONS and row["name"]:
            name_key = (day_of(when), row["name"])
            n, category, at = blocked.get(name_key, (0, "", -1.0))
            if when >= at:
                category, at = row["category"], when
            blocked[name_key] = (n + 1, category, at)
        if row["client_ip"] or row["mac"]:
            device_key = (row["client_ip"], row["mac"])
            seen = devices.get(device_key)
            if seen is None:
                seen = devices[device_key] = _DeviceSeen(first=when, last=when)
            seen.add(row)
            if row["kind"] == EventKind.DNS and row["category"] in WATCHED:
                use_key = (day_of(when), row["category"], row["client_ip"], row["mac"])
                used = use.get(use_key)
                if used is None:
                    used = use[use_key] = _DeviceSeen(first=when, last=when)
                used.add(row)
                used.blocked += row["action"] in BLOCKING_ACTIONS

    # The tables in the same order in every transaction, and each one's rows by key.
    _upsert(
        conn,
        insert,
        _counts,
        [
            {
                "site_id": site_id,
                "hour": hour,
                "kind": kind,
                "grp": grp,
                "category": category,
                "action": action,
                "count": n,
            }
            for (hour, kind, grp, category, action), n in sorted(counts.items())
        ],
        _count_update,
    )
    _upsert(
        conn,
        insert,
        _blocked,
        [
            {"site_id": site_id, "day": day, "name": name, "category": category, "count": n}
            for (day, name), (n, category, _at) in sorted(blocked.items())
        ],
        _blocked_update,
    )
    _upsert(
        conn,
        insert,
        _devices,
        [
            {
                "site_id": site_id,
                "client_ip": client_ip,
                "mac": mac,
                "hostname": seen.hostname,
                "grp": seen.group,
                "first_seen": seen.first,
                "last_seen": seen.last,
                "events": seen.events,
            }
            for (client_ip, mac), seen in sorted(devices.items())
        ],
        _device_update,
    )
    _upsert(
        conn,
        insert,
        _use,
        [
            {
                "site_id": site_id,
                "day": day,
                "category": category,
                "client_ip": client_ip,
                "mac": mac,
                "hostname": used.hostname,
                "grp": used.group,
                "last_seen": used.last,
                "queries": used.events,
                "blocked": used.blocked,
            }
            for (day, category, client_ip, mac), used in sorted(use.items())
        ],
        _use_update,
    )


# How a row already held takes in the same key's row from a new batch; both ways of keeping
# the counts (``record``, and ``count_copied`` and ``insert_staged``) merge by these.


def _count_update(excluded: Any) -> dict[str, Any]:
    return {"count": _counts.c.count + excluded.count}


def _blocked_update(excluded: Any) -> dict[str, Any]:
    return {
        "count": _blocked.c.count + excluded.count,
        "category": case((excluded.category != "", excluded.category), else_=_blocked.c.category),
    }


def _newest(table: Table, excluded: Any, column: str) -> Any:
    """A name from this batch replaces the one held when the batch is the newer news, or when
    nothing was held: a batch that arrives late does not undo a rename."""
    ours, theirs = table.c[column], excluded[column]
    return case(
        (and_(theirs != "", or_(excluded.last_seen >= table.c.last_seen, ours == "")), theirs),
        else_=ours,
    )


def _later(table: Table, excluded: Any) -> Any:
    held = table.c.last_seen
    return case((excluded.last_seen > held, excluded.last_seen), else_=held)


def _use_update(excluded: Any) -> dict[str, Any]:
    u = _use.c
    return {
        "hostname": _newest(_use, excluded, "hostname"),
        "grp": _newest(_use, excluded, "grp"),
        "last_seen": _later(_use, excluded),
        "queries": u.queries + excluded.queries,
        "blocked": u.blocked + excluded.blocked,
    }


def _device_update(excluded: Any) -> dict[str, Any]:
    d = _devices.c

    def newest(column: str) -> Any:
        return _newest(_devices, excluded, column)

    return {
        "first_seen": case(
            (excluded.first_seen < d.first_seen, excluded.first_seen), else_=d.first_seen
        ),
        "last_seen": _later(_devices, excluded),
        "hostname": newest("hostname"),
        "grp": newest("grp"),
        "events": d.events + excluded.events,
    }


def _upsert(
    conn: Connection,
    insert: Callable[[Table], Any],
    table: Table,
    values: list[dict[str, Any]],
    changes: Callable[[Any], dict[str, Any]],
) -> None:
    """One statement executed for all the rows: it is compiled once and cached, where a
    multi-row VALUES with its thousands of parameters was built and parsed anew for every
    batch (most of the collector's time at ingest)."""
    if not values:
        return
    keys = [c.name for c in table.primary_key.columns]
    statement = insert(table)
    conn.execute(
        statement.on_conflict_do_update(index_elements=keys, set_=changes(statement.excluded)),
        values,
    )


def insert_staged(stage: Table) -> Select[int]:
    """PostgreSQL: one statement that moves the events staged in ``stage`` (a table of the
    columns of ``events``, in their order) into ``events``, skipping those held already, adds
    the ones it inserted to the counts, and answers how many it inserted.

    This is for a batch holding events the collector has already: the counting is the
    database's GROUP BY over the insert's RETURNING rows, so exactly the rows written are
    counted. The events go in by key, and each table's rows by key, for the lock order
    described above.
    """
    moved = (
        postgresql.insert(_events)
        .from_select(
            [c.name for c in _events.columns],
            select(*stage.columns).order_by(stage.c.seq, stage.c.time),
        )
        .on_conflict_do_nothing()
        .returning(*(_events.c[name] for name in _COUNTED))
        .cte("inserted")
    )
    return select(func.count()).select_from(moved).add_cte(*_merges(moved, guard=None))


def count_copied() -> Select[int]:
    """PostgreSQL: one statement that adds to the counts a batch just copied into ``events``
    whole, read back from there, and answers how many events it read.

    The batch is read back as the events of site ``site_id`` with sequence numbers from
    ``first_seq`` to ``last_seq``, times from ``first_time`` to ``last_time`` (which keeps the
    read to the batch's partitions), received at ``received``. Those are the ``expected``
    events of the batch, all of which went in, and normally no others; when the read finds any
    other number (another batch received at the very same moment with sequence numbers
    overlapping these) it counts nothing, and the caller counts the batch itself (``record``).

    Counting in the database, rather than in the collector and sending the sums as
    parameters, halves the collector's time at ingest; reading the rows back costs it far
    less than sending them to the database twice.
    """
    e = _events.c
    copied = (
        select(*(e[name] for name in _COUNTED))
        .where(
            e.site_id == bindparam("site_id", type_=Integer),
            e.seq.between(bindparam("first_seq"), bindparam("last_seq")),
            e.time.between(bindparam("first_time"), bindparam("last_time")),
            e.received == bindparam("received", type_=Double),
        )
        .cte("copied")
    )
    found = select(func.count()).select_from(copied).scalar_subquery()
    guard = found == bindparam("expected", type_=Integer)
    return select(found).add_cte(*_merges(copied, guard))


def _merges(inserted: CTE, guard: ColumnElement[bool] | None) -> tuple[CTE, CTE, CTE, CTE]:
    """The CTEs that add the events of ``inserted`` (a CTE of the columns ``_COUNTED``) to
    the four tables, by the rules ``record`` follows; none of them adds anything unless
    ``guard`` holds."""
    e = inserted.c
    held = [guard] if guard is not None else []

    def latest(column: Any, nonempty: bool) -> Any:
        """The value of ``column`` in the newest of a group's events (the higher sequence
        number of two at the same time, as ``record`` reads them), or the newest non-empty
        one."""
        newest_first = postgresql.aggregate_order_by(column, e.time.desc(), e.seq.desc())
        values: Any = func.array_agg(newest_first)
        if nonempty:
            values = values.filter(column != "")
        return func.coalesce(type_coerce(values, ARRAY(String))[1], "")

    hour = _start_of(e.time, HOUR)
    counts = _merge(
        _counts,
        select(e.site_id, hour, e.kind, e.grp, e.category, e.action, func.count())
        .where(*held)
        .group_by(e.site_id, hour, e.kind, e.grp, e.category, e.action),
        _count_update,
    )
    day = _start_of(e.time, DAY)
    blocked = _merge(
        _blocked,
        select(e.site_id, day, e.name, latest(e.category, nonempty=False), func.count())
        .where(
            *held,
            e.kind == EventKind.DNS.value,
            e.action.in_(sorted(BLOCKING_ACTIONS)),
            e.name != "",
        )
        .group_by(e.site_id, day, e.name),
        _blocked_update,
    )
    devices = _merge(
        _devices,
        select(
            e.site_id,
            e.client_ip,
            e.mac,
            latest(e.hostname, nonempty=True),
            latest(e.grp, nonempty=True),
            func.min(e.time),
            func.max(e.time),
            func.count(),
        )
        .where(*held, or_(e.client_ip != "", e.mac != ""))
        .group_by(e.site_id, e.client_ip, e.mac),
        _device_update,
    )
    use = _merge(
        _use,
        select(
            e.site_id,
            day,
            e.category,
            e.client_ip,
            e.mac,
            latest(e.hostname, nonempty=True),
            latest(e.grp, nonempty=True),
            func.max(e.time),
            func.count(),
            func.count().filter(e.action.in_(sorted(BLOCKING_ACTIONS))),
        )
        .where(
            *held,
            e.kind == EventKind.DNS.value,
            e.category.in_(WATCHED),
            or_(e.client_ip != "", e.mac != ""),
        )
        .group_by(e.site_id, day, e.category, e.client_ip, e.mac),
        _use_update,
    )
    return counts, blocked, devices, use


def _start_of(when: Any, period: int) -> Any:
    """``hour_of``/``day_of`` in SQL, to the same float. The division cannot round a time
    just before a boundary up onto it: its quotient is more than half a unit below."""
    length = literal(float(period), Double)
    return func.floor(when / length) * length


def _merge(table: Table, source: Select[Any], changes: Callable[[Any], dict[str, Any]]) -> Any:
    """``source`` (one row per key of ``table``, its columns in the table's order) merged into
    ``table`` by ``changes``, in key order, as a CTE of the statement ``insert_staged`` makes."""
    keys = [c.name for c in table.primary_key.columns]
    statement = postgresql.insert(table).from_select(
        [c.name for c in table.columns],
        source.order_by(*list(source.selected_columns)[: len(keys)]),
    )
    return statement.on_conflict_do_update(
        index_elements=keys, set_=changes(statement.excluded)
    ).cte(f"merged_{table.name}")


def prune(conn: Connection, before: float) -> None:
    """Forget the counts of hours and days that ended by ``before``, and the devices not seen
    since then."""
    conn.execute(delete(_counts).where(_counts.c.hour <= before - HOUR))
    conn.execute(delete(_blocked).where(_blocked.c.day <= before - DAY))
    conn.execute(delete(_devices).where(_devices.c.last_seen < before))
    conn.execute(delete(_use).where(_use.c.day <= before - DAY))
