"""Alembic's entry point: runs the migrations on the connection ``migrate.upgrade`` passes."""

from __future__ import annotations

from alembic import context

from schoolgate.server.db.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with 'schoolgate-collector init-db' or 'migrate'")
context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite cannot alter most of a table in place: Alembic copies it in a batch instead.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
