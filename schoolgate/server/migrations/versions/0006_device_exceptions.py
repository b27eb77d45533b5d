"""Exceptions for one device: the device an exception is narrowed to, "" for its whole group.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The default fills the rows already there: every exception granted before was for a group.
    op.add_column(
        "central_exceptions",
        sa.Column("device", sa.String(64), nullable=False, server_default=""),
    )


def downgrade() -> None:
    # Dropped with the column: an exception for one device would otherwise widen to its group.
    op.execute("DELETE FROM central_exceptions WHERE device <> ''")
    with op.batch_alter_table("central_exceptions") as batch:
        batch.drop_column("device")
