"""The counts ingest keeps beside the events: per hour, per blocked name and day, per device.

``record`` runs in the transaction that inserts a batch, on the rows that insert actually
wrote, so an event held already (a batch sent again, an overlap between batches) is never
counted twice, and a batch that fails leaves the counts as they were. Each table is brought up
to date with one ``INSERT ... ON CONFLICT DO UPDATE`` per slice of rows, the rows sorted by
their key: two batches of the same site then lock the rows they share in the same order, and
PostgreSQL never has to break a deadlock between them.

Hours and days are UTC, as the numbers of seconds since the epoch at their start.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

from sqlalchemy import Connection, Table, and_, case, delete, or_
from sqlalchemy.dialects import postgresql, sqlite

from schoolgate.agent.activity.events import EventKind
from schoolgate.agent.policy.decision import Action
from schoolgate.server.db.schema import BlockedName, Device, EventCount

HOUR: Final = 3_600
DAY: Final = 86_400
# The actions of a query the filter refused to answer (the agent also writes allow, alert and
# rewrite). Only dns events are counted as blocked names: the alert an agent raises about a
# blocked lookup is the same lookup again.
BLOCKING_ACTIONS: Final = frozenset(a.value for a in Action if a.blocks)

_counts = cast(Table, EventCount.__table__)
_blocked = cast(Table, BlockedName.__table__)
_devices = cast(Table, Device.__table__)

Row = Mapping[str, Any]


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
        lambda excluded: {"count": _counts.c.count + excluded.count},
    )
    _upsert(
        conn,
        insert,
        _blocked,
        [
            {"site_id": site_id, "day": day, "name": name, "category": category, "count": n}
            for (day, name), (n, category, _at) in sorted(blocked.items())
        ],
        lambda excluded: {
            "count": _blocked.c.count + excluded.count,
            "category": case(
                (excluded.category != "", excluded.category), else_=_blocked.c.category
            ),
        },
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


def _device_update(excluded: Any) -> dict[str, Any]:
    d = _devices.c

    # A name from this batch replaces the one held when the batch is the newer news, or when
    # nothing was held: a batch that arrives late does not undo a rename.
    def newest(column: str) -> Any:
        ours, theirs = d[column], excluded[column]
        return case(
            (and_(theirs != "", or_(excluded.last_seen >= d.last_seen, ours == "")), theirs),
            else_=ours,
        )

    return {
        "first_seen": case(
            (excluded.first_seen < d.first_seen, excluded.first_seen), else_=d.first_seen
        ),
        "last_seen": case(
            (excluded.last_seen > d.last_seen, excluded.last_seen), else_=d.last_seen
        ),
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


def prune(conn: Connection, before: float) -> None:
    """Forget the counts of hours and days that ended by ``before``, and the devices not seen
    since then."""
    conn.execute(delete(_counts).where(_counts.c.hour <= before - HOUR))
    conn.execute(delete(_blocked).where(_blocked.c.day <= before - DAY))
    conn.execute(delete(_devices).where(_devices.c.last_seen < before))
