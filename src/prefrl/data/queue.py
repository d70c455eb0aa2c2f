"""The query queue: pairs waiting for a person's answer, leased to one labeller at a time.

add → lease → answer (or release, or let the lease lapse) → undo within a window. Leases are
taken with a conditional ``UPDATE … WHERE status/lease condition`` whose row count is
checked, which is atomic on both SQLite and PostgreSQL: no two labellers ever hold a live
lease on one query. Each step is one transaction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from prefrl.data import schema
from prefrl.data.database import row_by_id
from prefrl.data.records import RecordStore
from prefrl.data.schema import (
    MAX_SECONDS,
    check_id,
    check_int,
    check_name,
    check_optional_name,
    check_positive,
)
from prefrl.data.types import QUERY_STATUSES, Comparison, Query, QueryStatus, TextPair, check_mu, utcnow

__all__ = ["LeaseError", "QueryQueue"]


class LeaseError(ValueError):
    """A query lease that is not the caller's: someone else's, expired, released, or already answered."""


class QueryQueue(RecordStore):
    """Labelling queries over the stored records (the part of :class:`PreferenceStore` people use)."""

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
        row = schema.comparison_row(
            Comparison(
                mu=None, teacher="query", left_id=left_id, right_id=right_id, text_pair_id=text_pair_id
            )
        )
        priority = _check_priority(priority)
        values = {
            "left_id": row["left_id"],
            "right_id": row["right_id"],
            "text_pair_id": row["text_pair_id"],
            "priority": priority,
            "status": "pending",
            "leased_to": None,
            "lease_expires_at": None,
            "created_at": utcnow(),
            "labeller": check_optional_name(labeller, "labeller"),
        }

        def insert(conn: Connection) -> int:
            self._check_references(conn, [row])
            return int(conn.execute(schema.queries.insert().values(**values)).inserted_primary_key[0])

        return self._write(insert)

    def add_text_queries(
        self, pairs: Sequence[TextPair], priority: float = 0.0, labeller: str | None = None
    ) -> list[int]:
        """Store text pairs and queue one query per pair, in one transaction (all or nothing).

        Sets each pair's ``id``; returns the query ids in order. ``priority`` and ``labeller`` as
        in :meth:`add_query`. A run that posts its pairs this way never leaves a stored pair that
        nobody is asked about.
        """
        rows = [schema.text_pair_row(p, i) for i, p in enumerate(pairs)]
        priority = _check_priority(priority)
        labeller = check_optional_name(labeller, "labeller")

        def insert(conn: Connection) -> tuple[list[int], list[int]]:
            pair_ids, query_ids = [], []
            for row in rows:
                pair_id = int(conn.execute(schema.text_pairs.insert().values(**row)).inserted_primary_key[0])
                query = {"left_id": None, "right_id": None, "text_pair_id": pair_id, "priority": priority,
                         "status": "pending", "leased_to": None, "lease_expires_at": None,
                         "created_at": utcnow(), "labeller": labeller}
                query_ids.append(int(conn.execute(schema.queries.insert().values(**query)).inserted_primary_key[0]))
                pair_ids.append(pair_id)
            return pair_ids, query_ids

        pair_ids, query_ids = self._write(insert) if rows else ([], [])
        for pair, pair_id in zip(pairs, pair_ids):
            pair.id = pair_id
        return query_ids

    def get_query(self, query_id: int) -> Query:
        """The query with this id; ``KeyError`` if there is none."""
        return schema.query_from_row(self._get(schema.queries, query_id, "query_id", "query"), utcnow())

    def queries(
        self, status: QueryStatus | None = None, *, limit: int | None = None, labeller: str | None = None
    ) -> list[Query]:
        """Queries (optionally only those with this status now), highest priority first.

        A query whose lease has lapsed is reported (and counted) as "pending": anyone may lease it.
        With ``labeller``, only the queries that labeller may lease (unrestricted or theirs):
        ``queries("pending", labeller=name)`` is their queue, in the order they will get it.
        """
        now = utcnow()
        q = schema.queries.c
        where = _status_filter(status, now)
        if labeller is not None:
            where.append(sa.or_(q.labeller.is_(None), q.labeller == check_name(labeller, "labeller")))
        stmt = sa.select(schema.queries).where(*where).order_by(q.priority.desc(), q.id)
        if limit is not None:
            stmt = stmt.limit(check_int(limit, "limit"))
        return self._read(lambda conn: [schema.query_from_row(r, now) for r in conn.execute(stmt)])

    def count_queries(self, status: QueryStatus | None = None) -> int:
        """Number of queries, optionally of one status now ("pending", "leased", "answered")."""
        return self._count(schema.queries, *_status_filter(status, utcnow()))

    def lease_query(
        self, labeller: str, lease_seconds: float = 300.0, prefer_query_id: int | None = None
    ) -> Query | None:
        """Lease the highest-priority free query to ``labeller``; ``None`` when there is none.

        A query is free when it is pending or its lease has lapsed, and it is not restricted
        to another labeller. If ``labeller`` already holds a live lease, that query is
        returned (its lease unchanged). Atomic: the lease is taken with a conditional UPDATE
        whose row count is checked, so two labellers never hold a live lease on one query.
        ``prefer_query_id``: lease that query if it is still free for ``labeller`` (e.g. the
        pair whose clips the page has already loaded), else the highest-priority one.
        """
        labeller = check_name(labeller, "labeller")
        lease_seconds = check_positive(lease_seconds, "lease_seconds", MAX_SECONDS)
        prefer = None if prefer_query_id is None else check_id(prefer_query_id, "prefer_query_id")
        return self._write(lambda conn: _lease(conn, labeller, lease_seconds, utcnow(), prefer))

    def answer_query(
        self, query_id: int, labeller: str, mu: float | None, teacher: str = "human"
    ) -> Comparison:
        """Store ``labeller``'s answer μ to a query they lease and mark it answered, in one transaction.

        ``mu=None`` records "can't tell" (stored, not used for training). Raises
        ``LeaseError`` when the lease is not this labeller's, has expired, or the query is
        already answered (a replayed submission), and ``ValueError`` for a bad μ.
        """
        query_id = check_id(query_id, "query_id")
        labeller = check_name(labeller, "labeller")
        mu = check_mu(mu)
        teacher = check_name(teacher, "teacher")

        return self._write(lambda conn: _answer(conn, query_id, labeller, mu, teacher, utcnow()))

    def answer_and_lease_next(
        self, query_id: int, labeller: str, mu: float | None, lease_seconds: float = 300.0, teacher: str = "human",
        prefer_query_id: int | None = None,
    ) -> tuple[Comparison, Query | None]:
        """:meth:`answer_query`, then :meth:`lease_query` for the same labeller (with its
        ``prefer_query_id``), in one transaction: the answer is stored and the next pair leased
        together, or neither happens."""
        query_id = check_id(query_id, "query_id")
        prefer = None if prefer_query_id is None else check_id(prefer_query_id, "prefer_query_id")
        labeller = check_name(labeller, "labeller")
        mu = check_mu(mu)
        teacher = check_name(teacher, "teacher")
        lease_seconds = check_positive(lease_seconds, "lease_seconds", MAX_SECONDS)

        def answer_then_lease(conn: Connection) -> tuple[Comparison, Query | None]:
            now = utcnow()
            comparison = _answer(conn, query_id, labeller, mu, teacher, now)
            return comparison, _lease(conn, labeller, lease_seconds, now, prefer)

        return self._write(answer_then_lease)

    def release_query(self, query_id: int, labeller: str) -> None:
        """Give back a live lease unanswered (e.g. the labeller skipped it); ``LeaseError`` if not held."""
        query_id = check_id(query_id, "query_id")
        labeller = check_name(labeller, "labeller")
        self._write(lambda conn: _end_lease(conn, query_id, labeller, utcnow(), status="pending", leased_to=None))

    def undo_answer(
        self,
        comparison_id: int,
        labeller: str,
        window_seconds: float = 30.0,
        *,
        release_query_id: int | None = None,
    ) -> Query | None:
        """Delete ``labeller``'s comparison made less than ``window_seconds`` ago.

        Its query (if it came from one) goes back to "pending" and is returned. With
        ``release_query_id`` (the pair the labeller is looking at now), that query's lease is
        given back in the same transaction, so the undone pair is the next one leased; a lease
        that has lapsed or is not theirs is left alone. Raises ``LeaseError`` for an unknown
        comparison or query, someone else's comparison, or one older than the window; then
        nothing changes.
        """
        comparison_id = check_id(comparison_id, "comparison_id")
        labeller = check_name(labeller, "labeller")
        window_seconds = check_positive(window_seconds, "window_seconds", MAX_SECONDS)
        if release_query_id is not None:
            release_query_id = check_id(release_query_id, "release_query_id")
        return self._write(
            lambda conn: _undo(conn, comparison_id, labeller, window_seconds, release_query_id, utcnow())
        )


    def undo_and_lease_next(
        self,
        comparison_id: int,
        labeller: str,
        window_seconds: float = 30.0,
        lease_seconds: float = 300.0,
        *,
        release_query_id: int | None = None,
    ) -> Query | None:
        """:meth:`undo_answer`, then :meth:`lease_query` for the same labeller, in one transaction;
        returns the query now leased to them (usually the undone one)."""
        comparison_id = check_id(comparison_id, "comparison_id")
        labeller = check_name(labeller, "labeller")
        window_seconds = check_positive(window_seconds, "window_seconds", MAX_SECONDS)
        lease_seconds = check_positive(lease_seconds, "lease_seconds", MAX_SECONDS)
        if release_query_id is not None:
            release_query_id = check_id(release_query_id, "release_query_id")

        def undo_then_lease(conn: Connection) -> Query | None:
            now = utcnow()
            _undo(conn, comparison_id, labeller, window_seconds, release_query_id, now)
            return _lease(conn, labeller, lease_seconds, now)

        return self._write(undo_then_lease)


def _check_priority(priority: object) -> float:
    """A query priority as a finite float; ValueError naming the field otherwise."""
    try:
        value = float(priority)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"priority must be a finite number, got {priority!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"priority must be a finite number, got {priority!r}")
    return value


def _free(now: datetime) -> sa.ColumnElement[bool]:
    """A query anyone may lease now: pending, or leased with a lapsed lease."""
    q = schema.queries.c
    return sa.or_(q.status == "pending", sa.and_(q.status == "leased", q.lease_expires_at <= now))


def _status_filter(status: str | None, now: datetime) -> list[sa.ColumnElement[bool]]:
    """WHERE clauses for a query's status *now*: a lapsed lease counts as "pending"."""
    if status is None:
        return []
    if status not in QUERY_STATUSES:
        raise ValueError(f"status must be one of {QUERY_STATUSES} or None, got {status!r}")
    q = schema.queries.c
    if status == "pending":
        return [_free(now)]
    if status == "leased":
        return [q.status == "leased", q.lease_expires_at > now]
    return [q.status == "answered"]


