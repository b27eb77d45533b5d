"""What each school's agent last said about itself, kept from its ``status`` events.

An agent sends a ``heartbeat`` every few minutes (its version, when it started, how fresh its
lists are, what it had to drop, what waits in its spool) and a ``policy-test`` when what it
serves changes and once a day (the result of ``schoolgate-agent policy test``). Ingest keeps
the newest of each in ``agent_status``, in the batch's transaction; the events themselves stay
in ``events``, and the heartbeats are counted per hour in ``event_counts``, which is what the
uptime indicator reads.

A spool that was offline ships its events late and out of order, so a status is only taken
when it is newer than the one held.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

from sqlalchemy import Connection, Engine, Table, and_, func, select

from schoolgate.agent.activity.events import EventKind
from schoolgate.event_batch import ShippedEvent
from schoolgate.server.db.schema import AgentStatus, EventCount

HEARTBEAT: Final = "heartbeat"
POLICY_TEST: Final = "policy-test"
# An agent that has not beaten for this many of its intervals is shown as not reporting.
MISSED_BEATS: Final = 3
DEFAULT_EVERY: Final = 300.0
BIGGEST: Final = 2**63 - 1  # a BIGINT column's

_status = cast(Table, AgentStatus.__table__)
_counts = cast(Table, EventCount.__table__)
_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _count(value: Any) -> int:
    number = _number(value)
    return min(max(0, int(number)), BIGGEST) if number is not None else 0


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _newest(events: Iterable[ShippedEvent], action: str) -> ShippedEvent | None:
    found: ShippedEvent | None = None
    for event in events:
        if (
            event.kind is EventKind.STATUS
            and event.action == action
            and (found is None or event.time > found.time)
        ):
            found = event
    return found


def heartbeat_values(event: ShippedEvent) -> dict[str, Any]:
    """The columns a heartbeat fills. Its data comes from the network: every figure is
    checked for its type, and what is not a number is taken as not known."""
    data = _mapping(event.data)
    lists, dropped = _mapping(data.get("lists")), _mapping(data.get("dropped"))
    version = data.get("version")
    return {
        "reported": event.time,
        "version": version[:64] if isinstance(version, str) else "",
        "started": _number(data.get("started")),
        "every": every if (every := _number(data.get("every"))) and every > 0 else None,
        "lists_updated": _number(lists.get("updated")),
        "lists_oldest": _number(lists.get("oldest")),
        "dropped": _count(dropped.get("total")),
        "waiting": _count(data.get("waiting")),
        "data": _json.encode(data),
    }


def record(
    conn: Connection,
    insert: Callable[[Table], Any],
    site_id: int,
    events: Sequence[ShippedEvent],
) -> None:
    """Keep the newest heartbeat and policy test among ``events`` (a batch being ingested),
    unless a newer one is held already."""
    beat = _newest(events, HEARTBEAT)
    test = _newest(events, POLICY_TEST)
    if beat is None and test is None:
        return
    empty = {
        "site_id": site_id,
        "reported": 0.0,
        "version": "",
        "dropped": 0,
        "waiting": 0,
        "data": "",
        "policy_test": "",
    }
    if beat is not None:
        values = heartbeat_values(beat)
        statement = insert(_status).values({**empty, **values})
        conn.execute(
            statement.on_conflict_do_update(
                index_elements=["site_id"],
                set_={k: statement.excluded[k] for k in values},
                where=_status.c.reported < statement.excluded.reported,
            )
        )
    if test is not None:
        values = {"tested": test.time, "policy_test": _json.encode(test.data)}
        statement = insert(_status).values({**empty, **values})
        conn.execute(
            statement.on_conflict_do_update(
                index_elements=["site_id"],
                set_={k: statement.excluded[k] for k in values},
                where=func.coalesce(_status.c.tested, 0.0) < statement.excluded.tested,
            )
        )


@dataclass(frozen=True)
class AgentHealth:
    """A site's agent as the admin pages show it."""

    site_id: int
    reported: float  # 0: no heartbeat yet
    version: str
    started: float | None
    every: float
    lists_updated: float | None
    lists_oldest: float | None
    dropped: int
    waiting: int
    stale: int  # list sources the agent counts as out of date
    tested: float | None
    policy_test: dict[str, Any] | None

    def reporting(self, now: float) -> bool:
        """Whether the agent has beaten lately (within a few of its own intervals)."""
        return self.reported > 0 and now - self.reported <= self.every * MISSED_BEATS

    @property
    def test_summary(self) -> dict[str, Any] | None:
        summary = (self.policy_test or {}).get("summary")
        return summary if isinstance(summary, dict) else None


def _loaded(text: str) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        loaded = json.loads(text)
    except ValueError:
        return None
    return loaded if isinstance(loaded, dict) else None


def _health(row: Any) -> AgentHealth:
    beat = _loaded(row.data) or {}
    return AgentHealth(
        site_id=row.site_id,
        reported=row.reported,
        version=row.version,
        started=row.started,
        every=row.every or DEFAULT_EVERY,
        lists_updated=row.lists_updated,
        lists_oldest=row.lists_oldest,
        dropped=row.dropped,
        waiting=row.waiting,
        stale=_count(_mapping(beat.get("lists")).get("stale")),
        tested=row.tested,
        policy_test=_loaded(row.policy_test),
    )


class AgentStatuses:
    """Reads what ``record`` kept, and the heartbeats counted per hour."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def health(self, sites: Sequence[int]) -> dict[int, AgentHealth]:
        query = select(_status).where(_status.c.site_id.in_(sites))
        with self.engine.connect() as conn:
            return {row.site_id: _health(row) for row in conn.execute(query)}

    def beats(self, sites: Sequence[int], since: float, until: float) -> dict[int, int]:
        """How many heartbeats each site sent in the hours from ``since`` to ``until``."""
        c = _counts.c
        query = (
            select(c.site_id, func.sum(c.count))
            .where(
                and_(
                    c.site_id.in_(sites),
                    c.hour >= since,
                    c.hour < until,
                    c.kind == EventKind.STATUS.value,
                    c.action == HEARTBEAT,
                )
            )
            .group_by(c.site_id)
        )
        with self.engine.connect() as conn:
            return {site: int(total or 0) for site, total in conn.execute(query)}


def uptime(beats: int, every: float, since: float, until: float) -> float | None:
    """The share of the period the agent was running, from the heartbeats it sent: each
    stands for one interval. None when the period is empty."""
    span = until - since
    if span <= 0:
        return None
    return min(1.0, beats * every / span)
