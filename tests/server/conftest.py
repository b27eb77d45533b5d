"""The collector's databases for tests: SQLite always, PostgreSQL when one is reachable.

PostgreSQL is the local server (``SCHOOLGATE_TEST_POSTGRESQL``, by default
``postgresql://postgres@127.0.0.1:5432/test``); each test gets a schema of its own, dropped
afterwards, so tests never see each other's tables. When the server cannot be reached the
PostgreSQL cases are skipped, with the reason in the test summary.
"""

from __future__ import annotations

import functools
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from schoolgate.server.db import migrate
from schoolgate.server.db.engine import open_engine
from schoolgate.server.repository import SqlRepository
from schoolgate.server.settings import CollectorSettings, parse

POSTGRESQL = os.environ.get(
    "SCHOOLGATE_TEST_POSTGRESQL", "postgresql://postgres@127.0.0.1:5432/test"
)


@functools.cache
def postgresql_unreachable() -> str | None:
    """Why the test PostgreSQL cannot be used, or None when it can."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'schoolgate[postgresql]')"
    try:
        with psycopg.connect(POSTGRESQL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL at {POSTGRESQL} is not reachable: {str(exc).strip()}"
    return None


def _with_schema(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'collector.sqlite'}"
        return
    reason = postgresql_unreachable()
    if reason is not None:
        pytest.skip(reason)
    schema = "sgtest_" + secrets.token_hex(6)
    admin = open_engine(POSTGRESQL)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield _with_schema(POSTGRESQL, schema)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    made = open_engine(database_url)
    yield made
    made.dispose()


@pytest.fixture
def repo(engine: Engine) -> SqlRepository:
    migrate.init(engine)
    return SqlRepository(engine)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> CollectorSettings:
    return parse(
        f'[server]\nstate_dir = "{tmp_path}"\nlisten = "127.0.0.1:0"\n'
        f'[database]\nurl = "{database_url}"\n',
        "(test)",
        tmp_path,
    )