def _end_lease(
    conn: Connection, query_id: int, labeller: str, now: datetime, *, status: str, leased_to: str | None
) -> None:
    """Move ``labeller``'s live lease on ``query_id`` to ``status``; ``LeaseError`` saying why if none."""
    q = schema.queries.c
    done = conn.execute(
        schema.queries.update()
        .where(q.id == query_id, q.status == "leased", q.leased_to == labeller, q.lease_expires_at > now)
        .values(status=status, leased_to=leased_to, lease_expires_at=None)
    )
    if done.rowcount == 1:
        return
    row = row_by_id(conn, schema.queries, query_id)
    if row is None:
        raise LeaseError(f"query_id: no query with id {query_id}")
    if row.status == "answered":
        raise LeaseError(f"query {query_id} is already answered")
    if row.status == "pending" or row.leased_to != labeller:
        raise LeaseError(f"query {query_id} is not leased to {labeller!r}")
    raise LeaseError(f"the lease of {labeller!r} on query {query_id} expired at {row.lease_expires_at}")


def _lease(
    conn: Connection, labeller: str, lease_seconds: float, now: datetime, prefer: int | None = None
) -> Query | None:
    """The body of :meth:`QueryQueue.lease_query`, inside the caller's transaction."""
    q = schema.queries.c
    held = conn.execute(
        sa.select(schema.queries)
        .where(q.status == "leased", q.leased_to == labeller, q.lease_expires_at > now)
        .order_by(q.priority.desc(), q.id)
        .limit(1)
    ).first()
    if held is not None:
        return schema.query_from_row(held, now)
    mine = sa.or_(q.labeller.is_(None), q.labeller == labeller)
    for attempt in range(1000):  # each miss means another labeller just took that query
        if attempt == 0 and prefer is not None:
            candidate = prefer  # free and allowed to this labeller, or the UPDATE below misses
        else:
            candidate = conn.execute(
                sa.select(q.id).where(_free(now), mine).order_by(q.priority.desc(), q.id).limit(1)
            ).scalar()
        if candidate is None:
            return None
        taken = conn.execute(
            schema.queries.update()
            .where(q.id == candidate, _free(now), mine)
            .values(
                status="leased",
                leased_to=labeller,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
            )
        )
        if taken.rowcount == 1:
            return schema.query_from_row(row_by_id(conn, schema.queries, candidate), now)
    raise RuntimeError("lease_query: too much contention, gave up")


