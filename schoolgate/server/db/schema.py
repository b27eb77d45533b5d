"""The collector's tables, as SQLAlchemy 2 models.

The schema is made and changed only by the Alembic migrations in ``schoolgate/server/
migrations``; these models describe it for queries, and a test checks that the two agree.

``events`` holds every event of every site. Its key is (site, the agent's sequence number,
time): a batch sent twice inserts nothing the second time, and an agent whose log was wiped
and starts numbering again still has its new events kept, since their times differ. On
PostgreSQL the table is partitioned by day on ``time`` (seconds since the epoch, UTC), so
retention drops whole partitions instead of deleting rows; a partitioned table's key must
contain the partition column, which this one does. Its indexes serve the admin searches: by
site and time, by device (address, MAC or the name a safeguarding lead knows it by), by name
(written backwards, so a name and everything below it is one range), by category and by kind.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Constraint names fixed by convention, so that migrations name the same constraint the same
# way on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Site(Base):
    """A school: one agent (or a few) sending under one token."""

    __tablename__ = "sites"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    # SHA-256 of the bearer token: tokens are 256 random bits, so a fast hash is enough to
    # make a stolen database useless for sending as a site.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created: Mapped[float] = mapped_column(Double)
    last_seen: Mapped[float | None] = mapped_column(Double, nullable=True)


class IngestBatch(Base):
    """A batch accepted from a site, by the ``Idempotency-Key`` the agent sent it with."""

    __tablename__ = "ingest_batches"
    __table_args__ = (UniqueConstraint("site_id", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(200))
    received: Mapped[float] = mapped_column(Double, index=True)
    events: Mapped[int] = mapped_column(Integer)
    inserted: Mapped[int] = mapped_column(Integer)


class Event(Base):
    """One event of one site, as the agent recorded it."""

    __tablename__ = "events"
    __table_args__ = (
        PrimaryKeyConstraint("site_id", "seq", "time"),
        Index("ix_events_site_time", "site_id", "time"),
        Index("ix_events_site_client", "site_id", "client_ip", "time"),
        Index("ix_events_site_mac", "site_id", "mac", "time"),
        Index("ix_events_site_hostname", "site_id", "hostname", "time"),  # revision 0002
        # Byte order on PostgreSQL (revision 0002), whatever the database's collation: a
        # name and the names below it are then one range, found with LIKE 'prefix%'.
        Index(
            "ix_events_site_rname",
            "site_id",
            "rname",
            postgresql_ops={"rname": "text_pattern_ops"},
        ),
        # Alerts, one event in a thousand, found without walking the day (revision 0002).
        # Searches by category or kind read ix_events_site_time: the category's events are
        # common, and a category is also matched in ``categories``, which no index serves.
        # Every index costs each event at ingest (docs/performance.md).
        Index(
            "ix_events_site_alerts",
            "site_id",
            "time",
            postgresql_where=text("kind = 'alert'"),
            sqlite_where=text("kind = 'alert'"),
        ),
        {"postgresql_partition_by": "RANGE (time)"},
    )

    # No foreign key to sites: PostgreSQL would check it for every row of every batch, and
    # a site is never deleted while its events are kept.
    site_id: Mapped[int] = mapped_column(Integer)
    seq: Mapped[int] = mapped_column(BigInteger)
    time: Mapped[float] = mapped_column(Double)
    kind: Mapped[str] = mapped_column(String(16))
    client_ip: Mapped[str] = mapped_column(String(64), default="")
    mac: Mapped[str] = mapped_column(String(64), default="")
    hostname: Mapped[str] = mapped_column(String(255), default="")
    grp: Mapped[str] = mapped_column(String(64), default="")
    name: Mapped[str] = mapped_column(String(255), default="")
    rname: Mapped[str] = mapped_column(String(256), default="")
    qtype: Mapped[str] = mapped_column(String(16), default="")
    action: Mapped[str] = mapped_column(String(16), default="")
    category: Mapped[str] = mapped_column(String(64), default="")  # the deciding one
    categories: Mapped[str] = mapped_column(Text, default="")  # ",a,b," as in the agent
    rule: Mapped[str] = mapped_column(Text, default="")
    rcode: Mapped[str] = mapped_column(String(16), default="")
    latency_ms: Mapped[float | None] = mapped_column(Double, nullable=True)
    cache_hit: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    severity: Mapped[str | None] = mapped_column(String(16), nullable=True)
    data: Mapped[str] = mapped_column(Text, default="")  # JSON, "" for none
    received: Mapped[float] = mapped_column(Double)


class EventCount(Base):
    """Events per site, hour, kind, group, category and action, kept up by ingest.

    The admin overview's charts and the daily aggregates read this instead of counting
    ``events``: a day of a large school is hundreds of thousands of rows, a few hundred here.
    Only events actually inserted are counted, so a replayed batch changes nothing.
    """

    __tablename__ = "event_counts"
    __table_args__ = (PrimaryKeyConstraint("site_id", "hour", "kind", "grp", "category", "action"),)

    site_id: Mapped[int] = mapped_column(Integer)
    hour: Mapped[float] = mapped_column(Double)  # the start of the hour, seconds since the epoch
    kind: Mapped[str] = mapped_column(String(16))
    grp: Mapped[str] = mapped_column(String(64))
    category: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(16))
    count: Mapped[int] = mapped_column(BigInteger)


class BlockedName(Base):
    """How often each name was blocked, per site and day (UTC), kept up by ingest."""

    __tablename__ = "blocked_names"
    __table_args__ = (PrimaryKeyConstraint("site_id", "day", "name"),)

    site_id: Mapped[int] = mapped_column(Integer)
    day: Mapped[float] = mapped_column(Double)  # midnight UTC, seconds since the epoch
    name: Mapped[str] = mapped_column(String(255))
    category: Mapped[str] = mapped_column(String(64))  # the deciding category last seen
    count: Mapped[int] = mapped_column(BigInteger)


class CategoryUse(Base):
    """Per day, how often each device looked up names of a watched category (``rollups``'
    ``WATCHED``: generative AI tools), and how many of those were blocked: the evidence a
    school writing its AI policy asks for, without reading a term of events."""

    __tablename__ = "category_use"
    __table_args__ = (PrimaryKeyConstraint("site_id", "day", "category", "client_ip", "mac"),)

    site_id: Mapped[int] = mapped_column(Integer)
    day: Mapped[float] = mapped_column(Double)  # midnight UTC, seconds since the epoch
    category: Mapped[str] = mapped_column(String(64))
    client_ip: Mapped[str] = mapped_column(String(64))
    mac: Mapped[str] = mapped_column(String(64))
    hostname: Mapped[str] = mapped_column(String(255))
    grp: Mapped[str] = mapped_column(String(64))
    last_seen: Mapped[float] = mapped_column(Double)
    queries: Mapped[int] = mapped_column(BigInteger)
    blocked: Mapped[int] = mapped_column(BigInteger)


class Device(Base):
    """Each device a site's events named, by address and MAC, kept up by ingest."""

    __tablename__ = "devices"
    # Every batch updates most of its school's devices. With no index on a column an update
    # changes, and room on each page (PostgreSQL: fillfactor 50, revision 0002), the new row
    # goes beside the old one and no index is touched; a school's devices, a thousand or so,
    # are sorted by last_seen in no time.
    __table_args__ = (PrimaryKeyConstraint("site_id", "client_ip", "mac"),)

    site_id: Mapped[int] = mapped_column(Integer)
    client_ip: Mapped[str] = mapped_column(String(64))
    mac: Mapped[str] = mapped_column(String(64))
    hostname: Mapped[str] = mapped_column(String(255))
    grp: Mapped[str] = mapped_column(String(64))
    first_seen: Mapped[float] = mapped_column(Double)
    last_seen: Mapped[float] = mapped_column(Double)
    events: Mapped[int] = mapped_column(BigInteger)


