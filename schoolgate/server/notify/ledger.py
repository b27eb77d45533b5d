"""The notifier's state in the database: what it has read, each alert it took in, each message.

An alert is taken in once per channel, as a row of ``notify_alerts`` whose key is the
alert's and the channel's: sending an alert twice on a channel would take a second row, which
the key refuses. A message is a row of ``notify_messages`` from the moment it is decided
until it is delivered; a failed delivery leaves it there, due again after a backoff, so an
alert is never lost to a mail server that is down. The intake cursor and the rows it led to
are written in one transaction, so a crash can neither skip alerts nor take them twice.

Every function works on a connection the caller holds, inside the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import msgspec
from sqlalchemy import (
    Connection,
    Table,
    and_,
    delete,
    exists,
    func,
    insert,
    literal,
    select,
    update,
)

from schoolgate.agent.activity.events import EventKind
from schoolgate.server.db.schema import (
    AlertReview,
    Event,
    NotifyAlert,
    NotifyCursor,
    NotifyMessage,
    Site,
)
from schoolgate.server.notify.compose import SEVERITY_RANK, Alert

_events = cast(Table, Event.__table__)
_reviews = cast(Table, AlertReview.__table__)
_cursors = cast(Table, NotifyCursor.__table__)
_messages = cast(Table, NotifyMessage.__table__)
_alerts = cast(Table, NotifyAlert.__table__)
_sites = cast(Table, Site.__table__)

INTAKE: Final = "intake"
DIGEST_MADE: Final = "digest"

WAITING: Final = "waiting"
QUEUED: Final = "queued"
ACKNOWLEDGED: Final = "acknowledged"

PENDING: Final = "pending"
SENT: Final = "sent"
RETRYING: Final = "retrying"
CANCELLED: Final = "cancelled"

_MAX_ERROR: Final = 1_000
_data = msgspec.json.Decoder(dict[str, Any])


@dataclass(frozen=True)
class NewAlert:
    site_id: int
    seq: int
    time: float
    severity: str
    received: float


@dataclass(frozen=True)
class Waiting:
    site_id: int
    seq: int
    time: float
    held: bool
    acknowledged: bool


@dataclass(frozen=True)
class Message:
    id: int
    site_id: int
    channel: str
    kind: str
    held: int
    acknowledged: int
    last_immediate: bool
    attempts: int
    next_attempt: float


def site_names(conn: Connection) -> dict[int, str]:
    return {row.id: row.name for row in conn.execute(select(_sites.c.id, _sites.c.name))}


def read_cursor(conn: Connection, name: str) -> float | None:
    c = _cursors.c
    return cast(
        "float | None", conn.execute(select(c.position).where(c.name == name)).scalar_one_or_none()
    )


def lock_cursor(conn: Connection, name: str) -> float | None:
    """The cursor's position, its row locked until the transaction ends, so that two
    collectors on one database never take in or make the same thing at once."""
    c = _cursors.c
    conn.execute(update(_cursors).where(c.name == name).values(position=c.position))
    return read_cursor(conn, name)


def move_cursor(conn: Connection, name: str, position: float) -> None:
    c = _cursors.c
    moved = conn.execute(update(_cursors).where(c.name == name).values(position=position))
    if not moved.rowcount:
        conn.execute(insert(_cursors).values(name=name, position=position))


def new_alerts(conn: Connection, after: float, limit: int) -> list[NewAlert]:
    """Alerts that arrived after ``after``, oldest arrival first, that are neither taken in
    already nor acknowledged."""
    e, n, r = _events.c, _alerts.c, _reviews.c
    query = (
        select(e.site_id, e.seq, e.time, e.severity, e.received)
        .where(
            # A literal, so that the partial index on arrival serves.
            e.kind == literal(EventKind.ALERT.value, literal_execute=True),
            e.received > after,
            ~exists().where(n.site_id == e.site_id, n.seq == e.seq, n.time == e.time),
            ~exists().where(r.site_id == e.site_id, r.seq == e.seq, r.time == e.time),
        )
        .order_by(e.received, e.site_id, e.seq)
        .limit(limit)
    )
    return [
        NewAlert(
            row.site_id,
            row.seq,
            row.time,
            # An alert without a severity this version knows is taken as seriously as an
            # alert of a category the agent's taxonomy lacks: high.
            row.severity if row.severity in SEVERITY_RANK else "high",
            row.received,
        )
        for row in conn.execute(query)
    ]


def immediate_since(conn: Connection, site_id: int, channel: str, since: float) -> int:
    """How many immediate messages a school was sent (or is due) on a channel since then."""
    m = _messages.c
    query = select(func.count()).where(
        m.site_id == site_id, m.channel == channel, m.kind == "immediate", m.created >= since
    )
    return int(conn.execute(query).scalar_one())


def add_message(
    conn: Connection,
    *,
    site_id: int,
    channel: str,
    kind: str,
    now: float,
    alerts: int,
    held: int = 0,
    acknowledged: int = 0,
    last_immediate: bool = False,
) -> int:
    """A new message, due at once; its id."""
    inserted = conn.execute(
        insert(_messages).values(
            site_id=site_id,
            channel=channel,
            kind=kind,
            created=now,
            alerts=alerts,
            held=held,
            acknowledged=acknowledged,
            last_immediate=last_immediate,
            outcome=PENDING,
            attempts=0,
            next_attempt=now,
            sent=None,
            recipients="",
            error="",
        )
    )
    key = inserted.inserted_primary_key
    assert key is not None
    return int(key[0])


def add_alerts(
    conn: Connection,
    alerts: Iterable[NewAlert],
    *,
    channel: str,
    now: float,
    state: str,
    held: bool = False,
    message_id: int | None = None,
) -> None:
    rows = [
        {
            "site_id": a.site_id,
            "seq": a.seq,
            "time": a.time,
            "channel": channel,
            "severity": a.severity,
            "taken": now,
            "held": held,
            "state": state,
            "message_id": message_id,
        }
        for a in alerts
    ]
    if rows:
        conn.execute(insert(_alerts), rows)


def waiting(conn: Connection, channel: str) -> dict[int, list[Waiting]]:
    """Per school, the alerts waiting for the digest on a channel, each with whether it has
    been acknowledged since it was taken in."""
    n, r = _alerts.c, _reviews.c
    acknowledged = exists().where(r.site_id == n.site_id, r.seq == n.seq, r.time == n.time)
    query = (
        select(n.site_id, n.seq, n.time, n.held, acknowledged.label("acknowledged"))
        .where(n.state == WAITING, n.channel == channel)
        .order_by(n.site_id, n.time, n.seq)
    )
    found: dict[int, list[Waiting]] = {}
    for row in conn.execute(query):
        found.setdefault(row.site_id, []).append(
            Waiting(row.site_id, row.seq, row.time, bool(row.held), bool(row.acknowledged))
        )
    return found


def settle(
    conn: Connection,
    rows: Sequence[Waiting],
    *,
    channel: str,
    state: str,
    message_id: int | None,
) -> None:
    """Move waiting alerts to ``state``, in ``message_id``."""
    n = _alerts.c
    for row in rows:
        conn.execute(
            update(_alerts)
            .where(
                n.site_id == row.site_id,
                n.seq == row.seq,
                n.time == row.time,
                n.channel == channel,
            )
            .values(state=state, message_id=message_id)
        )


def due(conn: Connection, now: float, channels: Sequence[str], limit: int) -> list[Message]:
    """Messages whose delivery is due on the channels given, the longest waiting first."""
    m = _messages.c
    query = (
        select(
            m.id,
            m.site_id,
            m.channel,
            m.kind,
            m.held,
            m.acknowledged,
            m.last_immediate,
            m.attempts,
            m.next_attempt,
        )
        .where(m.next_attempt <= now, m.channel.in_(channels))
        .order_by(m.next_attempt, m.id)
        .limit(limit)
    )
    return [
        Message(
            row.id,
            row.site_id,
            row.channel,
            row.kind,
            row.held,
            row.acknowledged,
            bool(row.last_immediate),
            row.attempts,
            row.next_attempt,
        )
        for row in conn.execute(query)
    ]


def claim(conn: Connection, message: Message, until: float) -> bool:
    """Take a due message for delivery until ``until``; False when another run took it
    first (another collector on the same database)."""
    m = _messages.c
    taken = conn.execute(
        update(_messages)
        .where(m.id == message.id, m.next_attempt == message.next_attempt)
        .values(next_attempt=until)
    )
    return bool(taken.rowcount)


def message_alerts(conn: Connection, message_id: int) -> list[Alert]:
    """The alerts a message carries, as the events have them (gone: past retention)."""
    e, n = _events.c, _alerts.c
    joined = _alerts.join(_events, and_(e.site_id == n.site_id, e.seq == n.seq, e.time == n.time))
    query = (
        select(
            n.seq,
            n.time,
            n.severity,
            e.category,
            e.client_ip,
            e.mac,
            e.hostname,
            e.grp,
            e.name,
            e.qtype,
            e.action,
            e.rule,
            e.data,
        )
        .select_from(joined)
        .where(n.message_id == message_id, n.state == QUEUED)
    )
    return [
        Alert(
            seq=row.seq,
            time=row.time,
            severity=row.severity,
            category=row.category,
            client_ip=row.client_ip,
            mac=row.mac,
            hostname=row.hostname,
            group=row.grp,
            name=row.name,
            qtype=row.qtype,
            action=row.action,
            rule=row.rule,
            data=_decoded(row.data),
        )
        for row in conn.execute(query)
    ]


def _decoded(text: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        return _data.decode(text)
    except msgspec.DecodeError:
        return {}


def delivered(
    conn: Connection, message: Message, now: float, recipients: str, error: str = ""
) -> None:
    """The message went; ``error`` notes a partial refusal (some addresses refused)."""
    _finish(conn, message, SENT, sent=now, recipients=recipients, error=error)


def cancelled(conn: Connection, message: Message, why: str) -> None:
    """The message will never go (no recipients for its school any more, its alerts gone)."""
    _finish(conn, message, CANCELLED, sent=None, recipients="", error=why)


def _finish(
    conn: Connection,
    message: Message,
    outcome: str,
    *,
    sent: float | None,
    recipients: str,
    error: str,
) -> None:
    conn.execute(
        update(_messages)
        .where(_messages.c.id == message.id)
        .values(
            outcome=outcome,
            attempts=message.attempts + (sent is not None),
            next_attempt=None,
            sent=sent,
            recipients=recipients,
            error=error[:_MAX_ERROR],
        )
    )


def failed(
    conn: Connection, message: Message, error: str, next_attempt: float, recipients: str
) -> None:
    conn.execute(
        update(_messages)
        .where(_messages.c.id == message.id)
        .values(
            outcome=RETRYING,
            attempts=message.attempts + 1,
            next_attempt=next_attempt,
            recipients=recipients,
            error=error[:_MAX_ERROR],
        )
    )


def pending(conn: Connection) -> dict[str, int]:
    """Messages not yet delivered, per channel."""
    m = _messages.c
    query = (
        select(m.channel, func.count().label("n"))
        .where(m.next_attempt.is_not(None))
        .group_by(m.channel)
    )
    return {row.channel: int(row.n) for row in conn.execute(query)}


def prune(conn: Connection, before: float) -> int:
    """Forget what is older than retention: alerts taken in, and messages done with."""
    n, m = _alerts.c, _messages.c
    done = select(m.id).where(m.created < before, m.next_attempt.is_(None))
    conn.execute(delete(_alerts).where(n.message_id.in_(done)))
    gone = conn.execute(delete(_alerts).where(n.time < before, n.state != QUEUED)).rowcount
    conn.execute(delete(_messages).where(m.created < before, m.next_attempt.is_(None)))
    return int(gone or 0)


@dataclass(frozen=True)
class Sent:
    """A message as ``notify log`` lists it."""

    id: int
    site: str
    channel: str
    kind: str
    created: float
    alerts: int
    outcome: str
    attempts: int
    sent: float | None
    next_attempt: float | None
    recipients: str
    error: str


def recent(conn: Connection, limit: int, site_id: int | None = None) -> list[Sent]:
    """The newest messages, newest first."""
    m, s = _messages.c, _sites.c
    query = (
        select(_messages, s.name.label("site"))
        .select_from(_messages.join(_sites, s.id == m.site_id))
        .order_by(m.created.desc(), m.id.desc())
        .limit(limit)
    )
    if site_id is not None:
        query = query.where(m.site_id == site_id)
    return [
        Sent(
            row.id,
            row.site,
            row.channel,
            row.kind,
            row.created,
            row.alerts,
            row.outcome,
            row.attempts,
            row.sent,
            row.next_attempt,
            row.recipients,
            row.error,
        )
        for row in conn.execute(query)
    ]
