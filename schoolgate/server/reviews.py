"""What a school did about what it saw: alerts acknowledged with an outcome, devices approved
or marked as known.

The standards schools are held to ask that a safeguarding concern be followed up and the
follow-up written down, and that the devices on the network be known. An alert stays open
until somebody records an outcome and a note; a device stays new until somebody approves it
(it is the school's) or marks it known (somebody else's, seen and accepted: a visitor's
phone, the caretaker's television).

An acknowledgement is written once and never changed, like a line in a safeguarding log; a
device's review can be changed (a known device later approved), and the audit log keeps
each change.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

from sqlalchemy import (
    ColumnElement,
    Engine,
    Join,
    Table,
    and_,
    case,
    false,
    func,
    literal,
    select,
)
from sqlalchemy.exc import IntegrityError

from schoolgate.agent.activity.events import EventKind
from schoolgate.server.db.schema import AlertReview, Device, DeviceReview, Event
from schoolgate.server.queries import EVENT_COLUMNS, Key, Page, Row, before_key, read_page

_events = cast(Table, Event.__table__)
_alert_reviews = cast(Table, AlertReview.__table__)
_devices = cast(Table, Device.__table__)
_device_reviews = cast(Table, DeviceReview.__table__)

# What a school may record as done about an alert, in the words of a safeguarding log.
OUTCOMES: Final = (
    "no-concern",
    "spoke-to-user",
    "logged-safeguarding",
    "parents-contacted",
    "referred-externally",
    "wrong-category",
    "other",
)
DEVICE_STATUSES: Final = ("approved", "known")
ALERT_STATES: Final = ("open", "closed")
DEVICE_STATES: Final = ("new", *DEVICE_STATUSES)
MAX_NOTE: Final = 4_000
REVIEW_COLUMNS: Final = ("outcome", "note", "reviewed", "reviewed_by")


class ReviewError(ValueError):
    """A review that cannot be recorded; the message says why, for the person recording."""


class AlreadyReviewed(ReviewError):
    """The alert was acknowledged before (perhaps a moment ago, by a colleague)."""


def _note(text: str, needed: bool) -> str:
    note = text.strip()
    if needed and not note:
        raise ReviewError("write what was done: the note is the record")
    if len(note) > MAX_NOTE:
        raise ReviewError(f"the note is over {MAX_NOTE:,} characters")
    return note


@dataclass(frozen=True)
class AlertFilter:
    sites: tuple[int, ...]
    since: float | None = None
    until: float | None = None
    state: str = ""  # open, closed or either
    severity: str = ""
    group: str = ""


def _reviewed_alerts() -> Join:
    """Events, each with its acknowledgement when it has one."""
    e, r = _events.c, _alert_reviews.c
    return _events.outerjoin(
        _alert_reviews, and_(r.site_id == e.site_id, r.seq == e.seq, r.time == e.time)
    )


class Reviews:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # --- alerts -------------------------------------------------------------------------------

    def acknowledge(
        self,
        site_id: int,
        seq: int,
        when: float,
        outcome: str,
        note: str,
        by: str,
        now: float | None = None,
    ) -> Row:
        """Record what was done about one alert; ``ReviewError`` if it cannot be."""
        if outcome not in OUTCOMES:
            raise ReviewError(f"outcome {outcome!r} is not one of {', '.join(OUTCOMES)}")
        text = _note(note, needed=True)
        e = _events.c
        with self.engine.begin() as conn:
            alert = conn.execute(
                select(e.name, e.category, e.severity).where(
                    e.site_id == site_id,
                    e.seq == seq,
                    e.time == when,
                    e.kind == EventKind.ALERT.value,
                )
            ).first()
            if alert is None:
                raise ReviewError("there is no such alert (it may have passed retention)")
            row = {
                "site_id": site_id,
                "seq": seq,
                "time": when,
                "name": alert.name,
                "category": alert.category,
                "severity": alert.severity or "",
                "outcome": outcome,
                "note": text,
                "reviewed": time.time() if now is None else now,
                "reviewed_by": by,
            }
            try:
                with conn.begin_nested():
                    conn.execute(_alert_reviews.insert().values(**row))
            except IntegrityError:
                done = conn.execute(
                    select(_alert_reviews.c.reviewed_by).where(
                        _alert_reviews.c.site_id == site_id,
                        _alert_reviews.c.seq == seq,
                        _alert_reviews.c.time == when,
                    )
                ).scalar_one()
                raise AlreadyReviewed(f"this alert was acknowledged already, by {done}") from None
        return row

    def alerts(self, f: AlertFilter, limit: int, after: Key | None = None) -> Page:
        """Alerts newest first, each with its review (None fields while open)."""
        e, r = _events.c, _alert_reviews.c
        key_columns = (e.time, e.site_id, e.seq)
        joined = _reviewed_alerts()
        query = (
            select(*(e[c] for c in EVENT_COLUMNS), *(r[c] for c in REVIEW_COLUMNS))
            .select_from(joined)
            .where(*self._alert_conditions(f))
            .order_by(*(c.desc() for c in key_columns))
            .limit(limit + 1)
        )
        if after is not None:
            query = query.where(before_key(key_columns, after))
        return read_page(self.engine, query, limit, ("time", "site_id", "seq"))

    def _alert_conditions(self, f: AlertFilter) -> list[ColumnElement[bool]]:
        e, r = _events.c, _alert_reviews.c
        found: list[ColumnElement[bool]] = [
            e.site_id.in_(f.sites) if f.sites else false(),
            # A literal, so the alerts' partial index serves (queries._event_conditions).
            e.kind == literal(EventKind.ALERT.value, literal_execute=True),
        ]
        if f.since is not None:
            found.append(e.time >= f.since)
        if f.until is not None:
            found.append(e.time < f.until)
        if f.severity:
            found.append(e.severity == f.severity)
        if f.group:
            found.append(e.grp == f.group)
        if f.state == "open":
            found.append(r.outcome.is_(None))
        elif f.state == "closed":
            found.append(r.outcome.is_not(None))
        return found

    def alert_counts(self, sites: Sequence[int], since: float) -> dict[int, dict[str, int]]:
        """Per site, alerts since ``since``: all of them, and those still open."""
        e, r = _events.c, _alert_reviews.c
        joined = _reviewed_alerts()
        query = (
            select(
                e.site_id,
                func.count().label("alerts"),
                func.sum(case((r.outcome.is_(None), 1), else_=0)).label("open"),
            )
            .select_from(joined)
            .where(*self._alert_conditions(AlertFilter(tuple(sites), since=since)))
            .group_by(e.site_id)
        )
        with self.engine.connect() as conn:
            return {
                row.site_id: {"alerts": int(row.alerts), "open": int(row.open or 0)}
                for row in conn.execute(query)
            }

    def alert_breakdown(self, site_id: int, since: float, until: float) -> list[Row]:
        """A site's alerts from ``since`` to before ``until`` by category and severity, with
        how many of each were acknowledged; the most common first."""
        e, r = _events.c, _alert_reviews.c
        alerts = func.count().label("alerts")
        query = (
            select(e.category, e.severity, alerts, func.count(r.outcome).label("acknowledged"))
            .select_from(_reviewed_alerts())
            .where(*self._alert_conditions(AlertFilter((site_id,), since=since, until=until)))
            .group_by(e.category, e.severity)
            .order_by(alerts.desc(), e.category)
        )
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def outcome_counts(self, site_id: int, since: float, until: float) -> dict[str, int]:
        """How the alerts a site raised from ``since`` to before ``until`` were closed."""
        r = _alert_reviews.c
        query = (
            select(r.outcome, func.count())
            .where(r.site_id == site_id, r.time >= since, r.time < until)
            .group_by(r.outcome)
        )
        with self.engine.connect() as conn:
            return {outcome: int(n) for outcome, n in conn.execute(query)}

    # --- devices ------------------------------------------------------------------------------

    def review_device(
        self,
        site_id: int,
        client_ip: str,
        mac: str,
        status: str,
        note: str,
        by: str,
        now: float | None = None,
    ) -> Row:
        """Approve a device or mark it known (again, if it was reviewed before)."""
        if status not in DEVICE_STATUSES:
            raise ReviewError(f"status {status!r} is not one of {', '.join(DEVICE_STATUSES)}")
        d, v = _devices.c, _device_reviews.c
        row = {
            "site_id": site_id,
            "client_ip": client_ip,
            "mac": mac,
            "status": status,
            "note": _note(note, needed=False),
            "reviewed": time.time() if now is None else now,
            "reviewed_by": by,
        }
        with self.engine.begin() as conn:
            seen = conn.execute(
                select(literal(1)).where(
                    d.site_id == site_id, d.client_ip == client_ip, d.mac == mac
                )
            ).first()
            if seen is None:
                raise ReviewError("there is no such device at this school")
            changed = conn.execute(
                _device_reviews.update()
                .where(v.site_id == site_id, v.client_ip == client_ip, v.mac == mac)
                .values(**row)
            ).rowcount
            if not changed:
                conn.execute(_device_reviews.insert().values(**row))
        return row

    def devices(
        self, sites: Sequence[int], state: str, limit: int, after: Key | None = None
    ) -> Page:
        """A school's devices, new ones first, then by when they were last seen."""
        d, v = _devices.c, _device_reviews.c
        new = case((v.status.is_(None), 1), else_=0)
        key_columns = (new, d.last_seen, d.site_id, d.client_ip, d.mac)
        joined = _devices.outerjoin(
            _device_reviews,
            and_(v.site_id == d.site_id, v.client_ip == d.client_ip, v.mac == d.mac),
        )
        query = (
            select(
                _devices,
                new.label("new"),
                v.status,
                v.note,
                v.reviewed,
                v.reviewed_by,
            )
            .select_from(joined)
            .where(d.site_id.in_(sites) if sites else false())
            .order_by(*(c.desc() for c in key_columns))
            .limit(limit + 1)
        )
        if state == "new":
            query = query.where(v.status.is_(None))
        elif state in DEVICE_STATUSES:
            query = query.where(v.status == state)
        if after is not None:
            query = query.where(before_key(key_columns, after))
        return read_page(
            self.engine, query, limit, ("new", "last_seen", "site_id", "client_ip", "mac")
        )

    def device_counts(self, sites: Sequence[int]) -> dict[int, dict[str, int]]:
        """Per site: devices in all, and how many are new, approved and known."""
        d, v = _devices.c, _device_reviews.c
        joined = _devices.outerjoin(
            _device_reviews,
            and_(v.site_id == d.site_id, v.client_ip == d.client_ip, v.mac == d.mac),
        )

        def count(condition: ColumnElement[bool]) -> Any:
            return func.sum(case((condition, 1), else_=0))

        query = (
            select(
                d.site_id,
                func.count().label("devices"),
                count(v.status.is_(None)).label("new"),
                count(v.status == "approved").label("approved"),
                count(v.status == "known").label("known"),
            )
            .select_from(joined)
            .where(d.site_id.in_(sites) if sites else false())
            .group_by(d.site_id)
        )
        names = ("devices", "new", "approved", "known")
        with self.engine.connect() as conn:
            return {
                row.site_id: {n: int(getattr(row, n) or 0) for n in names}
                for row in conn.execute(query)
            }
