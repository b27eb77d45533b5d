"""Sites, the batches they sent, and their events (partitioned by day on PostgreSQL).

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sites",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created", sa.Double, nullable=False),
        sa.Column("last_seen", sa.Double, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_sites"),
        sa.UniqueConstraint("name", name="uq_sites_name"),
        sa.UniqueConstraint("token_hash", name="uq_sites_token_hash"),
    )
    op.create_table(
        "ingest_batches",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("site_id", sa.Integer, nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("received", sa.Double, nullable=False),
        sa.Column("events", sa.Integer, nullable=False),
        sa.Column("inserted", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ingest_batches"),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name="fk_ingest_batches_site_id_sites", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("site_id", "key", name="uq_ingest_batches_site_id_key"),
    )
    op.create_index("ix_ingest_batches_received", "ingest_batches", ["received"])
    op.create_table(
        "events",
        sa.Column("site_id", sa.Integer, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("time", sa.Double, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("client_ip", sa.String(64), nullable=False),
        sa.Column("mac", sa.String(64), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("grp", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("rname", sa.String(256), nullable=False),
        sa.Column("qtype", sa.String(16), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("categories", sa.Text, nullable=False),
        sa.Column("rule", sa.Text, nullable=False),
        sa.Column("rcode", sa.String(16), nullable=False),
        sa.Column("latency_ms", sa.Double, nullable=True),
        sa.Column("cache_hit", sa.Boolean, nullable=True),
        sa.Column("severity", sa.String(16), nullable=True),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("received", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("site_id", "seq", "time", name="pk_events"),
        postgresql_partition_by="RANGE (time)",
    )
    for name, columns in (
        ("ix_events_site_time", ["site_id", "time"]),
        ("ix_events_site_client", ["site_id", "client_ip", "time"]),
        ("ix_events_site_mac", ["site_id", "mac", "time"]),
        ("ix_events_site_rname", ["site_id", "rname"]),
        ("ix_events_site_category", ["site_id", "category", "time"]),
        ("ix_events_site_kind", ["site_id", "kind", "time"]),
    ):
        op.create_index(name, "events", columns)


def downgrade() -> None:
    op.drop_table("events")
    op.drop_table("ingest_batches")
    op.drop_table("sites")
