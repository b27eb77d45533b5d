"""The district's indicators per school, measured from what the collector holds rather than
claimed: how fast alerts are acknowledged, how many devices are approved, how fresh the
lists are, how much of the time the agent ran, and how often the filter was worked around.

Each figure is read from the tables kept at ingest or by the pages (``event_counts``,
``alert_reviews``, ``devices`` and ``device_reviews``, ``agent_status``), never by reading
a period of events.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

from sqlalchemy import Engine, Table, and_, func, or_, select

from schoolgate.agent.activity.events import EventKind
from schoolgate.agent.policy.categories import Tier, bundled
from schoolgate.server.agent_status import AgentStatuses, uptime
from schoolgate.server.db.schema import AlertReview, EventCount
from schoolgate.server.reviews import Reviews
from schoolgate.server.rollups import BLOCKING_ACTIONS, HOUR

# An alert acknowledged within a day was dealt with the same school day or the next morning.
ACK_TARGET: Final = 86_400.0
# The lookups of these categories blocked count as attempts at a way around the filter.
BYPASS_CATEGORIES: Final = tuple(sorted(c.id for c in bundled() if c.tier is Tier.BYPASS))

_counts = cast(Table, EventCount.__table__)
_reviews = cast(Table, AlertReview.__table__)


@dataclass(frozen=True)
class SchoolIndicators:
    site_id: int
    alerts: int  # raised in the period
    acknowledged: int  # of those, acknowledged by now
    median_ack: float | None  # seconds from alert to acknowledgement
    ack_within_target: float | None  # share acknowledged within ACK_TARGET
    devices: int
    approved: int  # approved or marked known
    uptime: float | None  # share of the period the agent was running (None: no heartbeats)
    lists_updated: float | None
    stale_sources: int  # list sources the agent counts as overdue for an update
    bypass_events: int  # bypass events the agent's monitor saw
    bypass_lookups: int  # lookups of proxies, VPNs and encrypted DNS the filter blocked

    @property
    def approved_share(self) -> float | None:
        return self.approved / self.devices if self.devices else None


def _sums(engine: Engine, sites: Sequence[int], since: float, until: float) -> dict[int, Any]:
    c = _counts.c
    bypass_lookup = and_(
        c.kind == EventKind.DNS.value,
        c.category.in_(BYPASS_CATEGORIES),
        c.action.in_(sorted(BLOCKING_ACTIONS)),
    )
    query = (
        select(c.site_id, c.kind, func.sum(c.count))
        .where(
            c.site_id.in_(sites),
            c.hour >= since - since % HOUR,
            c.hour < until,
            or_(c.kind.in_((EventKind.ALERT.value, EventKind.BYPASS.value)), bypass_lookup),
        )
        .group_by(c.site_id, c.kind)
    )
    found: dict[int, Any] = defaultdict(lambda: defaultdict(int))
    with engine.connect() as conn:
        for site_id, kind, total in conn.execute(query):
            found[site_id][kind] += int(total or 0)
    return found


def _ack_times(
    engine: Engine, sites: Sequence[int], since: float, until: float
) -> dict[int, list[float]]:
    r = _reviews.c
    query = select(r.site_id, r.reviewed - r.time).where(
        r.site_id.in_(sites), r.time >= since, r.time < until
    )
    found: dict[int, list[float]] = defaultdict(list)
    with engine.connect() as conn:
        for site_id, waited in conn.execute(query):
            found[site_id].append(max(0.0, float(waited)))
    return found


def school_indicators(
    engine: Engine,
    sites: Sequence[Any],
    since: float,
    until: float,
) -> list[SchoolIndicators]:
    """The indicators of ``sites`` (rows with ``id`` and ``created``) over ``since`` to
    ``until``. A school's period starts no earlier than when it was added, so a school that
    joined in March is not marked down for January."""
    ids = [s["id"] for s in sites]
    if not ids:
        return []
    sums = _sums(engine, ids, since, until)
    acks = _ack_times(engine, ids, since, until)
    devices = Reviews(engine).device_counts(ids)
    agents = AgentStatuses(engine)
    health = agents.health(ids)
    beats = agents.beats(ids, since - since % HOUR, until)
    found = []
    for site in sites:
        site_id = site["id"]
        start = max(since, site["created"] or since)
        waited = acks.get(site_id, [])
        known = health.get(site_id)
        counted = devices.get(site_id, {})
        alerts = sums[site_id][EventKind.ALERT.value] if site_id in sums else 0
        found.append(
            SchoolIndicators(
                site_id=site_id,
                alerts=alerts,
                acknowledged=len(waited),
                median_ack=statistics.median(waited) if waited else None,
                ack_within_target=(
                    sum(w <= ACK_TARGET for w in waited) / len(waited) if waited else None
                ),
                devices=counted.get("devices", 0),
                approved=counted.get("approved", 0) + counted.get("known", 0),
                uptime=(
                    uptime(beats.get(site_id, 0), known.every, start, until)
                    if known is not None and known.reported
                    else None
                ),
                lists_updated=known.lists_updated if known else None,
                stale_sources=known.stale if known else 0,
                bypass_events=sums[site_id][EventKind.BYPASS.value] if site_id in sums else 0,
                bypass_lookups=sums[site_id][EventKind.DNS.value] if site_id in sums else 0,
            )
        )
    return found
