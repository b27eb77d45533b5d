"""What each school's agent last said about itself: its version, since when it runs, how
fresh its lists are, what it had to drop, and its latest ``policy test``; and, per day, each
device's use of a watched category (generative AI tools).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # One row per site, rewritten by each heartbeat: the heartbeats themselves stay in events
    # (and in event_counts, which the uptime indicator counts), this is only the latest word.
    op.create_table(
        "agent_status",
        sa.Column("site_id", sa.Integer, nullable=False),
        sa.Column("reported", sa.Double, nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("started", sa.Double, nullable=True),
        sa.Column("every", sa.Double, nullable=True),
        sa.Column("lists_updated", sa.Double, nullable=True),
        sa.Column("lists_oldest", sa.Double, nullable=True),
        sa.Column("dropped", sa.BigInteger, nullable=False),
        sa.Column("waiting", sa.BigInteger, nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("tested", sa.Double, nullable=True),
        sa.Column("policy_test", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("site_id", name="pk_agent_status"),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name="fk_agent_status_site_id_sites", ondelete="CASCADE"
        ),
    )

    op.create_table(
        "category_use",
        sa.Column("site_id", sa.Integer, nullable=False),
        sa.Column("day", sa.Double, nullable=False),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("client_ip", sa.String(64), nullable=False),
        sa.Column("mac", sa.String(64), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("grp", sa.String(64), nullable=False),
        sa.Column("last_seen", sa.Double, nullable=False),
        sa.Column("queries", sa.BigInteger, nullable=False),
        sa.Column("blocked", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint(
            "site_id", "day", "category", "client_ip", "mac", name="pk_category_use"
        ),
    )


def downgrade() -> None:
    op.drop_table("category_use")
    op.drop_table("agent_status")
