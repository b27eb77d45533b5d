"""What the school did: alerts acknowledged with an outcome, devices approved or marked known.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The alert's name, category and severity are copied in: the record of what was done
    # outlives the event, which retention drops with its day.
    op.create_table(
        "alert_reviews",
        sa.Column("site_id", sa.Integer, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("time", sa.Double, nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("reviewed", sa.Double, nullable=False),
        sa.Column("reviewed_by", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("site_id", "seq", "time", name="pk_alert_reviews"),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name="fk_alert_reviews_site_id_sites", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_alert_reviews_site_id_reviewed", "alert_reviews", ["site_id", "reviewed"])
    # Beside devices rather than in it: ingest rewrites a devices row with every batch, and a
    # review must never be lost to, or slow, that.
    op.create_table(
        "device_reviews",
        sa.Column("site_id", sa.Integer, nullable=False),
        sa.Column("client_ip", sa.String(64), nullable=False),
        sa.Column("mac", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("reviewed", sa.Double, nullable=False),
        sa.Column("reviewed_by", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("site_id", "client_ip", "mac", name="pk_device_reviews"),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name="fk_device_reviews_site_id_sites", ondelete="CASCADE"
        ),
    )


def downgrade() -> None:
    op.drop_table("device_reviews")
    op.drop_table("alert_reviews")
