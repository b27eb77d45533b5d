"""The upload queue: which events of the local store still have to reach the collector.

The local store is the spool: nothing is copied. A watermark, ``sent_through``, says that
every event up to that sequence number has been shipped (or given up on); the next batch is
the events after it, oldest first, at most ``max_events`` of them and ``max_bytes`` of NDJSON.
Alerts go first: the writer lists each alert's number in ``upload_alerts`` as it stores it, and
while any is unsent a batch is made of alerts only. They are marked sent and skipped when the
watermark's batch reaches them.

A batch is named by its ``Idempotency-Key``: the site, this store's identity (made with the
store; a reinstalled agent starts a new one), whether it is alerts, and its first and last
numbers and size. The collector keeps each event once whatever the key, so a batch re-formed
after a restart, bigger or smaller, still counts nothing twice.

The spool is bounded: events older than ``max_age`` or beyond the newest ``max_events`` are
given up on when a batch is made, and events the retention job deleted before they were sent
are found as a gap. ``Dropped`` says how many, and why, so that the agent can report it.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Connection, delete, func, insert, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from schoolgate.agent.activity.store import (
    ActivityStore,
    _events,
    _upload_alerts,
    _upload_quarantine,
    _upload_state,
    stored_event,
)
from schoolgate.event_batch import compress, ndjson, shipped


@dataclass(frozen=True)
class Batch:
    key: str
    body: bytes  # gzipped NDJSON
    seqs: tuple[int, ...]
    alerts: bool
    raw_bytes: int

    @property
    def events(self) -> int:
        return len(self.seqs)


@dataclass(frozen=True)
class Dropped:
    """Events given up on before they were sent, by why."""

    too_old: int = 0
    too_many: int = 0
    pruned: int = 0

    @property
    def total(self) -> int:
        return self.too_old + self.too_many + self.pruned


@dataclass(frozen=True)
class SpoolLimits:
    max_events: int = 5_000_000
    max_age: float = 7 * 86_400.0


class Spool:
    def __init__(self, store: ActivityStore, site: str) -> None:
        self.store = store
        self.site = site

    def next_batch(self, max_events: int, max_bytes: int) -> Batch | None:
        """The next batch to send, None when everything is sent."""
        with self.store.connection() as conn:
            store_id, sent_through = _state(conn)
            t, a = _events, _upload_alerts
            alerts = conn.execute(
                select(t)
                .join(a, a.c.seq == t.c.seq)
                .where(a.c.sent.is_(False), t.c.seq > sent_through)
                .order_by(t.c.seq)
                .limit(max_events)
            ).all()
            rows = (
                alerts
                or conn.execute(
                    select(t).where(*_unsent(sent_through)).order_by(t.c.seq).limit(max_events)
                ).all()
            )
        if not rows:
            return None
        lines: list[bytes] = []
        seqs: list[int] = []
        size = 0
        for row in rows:
            line = ndjson([shipped(stored_event(row))])
            if lines and size + len(line) > max_bytes:
                break
            lines.append(line)
            seqs.append(row.seq)
            size += len(line)
        kind = "a" if alerts else "e"
        raw = b"".join(lines)
        # The content's hash too: numbers can come round again with the same store (a power
        # cut undoing the last commits, a restored backup), and a key the collector has seen
        # is answered "already recorded" without a look at the events.
        digest = hashlib.blake2b(raw, digest_size=8).hexdigest()
        key = f"{self.site}:{store_id}:{kind}:{seqs[0]}-{seqs[-1]}:{len(seqs)}:{digest}"
        body = compress(raw)
        return Batch(key, body, tuple(seqs), bool(alerts), size)

    def sent(self, batch: Batch) -> None:
        """The collector has the batch: move past it."""
        with self.store.connection() as conn:
            self._move_past(conn, batch)

    def quarantine(self, batch: Batch, reason: str) -> None:
        """The collector refused the batch for good: record it, and move past it."""
        with self.store.connection() as conn:
            conn.execute(
                insert(_upload_quarantine).values(
                    time=time.time(),
                    first_seq=batch.seqs[0],
                    last_seq=batch.seqs[-1],
                    events=batch.events,
                    reason=reason[:2000],
                )
            )
            self._move_past(conn, batch)

    def _move_past(self, conn: Connection, batch: Batch) -> None:
        a = _upload_alerts
        if batch.alerts:
            conn.execute(update(a).where(a.c.seq.in_(batch.seqs)).values(sent=True))
            return
        last = batch.seqs[-1]
        conn.execute(update(_upload_state).values(sent_through=last))
        conn.execute(delete(a).where(a.c.seq <= last))

    def enforce(self, limits: SpoolLimits, now: float | None = None) -> Dropped:
        """Give up on what is over the limits (and find what retention deleted unsent)."""
        now = time.time() if now is None else now
        t = _events
        with self.store.connection() as conn:
            _store_id, sent_through = _state(conn)
            first, last = conn.execute(
                select(func.min(t.c.seq), func.max(t.c.seq)).where(t.c.seq > sent_through)
            ).one()
            if first is None:
                return Dropped(pruned=self._pruned())
            mark = first - 1
            fresh = conn.execute(
                select(func.min(t.c.seq)).where(t.c.seq > mark, t.c.time >= now - limits.max_age)
            ).scalar_one()
            old_end = (fresh - 1) if fresh is not None else last
            too_old = _count(conn, mark, old_end)
            mark = max(mark, old_end)
            too_many = 0
            if last - mark > limits.max_events:
                cut = last - limits.max_events
                too_many = _count(conn, mark, cut)
                mark = cut
            if mark > sent_through:
                conn.execute(update(_upload_state).values(sent_through=mark))
                conn.execute(delete(_upload_alerts).where(_upload_alerts.c.seq <= mark))
        return Dropped(too_old=too_old, too_many=too_many, pruned=self._pruned())

    def _pruned(self) -> int:
        # Counted by retention as it deleted them (``ActivityStore.prune``).
        return self.store.take_pruned()

    def waiting(self) -> tuple[int, float | None]:
        """Events not yet sent, and the time of the oldest of them."""
        t = _events
        with self.store.connection() as conn:
            _store_id, sent_through = _state(conn)
            count, oldest = conn.execute(
                select(func.count(), func.min(t.c.time)).where(*_unsent(sent_through))
            ).one()
        return int(count), oldest

    def quarantined(self) -> list[tuple[float, int, int, int, str]]:
        q = _upload_quarantine
        with self.store.connection() as conn:
            rows = conn.execute(
                select(q.c.time, q.c.first_seq, q.c.last_seq, q.c.events, q.c.reason).order_by(
                    q.c.id
                )
            ).all()
        return [tuple(row) for row in rows]


def _unsent(after: int) -> list[ColumnElement[bool]]:
    """Events after the watermark, less the alerts already shipped ahead of it."""
    t, a = _events, _upload_alerts
    return [t.c.seq > after, t.c.seq.not_in(select(a.c.seq).where(a.c.sent.is_(True)))]


def _count(conn: Connection, after: int, through: int) -> int:
    if through <= after:
        return 0
    t = _events
    return int(
        conn.execute(select(func.count()).where(*_unsent(after), t.c.seq <= through)).scalar_one()
    )


def _state(conn: Connection) -> tuple[str, int]:
    query = select(_upload_state.c.store_id, _upload_state.c.sent_through)
    row = conn.execute(query).first()
    if row is None:
        # Two callers may find no row at once (the uploader and the heartbeat counting what
        # waits, at start): the second one's insert gives way, and both read the one row.
        conn.execute(
            sqlite_insert(_upload_state)
            .values(id=1, store_id=uuid.uuid4().hex, sent_through=0)
            .on_conflict_do_nothing(index_elements=["id"])
        )
        row = conn.execute(query).one()
    return str(row.store_id), int(row.sent_through)