class PolicyRevision(Base):
    """One saved version of a policy document: the district's base (no site) or a school's.

    Append-only: the newest revision of a scope is the one in force, and the rest are the
    record of who changed what, when and why.
    """

    __tablename__ = "policy_revisions"
    __table_args__ = (Index("ix_policy_revisions_site_id_id", "site_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site_id: Mapped[int | None] = mapped_column(
        ForeignKey("sites.id", ondelete="CASCADE"), nullable=True
    )
    text: Mapped[str] = mapped_column(Text)  # TOML, as written
    created: Mapped[float] = mapped_column(Double)
    author: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)


class CentralException(Base):
    """A time-limited exception granted at the collector, sent to the site's agent."""

    __tablename__ = "central_exceptions"
    __table_args__ = (Index("ix_central_exceptions_site_id_expires", "site_id", "expires"),)

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(253))
    grp: Mapped[str] = mapped_column(String(64))
    # "" for the whole group, else the one device of it: a MAC address, or an IP address.
    device: Mapped[str] = mapped_column(String(64), server_default="")
    action: Mapped[str] = mapped_column(String(8))  # allow or block
    created: Mapped[float] = mapped_column(Double)
    expires: Mapped[float] = mapped_column(Double)
    reason: Mapped[str] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    revoked: Mapped[float | None] = mapped_column(Double, nullable=True)
    revoked_by: Mapped[str | None] = mapped_column(String(64), nullable=True)


