"""The preference store: the one place that persists segments, text pairs, comparisons,
labelling queries and labellers.

It sits behind a SQLAlchemy database URL, so one code path serves a single-user SQLite
file and a PostgreSQL server shared by many labellers::

    store = PreferenceStore("runs/prefs.db")                       # → sqlite:///runs/prefs.db
    store = PreferenceStore("postgresql+psycopg2://u:p@host/db")   # many writers

Every public write is one transaction (the ``add_*s`` batch methods are all or nothing),
and bad input raises ``ValueError`` naming the field before anything is written.

SQLite runs in WAL mode with a busy timeout, and write transactions start with
``BEGIN IMMEDIATE`` so that a writer waits for the lock up front instead of failing when
it upgrades a read transaction (https://www.sqlite.org/lang_transaction.html); a
remaining "database is locked" is retried. Leases on queries are taken with a conditional
``UPDATE … WHERE status/lease condition`` whose row count is checked, which is atomic on
both SQLite and PostgreSQL: no two labellers ever hold a live lease on one query.

Arrays are stored as ``np.save`` bytes (dtype, shape and memory order kept exactly),
zlib-compressed; ``meta`` dictionaries as JSON (so tuples come back as lists).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import random
import secrets
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import StaticPool

from prefrl.data.types import Comparison, Segment, TextPair, check_mu, utcnow

__all__ = [
    "PreferenceStore",
    "LeaseError",
    "Query",
    "QueryStatus",
    "Labeller",
    "LabellerRole",
    "encode_array",
    "decode_array",
    "SCHEMA_VERSION",
]

QueryStatus = Literal["pending", "leased", "answered"]
LabellerRole = Literal["labeller", "admin"]
QUERY_STATUSES: tuple[str, ...] = get_args(QueryStatus)
LABELLER_ROLES: tuple[str, ...] = get_args(LabellerRole)

_T = TypeVar("_T")
# SQLite's limit on bound variables per statement is 32766 (999 before 3.32); stay well below.
_IN_CHUNK = 500


class LeaseError(ValueError):
    """A query lease that is not the caller's: someone else's, expired, released, or already answered."""


@dataclass
class Query:
    """A pair waiting for a person's answer, as handed out by :meth:`PreferenceStore.lease_query`.

    Attributes:
        id: the query's id in the store.
        left_id, right_id: the segments to compare (a control query), or
        text_pair_id: the text pair to compare (a language-model query).
        priority: higher is asked first (e.g. ensemble disagreement).
        status: "pending" (free), "leased" (someone is labelling it) or "answered".
        leased_to: labeller holding (or who last held) the lease.
        lease_expires_at: UTC time at which the lease lapses and the query is free again.
        created_at: UTC time the query was added.
        labeller: only this labeller may lease it; ``None`` means anyone.
    """

    id: int
    left_id: int | None
    right_id: int | None
    text_pair_id: int | None
    priority: float
    status: QueryStatus
    leased_to: str | None
    lease_expires_at: datetime | None
    created_at: datetime
    labeller: str | None = None


@dataclass
class Labeller:
    """A person allowed to label. Only a hash of their token is stored."""

    id: int
    name: str
    role: LabellerRole
    created_at: datetime


# ---------------------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------------------


class UTCDateTime(sa.types.TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps naive UTC strings)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:  # naive datetimes are taken to be UTC already
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


#: Bumped whenever the tables change; a store refuses a database written by a newer schema.
SCHEMA_VERSION = 1

_metadata = sa.MetaData()

_schema_info = sa.Table(
    "prefrl_schema",
    _metadata,
    sa.Column("key", sa.String(50), primary_key=True),
    sa.Column("value", sa.String(200), nullable=False),
)

_segments = sa.Table(
    "segments",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("length", sa.Integer, nullable=False),
    sa.Column("obs", sa.LargeBinary, nullable=False),
    sa.Column("actions", sa.LargeBinary, nullable=False),
    sa.Column("true_rewards", sa.LargeBinary, nullable=True),
    sa.Column("sim_states", sa.LargeBinary, nullable=True),
    sa.Column("env_id", sa.String(200), nullable=False),
    sa.Column("policy_version", sa.BigInteger, nullable=False),
    sa.Column("episode", sa.BigInteger, nullable=False),
    sa.Column("start_step", sa.BigInteger, nullable=False),
    sa.Column("meta", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

_text_pairs = sa.Table(
    "text_pairs",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("prompt", sa.Text, nullable=False),
    sa.Column("response_a", sa.Text, nullable=False),
    sa.Column("response_b", sa.Text, nullable=False),
    sa.Column("meta", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

_queries = sa.Table(
    "queries",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("left_id", sa.Integer, sa.ForeignKey("segments.id"), nullable=True),
    sa.Column("right_id", sa.Integer, sa.ForeignKey("segments.id"), nullable=True),
    sa.Column("text_pair_id", sa.Integer, sa.ForeignKey("text_pairs.id"), nullable=True),
    sa.Column("priority", sa.Float, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("leased_to", sa.String(200), nullable=True),
    sa.Column("lease_expires_at", UTCDateTime, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("labeller", sa.String(200), nullable=True),
    sa.Index("ix_queries_status_priority", "status", "priority"),
)

_comparisons = sa.Table(
    "comparisons",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("left_id", sa.Integer, sa.ForeignKey("segments.id"), nullable=True),
    sa.Column("right_id", sa.Integer, sa.ForeignKey("segments.id"), nullable=True),
    sa.Column("text_pair_id", sa.Integer, sa.ForeignKey("text_pairs.id"), nullable=True),
    sa.Column("mu", sa.Float, nullable=True),
    sa.Column("teacher", sa.String(200), nullable=False),
    sa.Column("labeller", sa.String(200), nullable=True, index=True),
    sa.Column("query_id", sa.Integer, sa.ForeignKey("queries.id"), nullable=True, index=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

_labellers = sa.Table(
    "labellers",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
)


# ---------------------------------------------------------------------------------------
# Array encoding
# ---------------------------------------------------------------------------------------


def encode_array(arr: np.ndarray, *, field_name: str = "array", level: int = 1) -> bytes:
    """``np.save`` bytes of ``arr`` (dtype, shape and order kept), zlib-compressed.

    Raises ``ValueError`` naming ``field_name`` for arrays that need pickling (object dtype).
    """
    buf = io.BytesIO()
    try:
        np.save(buf, np.asarray(arr), allow_pickle=False)
    except ValueError as err:
        raise ValueError(
            f"{field_name} cannot be stored without pickling (dtype {np.asarray(arr).dtype})"
        ) from err
    return zlib.compress(buf.getvalue(), level)


def decode_array(blob: bytes) -> np.ndarray:
    """Inverse of :func:`encode_array`; the result is a fresh, writeable array."""
    return np.load(io.BytesIO(zlib.decompress(blob)), allow_pickle=False)


# ---------------------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------------------


def _hash_token(token: str) -> str:
    # Tokens are 256-bit random strings, so a fast unsalted hash is enough (no guessing).
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _dump_meta(meta: Any, field_name: str = "meta") -> str:
    if not isinstance(meta, dict):
        raise ValueError(f"{field_name} must be a dict, got {type(meta).__name__}")
    try:
        return json.dumps(meta, allow_nan=False, sort_keys=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{field_name} must be JSON-serialisable: {err}") from err


def _check_int(value: Any, field_name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{field_name} must be an integer, got {value!r}")
    return int(value)


def _check_id(value: Any, field_name: str) -> int:
    value = _check_int(value, field_name)
    if value < 1:
        raise ValueError(f"{field_name} must be a positive id, got {value}")
    return value


def _check_name(value: Any, field_name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{field_name} must be a non-empty string, got {value!r}")
    if len(value) > 200:
        raise ValueError(f"{field_name} is longer than 200 characters")
    return value


def _check_optional_name(value: Any, field_name: str) -> str | None:
    return None if value is None else _check_name(value, field_name)


def _check_positive(value: Any, field_name: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{field_name} must be a positive number, got {value!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{field_name} must be a positive number, got {value!r}")
    return value


def _segment_row(seg: Segment, index: int | None = None) -> dict[str, Any]:
    where = "" if index is None else f"segments[{index}]: "
    if not isinstance(seg, Segment):
        raise ValueError(f"{where}expected a Segment, got {type(seg).__name__}")
    for name in ("obs", "actions"):
        if getattr(seg, name) is None:
            raise ValueError(f"{where}{name} must be an array, got None")
    try:
        seg.validate()
    except ValueError as err:
        raise ValueError(f"{where}{err}") from None
    arrays = {}
    for name in ("obs", "actions", "true_rewards", "sim_states"):
        arr = getattr(seg, name)
        if arr is None:
            arrays[name] = None
            continue
        arr = np.asarray(arr)
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
            raise ValueError(f"{where}{name} must be numeric or boolean, got dtype {arr.dtype}")
        arrays[name] = encode_array(arr, field_name=f"{where}{name}")
    if not isinstance(seg.env_id, str) or len(seg.env_id) > 200:
        raise ValueError(f"{where}env_id must be a string of at most 200 characters, got {seg.env_id!r}")
    return {
        "length": len(seg),
        **arrays,
        "env_id": seg.env_id,
        "policy_version": _check_int(seg.policy_version, f"{where}policy_version"),
        "episode": _check_int(seg.episode, f"{where}episode"),
        "start_step": _check_int(seg.start_step, f"{where}start_step"),
        "meta": _dump_meta(seg.meta, f"{where}meta"),
        "created_at": utcnow(),
    }


def _segment_from_row(row: Any) -> Segment:
    return Segment(
        obs=decode_array(row.obs),
        actions=decode_array(row.actions),
        true_rewards=None if row.true_rewards is None else decode_array(row.true_rewards),
        sim_states=None if row.sim_states is None else decode_array(row.sim_states),
        env_id=row.env_id,
        policy_version=int(row.policy_version),
        episode=int(row.episode),
        start_step=int(row.start_step),
        id=int(row.id),
        meta=json.loads(row.meta),
    )


def _text_pair_row(pair: TextPair, index: int | None = None) -> dict[str, Any]:
    where = "" if index is None else f"text_pairs[{index}]: "
    if not isinstance(pair, TextPair):
        raise ValueError(f"{where}expected a TextPair, got {type(pair).__name__}")
    try:
        pair.validate()
    except ValueError as err:
        raise ValueError(f"{where}{err}") from None
    return {
        "prompt": pair.prompt,
        "response_a": pair.response_a,
        "response_b": pair.response_b,
        "meta": _dump_meta(pair.meta, f"{where}meta"),
        "created_at": utcnow(),
    }


def _text_pair_from_row(row: Any) -> TextPair:
    return TextPair(
        prompt=row.prompt,
        response_a=row.response_a,
        response_b=row.response_b,
        meta=json.loads(row.meta),
        id=int(row.id),
    )


def _comparison_from_row(row: Any) -> Comparison:
    return Comparison(
        mu=None if row.mu is None else float(row.mu),
        teacher=row.teacher,
        left_id=row.left_id,
        right_id=row.right_id,
        text_pair_id=row.text_pair_id,
        created_at=row.created_at,
        labeller=row.labeller,
        id=int(row.id),
    )


def _query_from_row(row: Any, now: datetime) -> Query:
    status = row.status
    if status == "leased" and row.lease_expires_at is not None and row.lease_expires_at <= now:
        status = "pending"  # the lease lapsed: free for anyone (leased_to keeps the last holder)
    return Query(
        id=int(row.id),
        left_id=row.left_id,
        right_id=row.right_id,
        text_pair_id=row.text_pair_id,
        priority=float(row.priority),
        status=status,
        leased_to=row.leased_to,
        lease_expires_at=row.lease_expires_at,
        created_at=row.created_at,
        labeller=row.labeller,
    )


def _labeller_from_row(row: Any) -> Labeller:
    return Labeller(id=int(row.id), name=row.name, role=row.role, created_at=row.created_at)


def _chunks(seq: Sequence[_T], size: int = _IN_CHUNK) -> Iterator[Sequence[_T]]:
    for start in range(0, len(seq), size):
        yield seq[start : start + size]


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


# ---------------------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------------------


class PreferenceStore:
    """Segments, text pairs, comparisons, labelling queries and labellers in one database.

    Args:
        url_or_path: a SQLAlchemy URL (``sqlite:///prefs.db``, ``postgresql+psycopg2://…``)
            or a plain file path, which becomes a SQLite database (parent folders are created).
            ``":memory:"`` gives a private in-memory SQLite store (one process; calls serialised).
        busy_timeout_s: how long a SQLite writer waits for the lock before "database is locked".
        retry_s: how long a write keeps retrying transient lock errors before giving up.
        echo: log SQL statements (debugging).

    Use as a context manager or call :meth:`close`. One instance may be shared by threads;
    each process opens its own.
    """

    def __init__(
        self,
        url_or_path: str | os.PathLike[str],
        *,
        busy_timeout_s: float = 30.0,
        retry_s: float = 60.0,
        echo: bool = False,
    ) -> None:
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
            self._configure_sqlite(self._engine, busy_timeout_ms=int(busy_timeout_s * 1000), memory=memory)
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

    # ---- plumbing -----------------------------------------------------------------------

    @staticmethod
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

    @contextmanager
    def _serial(self) -> Iterator[None]:
        if self._lock is None:
            yield
        else:
            with self._lock:
                yield

    def _insert_all(
        self,
        table: sa.Table,
        rows: list[dict[str, Any]],
        records: Sequence[Any],
        check: Callable[[Connection, list[dict[str, Any]]], None] | None = None,
    ) -> list[int]:
        """Insert validated ``rows`` in one transaction (all or none); set each record's ``id``."""

        def insert(conn: Connection) -> list[int]:
            if check is not None:
                check(conn, rows)
            return [int(conn.execute(table.insert().values(**row)).inserted_primary_key[0]) for row in rows]

        ids = self._write(insert) if rows else []
        for record, record_id in zip(records, ids):
            record.id = record_id
        return ids

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

    def _create_schema(self) -> None:
        # Several processes may open a new database at once; the loser of a CREATE race retries.
        def create(conn: Connection) -> None:
            _metadata.create_all(conn, checkfirst=True)
            version = conn.execute(
                sa.select(_schema_info.c.value).where(_schema_info.c.key == "version")
            ).scalar()
            if version is None:
                conn.execute(_schema_info.insert().values(key="version", value=str(SCHEMA_VERSION)))
            elif int(version) > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self!r} has schema version {version}, newer than this prefrl's {SCHEMA_VERSION}; upgrade prefrl"
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

    def __enter__(self) -> PreferenceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PreferenceStore({self._engine.url.render_as_string(hide_password=True)!r})"

    @staticmethod
    def _missing_ids(conn: Connection, table: sa.Table, ids: Iterable[int]) -> set[int]:
        wanted = sorted(set(ids))
        found: set[int] = set()
        for chunk in _chunks(wanted):
            found.update(conn.execute(sa.select(table.c.id).where(table.c.id.in_(chunk))).scalars())
        return set(wanted) - found

    # ---- segments -----------------------------------------------------------------------

    def add_segment(self, seg: Segment) -> int:
        """Store one segment and return its id (also set on ``seg.id``)."""
        return self.add_segments([seg])[0]

    def add_segments(self, segs: Sequence[Segment]) -> list[int]:
        """Store segments atomically (all or none) and return their ids, in order.

        Raises ``ValueError`` naming the segment and field for malformed input (NaN,
        mismatched lengths, non-numeric dtypes, non-JSON meta); nothing is written then.
        """
        return self._insert_all(_segments, [_segment_row(seg, i) for i, seg in enumerate(segs)], segs)

    def get_segment(self, segment_id: int) -> Segment:
        """The segment with this id; ``KeyError`` if there is none."""
        return self.get_segments([segment_id])[0]

    def get_segments(self, ids: Sequence[int]) -> list[Segment]:
        """Segments for ``ids`` in the same order (repeats allowed); ``KeyError`` naming missing ids."""
        ids = [_check_id(i, "segment id") for i in ids]
        by_id = self._read(lambda conn: self._load_segments(conn, ids))
        return [by_id[i] for i in ids]

    @staticmethod
    def _load_segments(conn: Connection, ids: Iterable[int]) -> dict[int, Segment]:
        wanted = sorted(set(ids))
        by_id: dict[int, Segment] = {}
        for chunk in _chunks(wanted):
            for row in conn.execute(sa.select(_segments).where(_segments.c.id.in_(chunk))):
                by_id[int(row.id)] = _segment_from_row(row)
        missing = set(wanted) - set(by_id)
        if missing:
            raise KeyError(f"no segment with id {sorted(missing)[:10]}")
        return by_id

    def count_segments(self) -> int:
        """Number of stored segments."""
        return self._read(
            lambda conn: int(conn.execute(sa.select(sa.func.count()).select_from(_segments)).scalar_one())
        )

    # ---- comparisons --------------------------------------------------------------------

    def _comparison_row(self, comp: Comparison, index: int | None = None) -> dict[str, Any]:
        where = "" if index is None else f"comparisons[{index}]: "
        if not isinstance(comp, Comparison):
            raise ValueError(f"{where}expected a Comparison, got {type(comp).__name__}")
        mu = check_mu(comp.mu, field_name=f"{where}mu")
        teacher = _check_name(comp.teacher, f"{where}teacher")
        labeller = _check_optional_name(comp.labeller, f"{where}labeller")
        is_segment_pair = comp.left_id is not None or comp.right_id is not None
        if is_segment_pair == (comp.text_pair_id is not None):
            raise ValueError(f"{where}set either left_id and right_id or text_pair_id, not both or neither")
        left_id = right_id = text_pair_id = None
        if is_segment_pair:
            if comp.left_id is None or comp.right_id is None:
                raise ValueError(f"{where}left_id and right_id must both be set")
            left_id = _check_id(comp.left_id, f"{where}left_id")
            right_id = _check_id(comp.right_id, f"{where}right_id")
            if left_id == right_id:
                raise ValueError(f"{where}left_id and right_id are the same segment ({left_id})")
        else:
            text_pair_id = _check_id(comp.text_pair_id, f"{where}text_pair_id")
        created_at = comp.created_at
        if not isinstance(created_at, datetime):
            raise ValueError(f"{where}created_at must be a datetime, got {created_at!r}")
        return {
            "left_id": left_id,
            "right_id": right_id,
            "text_pair_id": text_pair_id,
            "mu": mu,
            "teacher": teacher,
            "labeller": labeller,
            "created_at": created_at,
        }

    @classmethod
    def _check_references(cls, conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
        for field_name, table in (
            ("left_id", _segments),
            ("right_id", _segments),
            ("text_pair_id", _text_pairs),
        ):
            missing = cls._missing_ids(
                conn, table, (r[field_name] for r in rows if r[field_name] is not None)
            )
            if missing:
                raise ValueError(
                    f"{field_name}: unknown {table.name[:-1].replace('_', ' ')} id(s) {sorted(missing)[:10]}"
                )

    def add_comparison(
        self, left_id: int, right_id: int, mu: float | None, teacher: str, labeller: str | None = None
    ) -> int:
        """Store the answer μ (mass on the left segment, ``None`` = incomparable) and return its id."""
        return self.add_comparisons(
            [Comparison(mu=mu, teacher=teacher, left_id=left_id, right_id=right_id, labeller=labeller)]
        )[0]

    def add_comparisons(self, comparisons: Sequence[Comparison]) -> list[int]:
        """Store comparisons of segments or text pairs atomically (all or none); returns ids in order.

        ``created_at`` is kept as given (a naive datetime is taken as UTC). ``ValueError``
        names the offending comparison and field: μ ∉ {1, 0, 0.5, None}, unknown ids, a
        segment compared with itself, both or neither of segment ids / text pair id.
        """
        rows = [self._comparison_row(c, i) for i, c in enumerate(comparisons)]
        return self._insert_all(_comparisons, rows, comparisons, check=self._check_references)

    def get_comparison(self, comparison_id: int) -> Comparison:
        """The comparison with this id; ``KeyError`` if there is none."""
        comparison_id = _check_id(comparison_id, "comparison_id")
        row = self._read(
            lambda conn: conn.execute(
                sa.select(_comparisons).where(_comparisons.c.id == comparison_id)
            ).first()
        )
        if row is None:
            raise KeyError(f"no comparison with id {comparison_id}")
        return _comparison_from_row(row)

    @staticmethod
    def _comparison_filter(
        include_incomparable: bool = True,
        since_id: int | None = None,
        labeller: str | None = None,
        teacher: str | None = None,
        kind: Literal["any", "segment", "text"] = "any",
    ) -> list[sa.ColumnElement[bool]]:
        where: list[sa.ColumnElement[bool]] = []
        if not include_incomparable:
            where.append(_comparisons.c.mu.is_not(None))
        if since_id is not None:
            where.append(_comparisons.c.id > _check_int(since_id, "since_id"))
        if labeller is not None:
            where.append(_comparisons.c.labeller == labeller)
        if teacher is not None:
            where.append(_comparisons.c.teacher == teacher)
        if kind == "segment":
            where.append(_comparisons.c.left_id.is_not(None))
        elif kind == "text":
            where.append(_comparisons.c.text_pair_id.is_not(None))
        elif kind != "any":
            raise ValueError(f"kind must be 'any', 'segment' or 'text', got {kind!r}")
        return where

    def comparisons(
        self,
        include_incomparable: bool = True,
        since_id: int | None = None,
        *,
        labeller: str | None = None,
        teacher: str | None = None,
        kind: Literal["any", "segment", "text"] = "any",
        query_id: int | None = None,
        newest_first: bool = False,
        limit: int | None = None,
    ) -> list[Comparison]:
        """Stored comparisons, oldest first (or ``newest_first``), filtered.

        Args:
            include_incomparable: keep answers with μ = None.
            since_id: only comparisons with a larger id (incremental reads).
            labeller / teacher: only this labeller's / teacher's answers (e.g. a person's recent labels).
            kind: "segment" or "text" comparisons only.
            query_id: only answers given to this labelling query.
            limit: at most this many.
        """
        where = self._comparison_filter(include_incomparable, since_id, labeller, teacher, kind)
        if query_id is not None:
            where.append(_comparisons.c.query_id == _check_id(query_id, "query_id"))
        stmt = sa.select(_comparisons).where(*where)
        stmt = stmt.order_by(_comparisons.c.id.desc() if newest_first else _comparisons.c.id)
        if limit is not None:
            stmt = stmt.limit(_check_int(limit, "limit"))
        return self._read(lambda conn: [_comparison_from_row(r) for r in conn.execute(stmt)])

    def comparisons_of(
        self, *, left_id: int | None = None, right_id: int | None = None, text_pair_id: int | None = None
    ) -> list[Comparison]:
        """Every answer about one item, oldest first, for agreement statistics between labellers.

        For a segment pair both orders are returned (μ of a reversed pair is about ``right_id``).
        """
        if text_pair_id is not None:
            if left_id is not None or right_id is not None:
                raise ValueError("set either left_id and right_id or text_pair_id, not both")
            cond = _comparisons.c.text_pair_id == _check_id(text_pair_id, "text_pair_id")
        else:
            if left_id is None or right_id is None:
                raise ValueError("left_id and right_id must both be set (or text_pair_id)")
            a, b = _check_id(left_id, "left_id"), _check_id(right_id, "right_id")
            c = _comparisons.c
            cond = sa.or_(sa.and_(c.left_id == a, c.right_id == b), sa.and_(c.left_id == b, c.right_id == a))
        stmt = sa.select(_comparisons).where(cond).order_by(_comparisons.c.id)
        return self._read(lambda conn: [_comparison_from_row(r) for r in conn.execute(stmt)])

    def count_comparisons(self, include_incomparable: bool = True) -> int:
        """Number of stored comparisons (segment and text), optionally without μ = None ones."""
        where = self._comparison_filter(include_incomparable)
        stmt = sa.select(sa.func.count()).select_from(_comparisons).where(*where)
        return self._read(lambda conn: int(conn.execute(stmt).scalar_one()))

    def training_pairs(self, since_id: int | None = None) -> list[tuple[Segment, Segment, float]]:
        """(σ¹, σ², μ) for every segment comparison with μ ≠ None (after ``since_id``), oldest first."""
        where = self._comparison_filter(False, since_id, kind="segment")
        stmt = sa.select(_comparisons.c.left_id, _comparisons.c.right_id, _comparisons.c.mu)
        stmt = stmt.where(*where).order_by(_comparisons.c.id)

        def load(conn: Connection) -> list[tuple[Segment, Segment, float]]:
            rows = conn.execute(stmt).all()
            segs = self._load_segments(conn, [r.left_id for r in rows] + [r.right_id for r in rows])
            return [(segs[r.left_id], segs[r.right_id], float(r.mu)) for r in rows]

        return self._read(load)

    # ---- text pairs ---------------------------------------------------------------------

    def add_text_pair(self, pair: TextPair) -> int:
        """Store a prompt with two responses; returns its id (also set on ``pair.id``)."""
        return self.add_text_pairs([pair])[0]

    def add_text_pairs(self, pairs: Sequence[TextPair]) -> list[int]:
        """Store text pairs atomically (all or none); returns ids in order."""
        return self._insert_all(_text_pairs, [_text_pair_row(p, i) for i, p in enumerate(pairs)], pairs)

    def get_text_pair(self, pair_id: int) -> TextPair:
        """The text pair with this id; ``KeyError`` if there is none."""
        pair_id = _check_id(pair_id, "text_pair_id")
        row = self._read(
            lambda conn: conn.execute(sa.select(_text_pairs).where(_text_pairs.c.id == pair_id)).first()
        )
        if row is None:
            raise KeyError(f"no text pair with id {pair_id}")
        return _text_pair_from_row(row)

    def count_text_pairs(self) -> int:
        """Number of stored text pairs."""
        stmt = sa.select(sa.func.count()).select_from(_text_pairs)
        return self._read(lambda conn: int(conn.execute(stmt).scalar_one()))

    def add_text_comparison(
        self, pair_id: int, mu: float | None, teacher: str, labeller: str | None = None
    ) -> int:
        """Store μ (mass on ``response_a``; ``None`` = incomparable) for a text pair; returns its id."""
        return self.add_comparisons(
            [Comparison(mu=mu, teacher=teacher, text_pair_id=pair_id, labeller=labeller)]
        )[0]

    def text_preferences(self, since_id: int | None = None) -> list[tuple[TextPair, float]]:
        """(pair, μ) for every answered, comparable text comparison (after ``since_id``), oldest first."""
        where = self._comparison_filter(False, since_id, kind="text")
        stmt = (
            sa.select(_comparisons.c.text_pair_id, _comparisons.c.mu)
            .where(*where)
            .order_by(_comparisons.c.id)
        )

        def load(conn: Connection) -> list[tuple[TextPair, float]]:
            rows = conn.execute(stmt).all()
            pairs: dict[int, TextPair] = {}
            for chunk in _chunks(sorted({r.text_pair_id for r in rows})):
                for row in conn.execute(sa.select(_text_pairs).where(_text_pairs.c.id.in_(chunk))):
                    pairs[int(row.id)] = _text_pair_from_row(row)
            return [(pairs[r.text_pair_id], float(r.mu)) for r in rows]

        return self._read(load)

    # ---- queries for people -------------------------------------------------------------

    def add_query(
        self,
        left_id: int | None = None,
        right_id: int | None = None,
        text_pair_id: int | None = None,
        priority: float = 0.0,
        labeller: str | None = None,
    ) -> int:
        """Queue a pair for people to label; returns the query id.

        Args:
            left_id, right_id: two distinct stored segments, or
            text_pair_id: a stored text pair.
            priority: higher priorities are leased first (finite).
            labeller: restrict the query to this labeller (``None`` = anyone).
        """
        row = self._comparison_row(
            Comparison(
                mu=None, teacher="query", left_id=left_id, right_id=right_id, text_pair_id=text_pair_id
            )
        )
        try:
            priority = float(priority)
        except (TypeError, ValueError):
            raise ValueError(f"priority must be a finite number, got {priority!r}") from None
        if not math.isfinite(priority):
            raise ValueError(f"priority must be a finite number, got {priority!r}")
        values = {
            "left_id": row["left_id"],
            "right_id": row["right_id"],
            "text_pair_id": row["text_pair_id"],
            "priority": priority,
            "status": "pending",
            "leased_to": None,
            "lease_expires_at": None,
            "created_at": utcnow(),
            "labeller": _check_optional_name(labeller, "labeller"),
        }

        def insert(conn: Connection) -> int:
            self._check_references(conn, [row])
            return int(conn.execute(_queries.insert().values(**values)).inserted_primary_key[0])

        return self._write(insert)

    def get_query(self, query_id: int) -> Query:
        """The query with this id; ``KeyError`` if there is none."""
        query_id = _check_id(query_id, "query_id")
        row = self._read(
            lambda conn: conn.execute(sa.select(_queries).where(_queries.c.id == query_id)).first()
        )
        if row is None:
            raise KeyError(f"no query with id {query_id}")
        return _query_from_row(row, utcnow())

    def _status_filter(self, status: str | None, now: datetime) -> list[sa.ColumnElement[bool]]:
        """WHERE clauses for a query's status *now*: a lapsed lease counts as "pending"."""
        if status is None:
            return []
        if status not in QUERY_STATUSES:
            raise ValueError(f"status must be one of {QUERY_STATUSES} or None, got {status!r}")
        q = _queries.c
        if status == "pending":
            return [self._free(now)]
        if status == "leased":
            return [q.status == "leased", q.lease_expires_at > now]
        return [q.status == "answered"]

    def queries(self, status: QueryStatus | None = None, *, limit: int | None = None) -> list[Query]:
        """Queries (optionally only those with this status now), highest priority first.

        A query whose lease has lapsed is reported (and counted) as "pending": anyone may lease it.
        """
        now = utcnow()
        stmt = sa.select(_queries).where(*self._status_filter(status, now))
        stmt = stmt.order_by(_queries.c.priority.desc(), _queries.c.id)
        if limit is not None:
            stmt = stmt.limit(_check_int(limit, "limit"))
        return self._read(lambda conn: [_query_from_row(r, now) for r in conn.execute(stmt)])

    def count_queries(self, status: QueryStatus | None = None) -> int:
        """Number of queries, optionally of one status now ("pending", "leased", "answered")."""
        stmt = sa.select(sa.func.count()).select_from(_queries)
        stmt = stmt.where(*self._status_filter(status, utcnow()))
        return self._read(lambda conn: int(conn.execute(stmt).scalar_one()))

    @staticmethod
    def _free(now: datetime) -> sa.ColumnElement[bool]:
        """A query anyone may lease now: pending, or leased with a lapsed lease."""
        q = _queries.c
        return sa.or_(q.status == "pending", sa.and_(q.status == "leased", q.lease_expires_at <= now))

    def lease_query(self, labeller: str, lease_seconds: float = 300.0) -> Query | None:
        """Lease the highest-priority free query to ``labeller``; ``None`` when there is none.

        A query is free when it is pending or its lease has lapsed, and it is not restricted
        to another labeller. If ``labeller`` already holds a live lease, that query is
        returned (its lease unchanged). Atomic: the lease is taken with a conditional UPDATE
        whose row count is checked, so two labellers never hold a live lease on one query.
        """
        labeller = _check_name(labeller, "labeller")
        lease_seconds = _check_positive(lease_seconds, "lease_seconds")
        q = _queries.c

        def lease(conn: Connection) -> Query | None:
            now = utcnow()
            held = conn.execute(
                sa.select(_queries)
                .where(q.status == "leased", q.leased_to == labeller, q.lease_expires_at > now)
                .order_by(q.priority.desc(), q.id)
                .limit(1)
            ).first()
            if held is not None:
                return _query_from_row(held, now)
            for _ in range(1000):  # each miss means another labeller just took that query
                candidate = conn.execute(
                    sa.select(q.id)
                    .where(self._free(now), sa.or_(q.labeller.is_(None), q.labeller == labeller))
                    .order_by(q.priority.desc(), q.id)
                    .limit(1)
                ).scalar()
                if candidate is None:
                    return None
                taken = conn.execute(
                    _queries.update()
                    .where(q.id == candidate, self._free(now))
                    .values(
                        status="leased",
                        leased_to=labeller,
                        lease_expires_at=now + timedelta(seconds=lease_seconds),
                    )
                )
                if taken.rowcount == 1:
                    return _query_from_row(
                        conn.execute(sa.select(_queries).where(q.id == candidate)).one(), now
                    )
            raise RuntimeError("lease_query: too much contention, gave up")

        return self._write(lease)

    def _lease_problem(self, conn: Connection, query_id: int, labeller: str, now: datetime) -> LeaseError:
        """Explain why ``labeller`` holds no live lease on ``query_id``."""
        row = conn.execute(sa.select(_queries).where(_queries.c.id == query_id)).first()
        if row is None:
            return LeaseError(f"query_id: no query with id {query_id}")
        if row.status == "answered":
            return LeaseError(f"query {query_id} is already answered")
        if row.status == "pending" or row.leased_to != labeller:
            return LeaseError(f"query {query_id} is not leased to {labeller!r}")
        return LeaseError(f"the lease of {labeller!r} on query {query_id} expired at {row.lease_expires_at}")

    def answer_query(
        self, query_id: int, labeller: str, mu: float | None, teacher: str = "human"
    ) -> Comparison:
        """Store ``labeller``'s answer μ to a query they lease and mark it answered, in one transaction.

        ``mu=None`` records "can't tell" (stored, not used for training). Raises
        ``LeaseError`` when the lease is not this labeller's, has expired, or the query is
        already answered (a replayed submission), and ``ValueError`` for a bad μ.
        """
        query_id = _check_id(query_id, "query_id")
        labeller = _check_name(labeller, "labeller")
        mu = check_mu(mu)
        teacher = _check_name(teacher, "teacher")
        q = _queries.c

        def answer(conn: Connection) -> Comparison:
            now = utcnow()
            done = conn.execute(
                _queries.update()
                .where(
                    q.id == query_id, q.status == "leased", q.leased_to == labeller, q.lease_expires_at > now
                )
                .values(status="answered", lease_expires_at=None)
            )
            if done.rowcount != 1:
                raise self._lease_problem(conn, query_id, labeller, now)
            row = conn.execute(sa.select(_queries).where(q.id == query_id)).one()
            values = {
                "left_id": row.left_id,
                "right_id": row.right_id,
                "text_pair_id": row.text_pair_id,
                "mu": mu,
                "teacher": teacher,
                "labeller": labeller,
                "query_id": query_id,
                "created_at": now,
            }
            comp_id = int(conn.execute(_comparisons.insert().values(**values)).inserted_primary_key[0])
            return Comparison(
                mu=mu,
                teacher=teacher,
                left_id=row.left_id,
                right_id=row.right_id,
                text_pair_id=row.text_pair_id,
                created_at=now,
                labeller=labeller,
                id=comp_id,
            )

        return self._write(answer)

    def release_query(self, query_id: int, labeller: str) -> None:
        """Give back a live lease unanswered (e.g. the labeller skipped it); ``LeaseError`` if not held."""
        query_id = _check_id(query_id, "query_id")
        labeller = _check_name(labeller, "labeller")
        q = _queries.c

        def release(conn: Connection) -> None:
            now = utcnow()
            done = conn.execute(
                _queries.update()
                .where(
                    q.id == query_id, q.status == "leased", q.leased_to == labeller, q.lease_expires_at > now
                )
                .values(status="pending", leased_to=None, lease_expires_at=None)
            )
            if done.rowcount != 1:
                raise self._lease_problem(conn, query_id, labeller, now)

        self._write(release)

    def undo_answer(self, comparison_id: int, labeller: str, window_seconds: float = 30.0) -> Query | None:
        """Delete ``labeller``'s comparison made less than ``window_seconds`` ago.

        Its query (if it came from one) goes back to "pending" and is returned. Raises
        ``LeaseError`` for an unknown comparison, someone else's, or one older than the window.
        """
        comparison_id = _check_id(comparison_id, "comparison_id")
        labeller = _check_name(labeller, "labeller")
        window_seconds = _check_positive(window_seconds, "window_seconds")
        c, q = _comparisons.c, _queries.c

        def undo(conn: Connection) -> Query | None:
            now = utcnow()
            row = conn.execute(sa.select(_comparisons).where(c.id == comparison_id)).first()
            if row is None:
                raise LeaseError(f"comparison_id: no comparison with id {comparison_id}")
            if row.labeller != labeller:
                raise LeaseError(f"comparison {comparison_id} was not made by {labeller!r}")
            cutoff = now - timedelta(seconds=window_seconds)
            deleted = conn.execute(
                _comparisons.delete().where(
                    c.id == comparison_id, c.labeller == labeller, c.created_at >= cutoff
                )
            )
            if deleted.rowcount != 1:
                raise LeaseError(
                    f"comparison {comparison_id} is older than the undo window of {window_seconds} s"
                )
            if row.query_id is None:
                return None
            conn.execute(
                _queries.update()
                .where(q.id == row.query_id, q.status == "answered")
                .values(status="pending", leased_to=None, lease_expires_at=None)
            )
            return _query_from_row(conn.execute(sa.select(_queries).where(q.id == row.query_id)).one(), now)

        return self._write(undo)

    # ---- labellers ----------------------------------------------------------------------

    def add_labeller(self, name: str, role: LabellerRole = "labeller") -> str:
        """Register a labeller and return their login token (shown once; only its hash is kept).

        Raises ``ValueError`` for a duplicate or empty name, or a role other than "labeller"/"admin".
        """
        name = _check_name(name, "name")
        if role not in LABELLER_ROLES:
            raise ValueError(f"role must be one of {LABELLER_ROLES}, got {role!r}")
        token = secrets.token_urlsafe(32)
        values = {"name": name, "role": role, "token_hash": _hash_token(token), "created_at": utcnow()}

        def insert(conn: Connection) -> None:
            exists = conn.execute(sa.select(_labellers.c.id).where(_labellers.c.name == name)).first()
            if exists is not None:
                raise ValueError(f"name: a labeller called {name!r} already exists")
            conn.execute(_labellers.insert().values(**values))

        try:
            self._write(insert)
        except sa.exc.IntegrityError as err:  # lost a race with another process adding the same name
            raise ValueError(f"name: a labeller called {name!r} already exists") from err
        return token

    def authenticate(self, token: str) -> Labeller | None:
        """The labeller whose token this is, or ``None``."""
        if not isinstance(token, str) or not token:
            return None
        stmt = sa.select(_labellers).where(_labellers.c.token_hash == _hash_token(token))
        row = self._read(lambda conn: conn.execute(stmt).first())
        return None if row is None else _labeller_from_row(row)

    def redeem_token(self, token: str) -> Labeller | None:
        """Exchange a one-time login token: the labeller it belongs to, or ``None``.

        The stored hash is replaced by that of a fresh secret nobody knows, in one
        conditional UPDATE, so a token logs in at most once even when two requests race.
        """
        labeller = self.authenticate(token)
        if labeller is None:
            return None
        old, new = _hash_token(token), _hash_token(secrets.token_urlsafe(32))

        def consume(conn: Connection) -> int:
            stmt = _labellers.update().where(_labellers.c.token_hash == old).values(token_hash=new)
            return conn.execute(stmt).rowcount

        return labeller if self._write(consume) == 1 else None

    def reissue_token(self, name: str) -> str:
        """A new login token for an existing labeller (the previous one stops working)."""
        token = secrets.token_urlsafe(32)

        def update(conn: Connection) -> int:
            stmt = _labellers.update().where(_labellers.c.name == name).values(token_hash=_hash_token(token))
            return conn.execute(stmt).rowcount

        if self._write(update) != 1:
            raise KeyError(f"no labeller called {name!r}")
        return token

    def labellers(self) -> list[Labeller]:
        """All registered labellers, in order of registration."""
        stmt = sa.select(_labellers).order_by(_labellers.c.id)
        return self._read(lambda conn: [_labeller_from_row(r) for r in conn.execute(stmt)])
