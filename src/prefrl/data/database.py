"""The database under the store: engine, transactions and schema creation.

It sits behind a SQLAlchemy database URL, so one code path serves a single-user SQLite
file and a PostgreSQL server shared by many labellers. Every public write of the store is
one call of :meth:`Database._write`: one transaction, all or nothing.

SQLite runs in WAL mode with a busy timeout, and write transactions start with
``BEGIN IMMEDIATE`` so that a writer waits for the lock up front instead of failing when
it upgrades a read transaction (https://www.sqlite.org/lang_transaction.html); a
remaining "database is locked" is retried.
"""

from __future__ import annotations

import os
import random
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import StaticPool

from prefrl.data import schema

__all__ = ["Database"]

_T = TypeVar("_T")
_D = TypeVar("_D", bound="Database")
# SQLite's limit on bound variables per statement is 32766 (999 before 3.32); stay well below.
_IN_CHUNK = 500


def chunks(seq: Sequence[_T], size: int = _IN_CHUNK) -> Iterator[Sequence[_T]]:
    """``seq`` in slices short enough for one ``IN (…)`` clause."""
    for start in range(0, len(seq), size):
        yield seq[start : start + size]


def missing_ids(conn: Connection, table: sa.Table, ids: Iterable[int]) -> set[int]:
    """The ``ids`` that have no row in ``table``."""
    wanted = sorted(set(ids))
    found: set[int] = set()
    for chunk in chunks(wanted):
        found.update(conn.execute(sa.select(table.c.id).where(table.c.id.in_(chunk))).scalars())
    return set(wanted) - found


def row_by_id(conn: Connection, table: sa.Table, row_id: int) -> sa.Row | None:
    """The row of ``table`` with this id, or ``None``."""
    return conn.execute(sa.select(table).where(table.c.id == row_id)).first()


def _is_transient(err: sa.exc.DBAPIError) -> bool:
    """Lock contention worth retrying: SQLite "database is locked", PostgreSQL deadlock/serialisation."""
    text = str(err.orig).lower() if err.orig is not None else str(err).lower()
    if "database is locked" in text or "database is busy" in text or "database table is locked" in text:
        return True
    return getattr(err.orig, "pgcode", None) in ("40001", "40P01")


def _to_url(url_or_path: str | os.PathLike[str]) -> tuple[str, bool]:
    """Database URL for a URL or a plain path, and whether it is an in-memory SQLite."""
    text = os.fspath(url_or_path)
    if text in (":memory:", "sqlite://", "sqlite:///:memory:"):
        return "sqlite://", True
    if "://" in text:
        return text, False
    path = Path(text).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}", False