class UnblockRequest(Base):
    """An unblock request a pupil sent from a school's block page, and what became of it."""

    __tablename__ = "unblock_requests"
    __table_args__ = (
        PrimaryKeyConstraint("site_id", "id"),
        Index("ix_unblock_requests_site_status_created", "site_id", "status", "created"),
    )

    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    id: Mapped[str] = mapped_column(String(32))  # the agent's
    created: Mapped[float] = mapped_column(Double)
    received: Mapped[float] = mapped_column(Double)
    client_ip: Mapped[str] = mapped_column(String(64))
    mac: Mapped[str] = mapped_column(String(64))
    hostname: Mapped[str] = mapped_column(String(255))
    grp: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(253))
    category: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    language: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16))  # pending, approved, refused
    decided: Mapped[float | None] = mapped_column(Double, nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    exception_id: Mapped[str | None] = mapped_column(String(16), nullable=True)


class User(Base):
    """A person who signs in to the collector: a role, and the sites they may see."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))  # argon2id, in its own format
    role: Mapped[str] = mapped_column(String(32))
    created: Mapped[float] = mapped_column(Double)
    disabled: Mapped[bool] = mapped_column(Boolean)
    last_login: Mapped[float | None] = mapped_column(Double, nullable=True)


class UserSite(Base):
    """A site a user belongs to (admins see every site without rows here)."""

    __tablename__ = "user_sites"
    __table_args__ = (PrimaryKeyConstraint("user_id", "site_id"),)

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))


class Credential(Base):
    """A user's session or API token, by the SHA-256 of the token (never the token)."""

    __tablename__ = "credentials"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(8))  # session or api
    label: Mapped[str] = mapped_column(String(64))
    created: Mapped[float] = mapped_column(Double)
    expires: Mapped[float | None] = mapped_column(Double, nullable=True)
    last_used: Mapped[float | None] = mapped_column(Double, nullable=True)


