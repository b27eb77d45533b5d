"""The migrations make the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from schoolgate.server.db import migrate
from schoolgate.server.db.schema import metadata


def test_init_makes_the_newest_schema(engine: Engine) -> None:
    assert migrate.current(engine) is None
    with pytest.raises(migrate.SchemaError, match="not set up: run 'schoolgate-collector init"):
        migrate.check_current(engine)
    assert migrate.init(engine) == migrate.head()
    migrate.check_current(engine)
    assert {"sites", "ingest_batches", "events"} <= set(inspect(engine).get_table_names())


def test_the_models_match_the_migrations(engine: Engine) -> None:
    migrate.init(engine)
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    assert differences == []


def test_init_refuses_a_database_that_is_set_up(engine: Engine) -> None:
    migrate.init(engine)
    with pytest.raises(
        migrate.SchemaError, match=r"already set up .* use 'schoolgate-collector mi"
    ):
        migrate.init(engine)
    assert migrate.upgrade(engine) == (migrate.head(), migrate.head())


def test_init_refuses_a_database_with_other_tables(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE payroll (id INTEGER)"))
    with pytest.raises(migrate.SchemaError, match=r"not the collector's \(payroll\)"):
        migrate.init(engine)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_events_are_partitioned_by_day_on_postgresql(engine: Engine) -> None:
    migrate.init(engine)
    with engine.connect() as conn:
        strategy = conn.execute(
            text(
                "SELECT p.partstrat FROM pg_partitioned_table p "
                "JOIN pg_class c ON c.oid = p.partrelid "
                "WHERE c.relname = 'events' AND pg_table_is_visible(c.oid)"
            )
        ).scalar_one()
    assert strategy == "r"  # by range, on time


def _to(engine: Engine, revision: str, how: str = "upgrade") -> None:
    config = migrate._config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        getattr(command, how)(config, revision)


def test_exceptions_granted_before_devices_could_be_named_stay_for_their_group(
    engine: Engine,
) -> None:
    _to(engine, "0005")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO sites (name, token_hash, created) VALUES ('n', 'h', 0)"))
        conn.execute(
            text(
                "INSERT INTO central_exceptions (id, site_id, name, grp, action, created,"
                " expires, reason, author) VALUES ('e1', 1, 'a.example', 'ks2', 'allow', 0,"
                " 4000000000, 'r', 'ana')"
            )
        )
    assert migrate.upgrade(engine) == ("0005", migrate.head())
    with engine.begin() as conn:
        assert conn.execute(text("SELECT device FROM central_exceptions")).scalar_one() == ""
        conn.execute(
            text(
                "INSERT INTO central_exceptions (id, site_id, name, grp, device, action,"
                " created, expires, reason, author) VALUES ('e2', 1, 'b.example', 'ks2',"
                " '10.0.0.7', 'allow', 0, 4000000000, 'r', 'ana')"
            )
        )
    # Going back drops the device's exception rather than widen it to the whole group.
    _to(engine, "0005", "downgrade")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT id FROM central_exceptions")).scalars().all() == ["e1"]