class Database:
    """One database at a URL, with the store's schema; the base of :class:`PreferenceStore`."""

    def __init__(
        self,
        url_or_path: str | os.PathLike[str],
        *,
        busy_timeout_s: float = 30.0,
        retry_s: float = 60.0,
        echo: bool = False,
    ) -> None:
        """Open (and if needed create) the database.

        Args:
            url_or_path: a SQLAlchemy URL (``sqlite:///prefs.db``, ``postgresql+psycopg2://…``)
                or a plain file path, which becomes a SQLite database (parent folders are created).
                ``":memory:"`` gives a private in-memory SQLite store (one process; calls serialised).
            busy_timeout_s: how long a SQLite writer waits for the lock before "database is locked".
            retry_s: how long a write keeps retrying transient lock errors before giving up.
            echo: log SQL statements (debugging).
        """
        self.url, memory = _to_url(url_or_path)
        self._retry_s = float(retry_s)
        # An in-memory database lives in one shared connection, so calls take turns.
        self._lock: threading.RLock | None = threading.RLock() if memory else None
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        if self.url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": busy_timeout_s}
            if memory:
                kwargs["poolclass"] = StaticPool
            else:  # SQLite connections are cheap; let a threaded web server hold many
                kwargs.update(pool_size=8, max_overflow=56)
        else:
            kwargs["pool_pre_ping"] = True
        try:
            self._engine: Engine = sa.create_engine(self.url, **kwargs)
        except sa.exc.ArgumentError as err:
            raise ValueError(f"url_or_path is not a valid database URL: {self.url!r} ({err})") from err
        if self._engine.dialect.name == "sqlite":
            _configure_sqlite(self._engine, busy_timeout_ms=int(busy_timeout_s * 1000), memory=memory)
        # A forked child (e.g. a vector-env worker) must not reuse the parent's connections:
        # https://docs.sqlalchemy.org/en/20/core/pooling.html#using-connection-pools-with-multiprocessing-or-os-fork
        if not memory and hasattr(os, "register_at_fork"):
            engine_ref = weakref.ref(self._engine)

            def _forget_parent_connections() -> None:
                engine = engine_ref()
                if engine is not None:
                    engine.dispose(close=False)

            os.register_at_fork(after_in_child=_forget_parent_connections)
        self._create_schema()

    @property
    def is_memory(self) -> bool:
        """A private in-memory SQLite database (no other process or connection can open it)."""
        return self._lock is not None

    @contextmanager
    def _serial(self) -> Iterator[None]:
        if self._lock is None:
            yield
        else:
            with self._lock:
                yield

    def _write(self, fn: Callable[[Connection], _T]) -> _T:
        """Run ``fn`` in one write transaction, retrying transient lock errors; all or nothing."""
        deadline = time.monotonic() + self._retry_s
        delay = 0.005
        while True:
            try:
                with self._serial(), self._engine.connect() as conn:
                    conn.execution_options(prefrl_write=True)
                    with conn.begin():
                        return fn(conn)
            except sa.exc.DBAPIError as err:
                if not _is_transient(err) or time.monotonic() > deadline:
                    raise
                time.sleep(delay * random.uniform(0.5, 1.5))  # jitter: writers do not retry in lockstep
                delay = min(delay * 2, 0.5)

    def _read(self, fn: Callable[[Connection], _T]) -> _T:
        """Run ``fn`` in one read transaction (a consistent snapshot)."""
        deadline = time.monotonic() + self._retry_s
        while True:
            try:
                with self._serial(), self._engine.connect() as conn, conn.begin():
                    return fn(conn)
            except sa.exc.DBAPIError as err:
                if not _is_transient(err) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _get(self, table: sa.Table, row_id: Any, field_name: str, what: str) -> sa.Row:
        """The row of ``table`` with this id (checked to be a positive int); ``KeyError`` if none."""
        row_id = schema.check_id(row_id, field_name)
        row = self._read(lambda conn: row_by_id(conn, table, row_id))
        if row is None:
            raise KeyError(f"no {what} with id {row_id}")
        return row

    def _count(self, table: sa.Table, *where: sa.ColumnElement[bool]) -> int:
        """Number of rows of ``table`` matching ``where``."""
        stmt = sa.select(sa.func.count()).select_from(table).where(*where)
        return self._read(lambda conn: int(conn.execute(stmt).scalar_one()))

    def _create_schema(self) -> None:
        # Several processes may open a new database at once; the loser of a CREATE race retries.
        def create(conn: Connection) -> None:
            schema.metadata.create_all(conn, checkfirst=True)
            info = schema.schema_info
            version = conn.execute(sa.select(info.c.value).where(info.c.key == "version")).scalar()
            if version is None:
                conn.execute(info.insert().values(key="version", value=str(schema.SCHEMA_VERSION)))
            elif int(version) > schema.SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self!r} has schema version {version}, newer than this prefrl's "
                    f"{schema.SCHEMA_VERSION}; upgrade prefrl"
                )
            elif int(version) < schema.SCHEMA_VERSION:
                _add_missing_columns(conn)
                conn.execute(
                    info.update().where(info.c.key == "version").values(value=str(schema.SCHEMA_VERSION))
                )

        for attempt in range(10):
            try:
                self._write(create)
                return
            except (sa.exc.OperationalError, sa.exc.ProgrammingError, sa.exc.IntegrityError):
                if attempt == 9:
                    raise
                time.sleep(0.05 * (attempt + 1))

    def close(self) -> None:
        """Release all database connections."""
        self._engine.dispose()

    def __enter__(self: _D) -> _D:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._engine.url.render_as_string(hide_password=True)!r})"


def _add_missing_columns(conn: Connection) -> None:
    """Upgrade an older database in place: add each column of the schema it lacks (with its default)."""
    inspector = sa.inspect(conn)
    preparer = conn.dialect.identifier_preparer
    for table in schema.metadata.sorted_tables:
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            if not column.nullable and column.server_default is None:
                raise RuntimeError(f"cannot add {table.name}.{column.name}: it has no server default")
            ddl = sa.schema.CreateColumn(column).compile(dialect=conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE {preparer.quote(table.name)} ADD COLUMN {ddl}")


def _configure_sqlite(engine: Engine, *, busy_timeout_ms: int, memory: bool) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from pysqlite so that we can say BEGIN IMMEDIATE.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
        if not memory:
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")  # safe in WAL mode; no fsync per commit
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("prefrl_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