class AuditEntry(Base):
    """Who searched, exported or changed what, and when: written before the answer goes."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    time: Mapped[float] = mapped_column(Double, index=True)
    user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    user_name: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    sites: Mapped[str] = mapped_column(Text)  # ",1,4," the sites the request covered
    detail: Mapped[str] = mapped_column(Text)  # JSON: the filters, the count returned


class AlertReview(Base):
    """What a school did about an alert: its outcome and note, who recorded it and when.

    The alert's name, category and severity are copied in, so the record outlives the event
    (retention drops events by the day; the annual review counts outcomes).
    """

    __tablename__ = "alert_reviews"
    __table_args__ = (
        PrimaryKeyConstraint("site_id", "seq", "time"),
        Index("ix_alert_reviews_site_id_reviewed", "site_id", "reviewed"),
    )

    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(BigInteger)
    time: Mapped[float] = mapped_column(Double)
    name: Mapped[str] = mapped_column(String(255))
    category: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str] = mapped_column(String(32))
    note: Mapped[str] = mapped_column(Text)
    reviewed: Mapped[float] = mapped_column(Double)
    reviewed_by: Mapped[str] = mapped_column(String(64))


class DeviceReview(Base):
    """A device a school approved or marked as known, by the key of ``devices``.

    A table of its own: ingest rewrites a ``devices`` row with every batch, and a review must
    neither be lost to that nor slow it.
    """

    __tablename__ = "device_reviews"
    __table_args__ = (PrimaryKeyConstraint("site_id", "client_ip", "mac"),)

    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    client_ip: Mapped[str] = mapped_column(String(64))
    mac: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # approved or known
    note: Mapped[str] = mapped_column(Text)
    reviewed: Mapped[float] = mapped_column(Double)
    reviewed_by: Mapped[str] = mapped_column(String(64))


class AgentStatus(Base):
    """The latest a site's agent said about itself, from its ``status`` events: ``heartbeat``
    fills the first columns, ``policy-test`` the last two. Each is only taken when newer than
    what is held, since a spool that was offline ships its events late."""

    __tablename__ = "agent_status"

    site_id: Mapped[int] = mapped_column(
        ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True
    )
    reported: Mapped[float] = mapped_column(Double)  # the newest heartbeat's time (agent clock)
    version: Mapped[str] = mapped_column(String(64))
    started: Mapped[float | None] = mapped_column(Double, nullable=True)
    every: Mapped[float | None] = mapped_column(Double, nullable=True)  # seconds between beats
    lists_updated: Mapped[float | None] = mapped_column(Double, nullable=True)
    lists_oldest: Mapped[float | None] = mapped_column(Double, nullable=True)
    dropped: Mapped[int] = mapped_column(BigInteger)  # events dropped since the agent started
    waiting: Mapped[int] = mapped_column(BigInteger)  # events in its spool, not yet shipped
    data: Mapped[str] = mapped_column(Text)  # the heartbeat's data as sent, JSON
    tested: Mapped[float | None] = mapped_column(Double, nullable=True)
    policy_test: Mapped[str] = mapped_column(Text)  # the latest policy test's data, JSON or ""


class NotifyCursor(Base):
    """How far the notifier has got, by name: ``intake``, alerts that arrived (``received``)
    after this are looked at (the newest taken in, less a margin for batches that commit
    late); ``digest``, when the last daily digest was made."""

    __tablename__ = "notify_cursors"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    position: Mapped[float] = mapped_column(Double)


class NotifyMessage(Base):
    """One message to one school's recipients on one channel, and what became of it: kept
    until delivered (retried with a capped backoff), then as the record of what was sent."""

    __tablename__ = "notify_messages"
    __table_args__ = (
        # The daily cap counts a school's immediate messages of the day.
        Index(
            "ix_notify_messages_site_id_channel_kind_created",
            "site_id",
            "channel",
            "kind",
            "created",
        ),
        Index("ix_notify_messages_next_attempt", "next_attempt"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(16))  # email or webhook
    kind: Mapped[str] = mapped_column(String(16))  # immediate or digest
    created: Mapped[float] = mapped_column(Double)
    alerts: Mapped[int] = mapped_column(Integer)  # the alerts it lists
    held: Mapped[int] = mapped_column(Integer)  # of those, kept from immediate by the cap
    acknowledged: Mapped[int] = mapped_column(Integer)  # left out: acknowledged already
    last_immediate: Mapped[bool] = mapped_column(Boolean)  # the cap's last of the day
    outcome: Mapped[str] = mapped_column(String(16))  # pending, sent, retrying, cancelled
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt: Mapped[float | None] = mapped_column(Double, nullable=True)  # None: done
    sent: Mapped[float | None] = mapped_column(Double, nullable=True)
    recipients: Mapped[str] = mapped_column(Text)  # the addresses, or the webhook's host
    error: Mapped[str] = mapped_column(Text)  # the last attempt's, "" for none


class NotifyAlert(Base):
    """Each alert the notifier took in, once per channel: the key makes sending one alert
    twice on a channel impossible. ``state``: ``waiting`` for the digest, ``queued`` in
    ``message_id``, or ``acknowledged`` (dealt with before a digest listed it)."""

    __tablename__ = "notify_alerts"
    __table_args__ = (
        PrimaryKeyConstraint("site_id", "seq", "time", "channel"),
        Index("ix_notify_alerts_message_id", "message_id"),
        Index("ix_notify_alerts_state_channel_site_id", "state", "channel", "site_id"),
    )

    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(BigInteger)
    time: Mapped[float] = mapped_column(Double)
    channel: Mapped[str] = mapped_column(String(16))
    severity: Mapped[str] = mapped_column(String(16))
    taken: Mapped[float] = mapped_column(Double)
    held: Mapped[bool] = mapped_column(Boolean)  # sent in the digest because of the cap
    state: Mapped[str] = mapped_column(String(16))
    message_id: Mapped[int | None] = mapped_column(
        ForeignKey("notify_messages.id", ondelete="CASCADE"), nullable=True
    )


# The alerts by arrival (revision 0005), for the notifier: an agent that was offline ships its
# alerts days late, so their own times say nothing about which are new. Partial, like
# ix_events_site_alerts: ingest pays for it on one event in a thousand.
Index(
    "ix_events_alerts_received",
    Event.received,
    postgresql_where=text("kind = 'alert'"),
    sqlite_where=text("kind = 'alert'"),
)


metadata = Base.metadata
