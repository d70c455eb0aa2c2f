"""Fixtures for the store tests: a fresh SQLite file, and a fresh PostgreSQL database when
``PREFRL_TEST_POSTGRES_URL`` points at a server (tests marked ``postgres`` skip otherwise)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from prefrl.data import PreferenceStore

POSTGRES_ENV = "PREFRL_TEST_POSTGRES_URL"


@pytest.fixture(scope="session")
def _postgres_database() -> Iterator[str]:
    """A throw-away database on the test server for this session (dropped at the end)."""
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(
            f"PostgreSQL is optional: apt-get install postgresql, create a database and set {POSTGRES_ENV} "
            "(e.g. postgresql+psycopg2://postgres:postgres@127.0.0.1:5432/prefrl_test; .ci/run does all three)"
        )
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    name = f"prefrl_store_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as err:
        admin.dispose()
        pytest.skip(f"PostgreSQL at {POSTGRES_ENV} is unreachable (start the server, e.g. pg_ctlcluster <version> main start): {err.orig}")
    try:
        yield sa.make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def postgres_url(_postgres_database: str) -> str:
    """The session's PostgreSQL database, emptied (no tables) for this test."""
    engine = sa.create_engine(_postgres_database, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("DROP SCHEMA public CASCADE")
            conn.exec_driver_sql("CREATE SCHEMA public")
    finally:
        engine.dispose()
    return _postgres_database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """The same test against a SQLite file and (when available) PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'prefs.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def store(store_url: str) -> Iterator[PreferenceStore]:
    with PreferenceStore(store_url) as s:
        yield s
