"""Making and upgrading the collector's schema with the Alembic migrations it ships.

``init-db`` makes the schema of an empty database; ``migrate`` brings an existing one to the
newest revision. ``run`` refuses a database that is not at the newest revision, so a collector
never writes into a schema it does not know.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


class SchemaError(Exception):
    """The database is not in the state the command needs; the message says what to do."""


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head() -> str:
    """The newest revision the collector knows."""
    found = ScriptDirectory.from_config(_config()).get_current_head()
    assert found is not None
    return found


def current(engine: Engine) -> str | None:
    """The database's revision, None when no migration has run on it."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Bring the database to the newest revision; (revision before, revision after)."""
    before = current(engine)
    config = _config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
    return before, head()


def init(engine: Engine) -> str:
    """Make the schema of an empty database; ``SchemaError`` if it has tables already."""
    found = current(engine)
    if found is not None:
        raise SchemaError(
            f"the database is already set up (revision {found}); "
            "use 'schoolgate-collector migrate' to upgrade it"
        )
    tables = inspect(engine).get_table_names()
    if tables:
        raise SchemaError(
            f"the database has tables that are not the collector's ({', '.join(tables[:5])}): "
            "give the collector a database of its own"
        )
    return upgrade(engine)[1]


def check_current(engine: Engine) -> None:
    """``SchemaError`` unless the database is at the newest revision."""
    found, newest = current(engine), head()
    if found is None:
        raise SchemaError("the database is not set up: run 'schoolgate-collector init-db'")
    if found != newest:
        raise SchemaError(
            f"the database is at revision {found}, this collector needs {newest}: "
            "run 'schoolgate-collector migrate'"
        )