def _answer(
    conn: Connection, query_id: int, labeller: str, mu: float | None, teacher: str, now: datetime
) -> Comparison:
    """The body of :meth:`QueryQueue.answer_query`, inside the caller's transaction."""
    _end_lease(conn, query_id, labeller, now, status="answered", leased_to=labeller)
    row = row_by_id(conn, schema.queries, query_id)
    comparison = Comparison(
        mu=mu,
        teacher=teacher,
        left_id=row.left_id,
        right_id=row.right_id,
        text_pair_id=row.text_pair_id,
        created_at=now,
        labeller=labeller,
    )
    values = {**schema.comparison_row(comparison), "query_id": query_id}
    comparison.id = int(
        conn.execute(schema.comparisons.insert().values(**values)).inserted_primary_key[0]
    )
    return comparison


def _undo(
    conn: Connection,
    comparison_id: int,
    labeller: str,
    window_seconds: float,
    release_query_id: int | None,
    now: datetime,
) -> Query | None:
    """The body of :meth:`QueryQueue.undo_answer`, inside the caller's transaction."""
    c, q = schema.comparisons.c, schema.queries.c
    row = row_by_id(conn, schema.comparisons, comparison_id)
    if row is None:
        raise LeaseError(f"comparison_id: no comparison with id {comparison_id}")
    if row.labeller != labeller:
        raise LeaseError(f"comparison {comparison_id} was not made by {labeller!r}")
    if release_query_id is not None and row_by_id(conn, schema.queries, release_query_id) is None:
        raise LeaseError(f"release_query_id: no query with id {release_query_id}")
    cutoff = now - timedelta(seconds=window_seconds)
    deleted = conn.execute(
        schema.comparisons.delete().where(
            c.id == comparison_id, c.labeller == labeller, c.created_at >= cutoff
        )
    )
    if deleted.rowcount != 1:
        raise LeaseError(
            f"comparison {comparison_id} is older than the undo window of {window_seconds} s"
        )
    if release_query_id is not None:
        try:
            _end_lease(conn, release_query_id, labeller, now, status="pending", leased_to=None)
        except LeaseError:
            pass  # lapsed or never held: nothing to give back
    if row.query_id is None:
        return None
    conn.execute(
        schema.queries.update()
        .where(q.id == row.query_id, q.status == "answered")
        .values(status="pending", leased_to=None, lease_expires_at=None)
    )
    return schema.query_from_row(row_by_id(conn, schema.queries, row.query_id), now)
