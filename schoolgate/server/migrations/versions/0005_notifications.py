"""Alert notifications: how far the notifier has read, each message and its delivery, and
each alert taken in per channel; the alerts indexed by arrival.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _site_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["site_id"], ["sites.id"], name=f"fk_{table}_site_id_sites", ondelete="CASCADE"
    )


def upgrade() -> None:
    # New alerts are those that arrived since the notifier last looked: an agent that was
    # offline ships its alerts days late, so the alerts' own times cannot say. Partial, so
    # ingest pays for it on alerts only, one event in a thousand.
    op.create_index(
        "ix_events_alerts_received",
        "events",
        ["received"],
        postgresql_where=sa.text("kind = 'alert'"),
        sqlite_where=sa.text("kind = 'alert'"),
    )
    op.create_table(
        "notify_cursors",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("position", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_notify_cursors"),
    )
    # A message stays here until delivered, then as the record of what went to whom; the
    # school's immediate messages of the day, counted from here, make the daily cap survive a
    # restart.
    op.create_table(
        "notify_messages",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("site_id", sa.Integer, nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("created", sa.Double, nullable=False),
        sa.Column("alerts", sa.Integer, nullable=False),
        sa.Column("held", sa.Integer, nullable=False),
        sa.Column("acknowledged", sa.Integer, nullable=False),
        sa.Column("last_immediate", sa.Boolean, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt", sa.Double, nullable=True),
        sa.Column("sent", sa.Double, nullable=True),
        sa.Column("recipients", sa.Text, nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_notify_messages"),
        _site_fk("notify_messages"),
    )
    op.create_index(
        "ix_notify_messages_site_id_channel_kind_created",
        "notify_messages",
        ["site_id", "channel", "kind", "created"],
    )
    op.create_index("ix_notify_messages_next_attempt", "notify_messages", ["next_attempt"])
    # One row per alert and channel: the key is what makes sending an alert twice on a channel
    # impossible, whatever runs at the same time.
    op.create_table(
        "notify_alerts",
        sa.Column("site_id", sa.Integer, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("time", sa.Double, nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("taken", sa.Double, nullable=False),
        sa.Column("held", sa.Boolean, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("message_id", sa.Integer, nullable=True),
        sa.PrimaryKeyConstraint("site_id", "seq", "time", "channel", name="pk_notify_alerts"),
        _site_fk("notify_alerts"),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["notify_messages.id"],
            name="fk_notify_alerts_message_id_notify_messages",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_notify_alerts_message_id", "notify_alerts", ["message_id"])
    op.create_index(
        "ix_notify_alerts_state_channel_site_id", "notify_alerts", ["state", "channel", "site_id"]
    )


def downgrade() -> None:
    op.drop_table("notify_alerts")
    op.drop_table("notify_messages")
    op.drop_table("notify_cursors")
    op.drop_index("ix_events_alerts_received", "events")
