"""The collector's tables, as SQLAlchemy 2 models.

The schema is made and changed only by the Alembic migrations in ``schoolgate/server/
migrations``; these models describe it for queries, and a test checks that the two agree.

``events`` holds every event of every site. Its key is (site, the agent's sequence number,
time): a batch sent twice inserts nothing the second time, and an agent whose log was wiped
and starts numbering again still has its new events kept, since their times differ. On
PostgreSQL the table is partitioned by day on ``time`` (seconds since the epoch, UTC), so
retention drops whole partitions instead of deleting rows; a partitioned table's key must
contain the partition column, which this one does. Its indexes serve the admin searches: by
site and time, by device, by name (written backwards, so a name and everything below it is
one range), by category and by kind.
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
        Index("ix_events_site_rname", "site_id", "rname"),
        Index("ix_events_site_category", "site_id", "category", "time"),
        Index("ix_events_site_kind", "site_id", "kind", "time"),
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


metadata = Base.metadata
