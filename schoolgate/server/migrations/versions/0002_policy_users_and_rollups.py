"""Policy revisions, central exceptions, unblock requests, users, credentials, the audit log,
and the per-hour, per-name and per-device counts kept up by ingest; events searchable by the
device's name.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _site_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["site_id"], ["sites.id"], name=f"fk_{table}_site_id_sites", ondelete="CASCADE"
    )


def upgrade() -> None:
    # A search by device name (the name a safeguarding lead knows a laptop by) is as common
    # as one by address or MAC, which 0001 indexed already.
    op.create_index("ix_events_site_hostname", "events", ["site_id", "hostname", "time"])
    if op.get_context().dialect.name == "postgresql":
        # A search by name is a prefix of the reversed name. Under a database collation such
        # as en_GB.UTF-8, punctuation is ignored at first, so '<' and '>' do not keep a name's
        # subdomains together; text_pattern_ops compares bytes, and serves LIKE 'prefix%'.
        op.drop_index("ix_events_site_rname", "events")
        op.create_index(
            "ix_events_site_rname",
            "events",
            ["site_id", "rname"],
            postgresql_ops={"rname": "text_pattern_ops"},
        )
    # Searches by category and by kind read ix_events_site_time (the category index served
    # none: a category is also matched in the categories column), except for the alerts,
    # one event in a thousand. Every index costs each event at ingest.
    op.drop_index("ix_events_site_category", "events")
    op.drop_index("ix_events_site_kind", "events")
    op.create_index(
        "ix_events_site_alerts",
        "events",
        ["site_id", "time"],
        postgresql_where=sa.text("kind = 'alert'"),
        sqlite_where=sa.text("kind = 'alert'"),
    )
    op.create_table(
        "event_counts",
        sa.Column("site_id", sa.Integer, nullable=False),
        sa.Column("hour", sa.Double, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("grp", sa.String(64), nullable=False),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint(
            "site_id", "hour", "kind", "grp", "category", "action", name="pk_event_counts"
        ),
    )
    op.create_table(
        "blocked_names",
        sa.Column("site_id", sa.Integer, nullable=False),
        sa.Column("day", sa.Double, nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("site_id", "day", "name", name="pk_blocked_names"),
    )
    op.create_table(
        "devices",
        sa.Column("site_id", sa.Integer, nullable=False),
        sa.Column("client_ip", sa.String(64), nullable=False),
        sa.Column("mac", sa.String(64), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("grp", sa.String(64), nullable=False),
        sa.Column("first_seen", sa.Double, nullable=False),
        sa.Column("last_seen", sa.Double, nullable=False),
        sa.Column("events", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("site_id", "client_ip", "mac", name="pk_devices"),
    )
    if op.get_context().dialect.name == "postgresql":
        # Each batch updates most of a school's devices: room on the page for the new row
        # versions, which then touch no index (no index holds a column they change).
        op.execute("ALTER TABLE devices SET (fillfactor = 50)")
    op.create_table(
        "policy_revisions",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("site_id", sa.Integer, nullable=True),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("created", sa.Double, nullable=False),
        sa.Column("author", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_policy_revisions"),
        _site_fk("policy_revisions"),
    )
    op.create_index("ix_policy_revisions_site_id_id", "policy_revisions", ["site_id", "id"])
    op.create_table(
        "central_exceptions",
        sa.Column("id", sa.String(16), nullable=False),
        sa.Column("site_id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("grp", sa.String(64), nullable=False),
        sa.Column("action", sa.String(8), nullable=False),
        sa.Column("created", sa.Double, nullable=False),
        sa.Column("expires", sa.Double, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("author", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(32), nullable=True),
        sa.Column("revoked", sa.Double, nullable=True),
        sa.Column("revoked_by", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_central_exceptions"),
        _site_fk("central_exceptions"),
    )
    op.create_index(
        "ix_central_exceptions_site_id_expires", "central_exceptions", ["site_id", "expires"]
    )
    op.create_table(
        "unblock_requests",
        sa.Column("site_id", sa.Integer, nullable=False),
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("created", sa.Double, nullable=False),
        sa.Column("received", sa.Double, nullable=False),
        sa.Column("client_ip", sa.String(64), nullable=False),
        sa.Column("mac", sa.String(64), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("grp", sa.String(64), nullable=False),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("language", sa.String(8), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("decided", sa.Double, nullable=True),
        sa.Column("decided_by", sa.String(64), nullable=True),
        sa.Column("note", sa.Text, nullable=True),
        sa.Column("exception_id", sa.String(16), nullable=True),
        sa.PrimaryKeyConstraint("site_id", "id", name="pk_unblock_requests"),
        _site_fk("unblock_requests"),
    )
    op.create_index(
        "ix_unblock_requests_site_status_created",
        "unblock_requests",
        ["site_id", "status", "created"],
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("created", sa.Double, nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False),
        sa.Column("last_login", sa.Double, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("name", name="uq_users_name"),
    )
    op.create_table(
        "user_sites",
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("site_id", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("user_id", "site_id", name="pk_user_sites"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_user_sites_user_id_users", ondelete="CASCADE"
        ),
        _site_fk("user_sites"),
    )
    op.create_table(
        "credentials",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("created", sa.Double, nullable=False),
        sa.Column("expires", sa.Double, nullable=True),
        sa.Column("last_used", sa.Double, nullable=True),
        sa.PrimaryKeyConstraint("token_hash", name="pk_credentials"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_credentials_user_id_users", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_credentials_user_id", "credentials", ["user_id"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("time", sa.Double, nullable=False),
        sa.Column("user_id", sa.Integer, nullable=True),
        sa.Column("user_name", sa.String(64), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("sites", sa.Text, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_time", "audit_log", ["time"])


def downgrade() -> None:
    for table in (
        "audit_log",
        "credentials",
        "user_sites",
        "users",
        "unblock_requests",
        "central_exceptions",
        "policy_revisions",
        "devices",
        "blocked_names",
        "event_counts",
    ):
        op.drop_table(table)
    op.drop_index("ix_events_site_hostname", "events")
    op.drop_index("ix_events_site_alerts", "events")
    op.create_index("ix_events_site_category", "events", ["site_id", "category", "time"])
    op.create_index("ix_events_site_kind", "events", ["site_id", "kind", "time"])
    if op.get_context().dialect.name == "postgresql":
        op.drop_index("ix_events_site_rname", "events")
        op.create_index("ix_events_site_rname", "events", ["site_id", "rname"])
