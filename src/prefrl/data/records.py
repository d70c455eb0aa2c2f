"""The store's records: segments, text pairs and the comparisons made of them.

Every ``add_*s`` batch is one transaction (all or nothing), and bad input raises
``ValueError`` naming the record and field before anything is written.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from prefrl.data import schema
from prefrl.data.database import Database, chunks, missing_ids
from prefrl.data.schema import check_id, check_int, check_name
from prefrl.data.types import Comparison, Segment, TextPair, utcnow

__all__ = ["RecordStore"]

ComparisonKind = Literal["any", "segment", "text"]


class RecordStore(Database):
    """Segments, text pairs and comparisons (the part of :class:`PreferenceStore` that trains rewards)."""

    def _insert_all(
        self,
        table: sa.Table,
        rows: list[dict[str, Any]],
        records: Sequence[Any],
        check_references: bool = False,
    ) -> list[int]:
        """Insert validated ``rows`` in one transaction (all or none); set each record's ``id``."""

        def insert(conn: Connection) -> list[int]:
            if check_references:
                self._check_references(conn, rows)
            return [int(conn.execute(table.insert().values(**row)).inserted_primary_key[0]) for row in rows]

        ids = self._write(insert) if rows else []
        for record, record_id in zip(records, ids):
            record.id = record_id
        return ids

    @classmethod
    def _check_references(cls, conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
        """``ValueError`` naming the field when a row refers to a segment or text pair that does not exist."""
        for field_name, table in (
            ("left_id", schema.segments),
            ("right_id", schema.segments),
            ("text_pair_id", schema.text_pairs),
        ):
            missing = missing_ids(conn, table, (r[field_name] for r in rows if r[field_name] is not None))
            if missing:
                raise ValueError(
                    f"{field_name}: unknown {table.name[:-1].replace('_', ' ')} id(s) {sorted(missing)[:10]}"
                )

    # ---- segments -----------------------------------------------------------------------

    def add_segment(self, seg: Segment) -> int:
        """Store one segment and return its id (also set on ``seg.id``)."""
        return self.add_segments([seg])[0]

    def add_segments(self, segs: Sequence[Segment]) -> list[int]:
        """Store segments atomically (all or none) and return their ids, in order.

        Raises ``ValueError`` naming the segment and field for malformed input (NaN,
        mismatched lengths, non-numeric dtypes, non-JSON meta); nothing is written then.
        """
        rows = [schema.segment_row(seg, i) for i, seg in enumerate(segs)]
        return self._insert_all(schema.segments, rows, segs)

    def get_segment(self, segment_id: int) -> Segment:
        """The segment with this id; ``KeyError`` if there is none."""
        return self.get_segments([segment_id])[0]

    def get_segments(self, ids: Sequence[int]) -> list[Segment]:
        """Segments for ``ids`` in the same order (repeats allowed); ``KeyError`` naming missing ids."""
        ids = [check_id(i, "segment id") for i in ids]
        by_id = self._read(lambda conn: _load_segments(conn, ids))
        return [by_id[i] for i in ids]

    def count_segments(self) -> int:
        """Number of stored segments."""
        return self._count(schema.segments)

    # ---- text pairs ---------------------------------------------------------------------

    def add_text_pair(self, pair: TextPair) -> int:
        """Store a prompt with two responses; returns its id (also set on ``pair.id``)."""
        return self.add_text_pairs([pair])[0]

    def add_text_pairs(self, pairs: Sequence[TextPair]) -> list[int]:
        """Store text pairs atomically (all or none); returns ids in order."""
        rows = [schema.text_pair_row(p, i) for i, p in enumerate(pairs)]
        return self._insert_all(schema.text_pairs, rows, pairs)

    def get_text_pair(self, pair_id: int) -> TextPair:
        """The text pair with this id; ``KeyError`` if there is none."""
        return schema.text_pair_from_row(self._get(schema.text_pairs, pair_id, "text_pair_id", "text pair"))

    def text_pairs(self, meta: dict[str, Any] | None = None, *, since_id: int | None = None) -> list[TextPair]:
        """Stored text pairs, oldest first: those whose ``meta`` holds every key/value of ``meta``
        (e.g. ``{"run": run_id, "round": 3}``), with an id above ``since_id``."""
        t = schema.text_pairs
        stmt = sa.select(t).order_by(t.c.id)
        if since_id is not None:
            stmt = stmt.where(t.c.id > check_int(since_id, "since_id"))
        wanted = dict(meta or {})
        if wanted:  # narrow in SQL on the JSON text, then match exactly on the decoded meta
            for key in wanted:
                stmt = stmt.where(t.c.meta.contains(json.dumps(str(key))))

        def load(conn: Connection) -> list[TextPair]:
            pairs = [schema.text_pair_from_row(row) for row in conn.execute(stmt)]
            return [p for p in pairs if all(k in p.meta and p.meta[k] == v for k, v in wanted.items())]

        return self._read(load)

    def count_text_pairs(self) -> int:
        """Number of stored text pairs."""
        return self._count(schema.text_pairs)

    # ---- who trains the reward ------------------------------------------------------------

    def exclude_labeller(self, name: str) -> None:
        """Leave ``name``'s answers out of reward training from now on; they stay in the store.

        ``KeyError`` when no labeller is registered under that name and no answer carries it
        (a typo would otherwise exclude nobody).
        """
        name = check_name(name, "name")
        t, c, lab = schema.excluded_labellers, schema.comparisons.c, schema.labellers

        def exclude(conn: Connection) -> None:
            known = conn.execute(sa.select(lab.c.id).where(lab.c.name == name)).first() is not None
            known = known or conn.execute(sa.select(c.id).where(c.labeller == name).limit(1)).first() is not None
            if not known:
                raise KeyError(f"no labeller and no answers called {name!r}")
            if conn.execute(sa.select(t.c.name).where(t.c.name == name)).first() is None:
                conn.execute(t.insert().values(name=name, excluded_at=utcnow()))

        self._write(exclude)

    def include_labeller(self, name: str) -> None:
        """Undo :meth:`exclude_labeller`: ``name``'s answers train the reward again."""
        t = schema.excluded_labellers
        self._write(lambda conn: conn.execute(t.delete().where(t.c.name == name)))

    def excluded_labellers(self) -> list[str]:
        """The names whose answers reward training leaves out, alphabetically."""
        t = schema.excluded_labellers
        return self._read(lambda conn: list(conn.execute(sa.select(t.c.name).order_by(t.c.name)).scalars()))

    # ---- comparisons --------------------------------------------------------------------

    def add_comparison(
        self, left_id: int, right_id: int, mu: float | None, teacher: str, labeller: str | None = None
    ) -> int:
        """Store the answer μ (mass on the left segment, ``None`` = incomparable) and return its id."""
        return self.add_comparisons(
            [Comparison(mu=mu, teacher=teacher, left_id=left_id, right_id=right_id, labeller=labeller)]
        )[0]

    def add_text_comparison(
        self, pair_id: int, mu: float | None, teacher: str, labeller: str | None = None
    ) -> int:
        """Store μ (mass on ``response_a``; ``None`` = incomparable) for a text pair; returns its id."""
        return self.add_comparisons(
            [Comparison(mu=mu, teacher=teacher, text_pair_id=pair_id, labeller=labeller)]
        )[0]

    def add_comparisons(self, comparisons: Sequence[Comparison]) -> list[int]:
        """Store comparisons of segments or text pairs atomically (all or none); returns ids in order.

        ``created_at`` is kept as given (a naive datetime is taken as UTC). ``ValueError``
        names the offending comparison and field: μ ∉ {1, 0, 0.5, None}, unknown ids, a
        segment compared with itself, both or neither of segment ids / text pair id.
        """
        rows = [schema.comparison_row(c, i) for i, c in enumerate(comparisons)]
        return self._insert_all(schema.comparisons, rows, comparisons, check_references=True)

    def get_comparison(self, comparison_id: int) -> Comparison:
        """The comparison with this id; ``KeyError`` if there is none."""
        row = self._get(schema.comparisons, comparison_id, "comparison_id", "comparison")
        return schema.comparison_from_row(row)

    def comparisons(
        self,
        include_incomparable: bool = True,
        since_id: int | None = None,
        *,
        labeller: str | None = None,
        teacher: str | None = None,
        kind: ComparisonKind = "any",
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
        c = schema.comparisons.c
        where = _comparison_filter(include_incomparable, since_id, labeller, teacher, kind)
        if query_id is not None:
            where.append(c.query_id == check_id(query_id, "query_id"))
        stmt = sa.select(schema.comparisons).where(*where)
        stmt = stmt.order_by(c.id.desc() if newest_first else c.id)
        if limit is not None:
            stmt = stmt.limit(check_int(limit, "limit"))
        return self._read(lambda conn: [schema.comparison_from_row(r) for r in conn.execute(stmt)])

    def comparisons_of(
        self, *, left_id: int | None = None, right_id: int | None = None, text_pair_id: int | None = None
    ) -> list[Comparison]:
        """Every answer about one item, oldest first, for agreement statistics between labellers.

        For a segment pair both orders are returned (μ of a reversed pair is about ``right_id``).
        """
        c = schema.comparisons.c
        if text_pair_id is not None:
            if left_id is not None or right_id is not None:
                raise ValueError("set either left_id and right_id or text_pair_id, not both")
            cond = c.text_pair_id == check_id(text_pair_id, "text_pair_id")
        else:
            if left_id is None or right_id is None:
                raise ValueError("left_id and right_id must both be set (or text_pair_id)")
            a, b = check_id(left_id, "left_id"), check_id(right_id, "right_id")
            cond = sa.or_(sa.and_(c.left_id == a, c.right_id == b), sa.and_(c.left_id == b, c.right_id == a))
        stmt = sa.select(schema.comparisons).where(cond).order_by(c.id)
        return self._read(lambda conn: [schema.comparison_from_row(r) for r in conn.execute(stmt)])

    def count_comparisons(self, include_incomparable: bool = True) -> int:
        """Number of stored comparisons (segment and text), optionally without μ = None ones."""
        return self._count(schema.comparisons, *_comparison_filter(include_incomparable))

    def training_pairs(
        self, since_id: int | None = None, segment_cache: dict[int, Segment] | None = None
    ) -> list[tuple[Segment, Segment, float]]:
        """(σ¹, σ², μ) for every segment comparison with μ ≠ None (after ``since_id``), oldest first,
        leaving out the answers of excluded labellers (:meth:`exclude_labeller`).

        ``segment_cache`` (segment id → Segment, filled here): segments already in it are not read
        again (a stored segment never changes), so a caller asking every round decodes only the new
        ones. The comparisons themselves are read every time (an answer can be undone, a labeller excluded).
        """
        c = schema.comparisons.c
        stmt = sa.select(c.left_id, c.right_id, c.mu)
        stmt = stmt.where(*_comparison_filter(False, since_id, kind="segment"), _not_excluded()).order_by(c.id)

        def load(conn: Connection) -> list[tuple[Segment, Segment, float]]:
            rows = conn.execute(stmt).all()
            ids = [r.left_id for r in rows] + [r.right_id for r in rows]
            if segment_cache is None:
                segs = _load_segments(conn, ids)
            else:
                missing = [i for i in ids if i not in segment_cache]
                if missing:
                    segment_cache.update(_load_segments(conn, missing))
                segs = segment_cache
            return [(segs[r.left_id], segs[r.right_id], float(r.mu)) for r in rows]

        return self._read(load)

    def text_preferences(self, since_id: int | None = None) -> list[tuple[TextPair, float]]:
        """(pair, μ) for every answered, comparable text comparison (after ``since_id``), oldest first,
        leaving out the answers of excluded labellers."""
        c = schema.comparisons.c
        stmt = sa.select(c.text_pair_id, c.mu)
        stmt = stmt.where(*_comparison_filter(False, since_id, kind="text"), _not_excluded()).order_by(c.id)

        def load(conn: Connection) -> list[tuple[TextPair, float]]:
            rows = conn.execute(stmt).all()
            t = schema.text_pairs
            pairs: dict[int, TextPair] = {}
            for chunk in chunks(sorted({r.text_pair_id for r in rows})):
                for row in conn.execute(sa.select(t).where(t.c.id.in_(chunk))):
                    pairs[int(row.id)] = schema.text_pair_from_row(row)
            return [(pairs[r.text_pair_id], float(r.mu)) for r in rows]

        return self._read(load)


def _load_segments(conn: Connection, ids: Iterable[int]) -> dict[int, Segment]:
    wanted = sorted(set(ids))
    by_id: dict[int, Segment] = {}
    s = schema.segments
    for chunk in chunks(wanted):
        for row in conn.execute(sa.select(s).where(s.c.id.in_(chunk))):
            by_id[int(row.id)] = schema.segment_from_row(row)
    missing = set(wanted) - set(by_id)
    if missing:
        raise KeyError(f"no segment with id {sorted(missing)[:10]}")
    return by_id


def _not_excluded() -> sa.ColumnElement[bool]:
    """Comparisons whose labeller (if any) is not excluded from reward training."""
    c = schema.comparisons.c
    excluded = sa.select(schema.excluded_labellers.c.name)
    return sa.or_(c.labeller.is_(None), c.labeller.not_in(excluded))


def _comparison_filter(
    include_incomparable: bool = True,
    since_id: int | None = None,
    labeller: str | None = None,
    teacher: str | None = None,
    kind: ComparisonKind = "any",
) -> list[sa.ColumnElement[bool]]:
    c = schema.comparisons.c
    where: list[sa.ColumnElement[bool]] = []
    if not include_incomparable:
        where.append(c.mu.is_not(None))
    if since_id is not None:
        where.append(c.id > check_int(since_id, "since_id"))
    if labeller is not None:
        where.append(c.labeller == labeller)
    if teacher is not None:
        where.append(c.teacher == teacher)
    if kind == "segment":
        where.append(c.left_id.is_not(None))
    elif kind == "text":
        where.append(c.text_pair_id.is_not(None))
    elif kind != "any":
        raise ValueError(f"kind must be 'any', 'segment' or 'text', got {kind!r}")
    return where
