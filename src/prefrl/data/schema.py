"""The store's tables and row codecs: how each record becomes a row and comes back.

Arrays are stored as ``np.save`` bytes (dtype, shape and memory order kept exactly),
zlib-compressed; ``meta`` dictionaries as JSON (so tuples come back as lists).

A ``*_row`` function validates one record and returns the values of its row, raising
``ValueError`` that names the record (``segments[3]: …``) and the field; nothing touches the
database here, so a batch is checked whole before its transaction starts. A ``*_from_row``
function turns a fetched row back into the record. :mod:`prefrl.data.io` uses the same
codecs to check a dump before it imports anything.
"""

from __future__ import annotations

import io
import json
import math
import zlib
from datetime import datetime, timezone
from typing import Any

import numpy as np
import sqlalchemy as sa

from prefrl.data.types import Comparison, Labeller, Query, Segment, TextPair, check_mu, utcnow

__all__ = [
    "SCHEMA_VERSION",
    "metadata",
    "schema_info",
    "segments",
    "text_pairs",
    "queries",
    "comparisons",
    "labellers",
    "excluded_labellers",
    "encode_array",
    "decode_array",
    "segment_row",
    "segment_from_row",
    "text_pair_row",
    "text_pair_from_row",
    "comparison_row",
    "comparison_from_row",
    "query_from_row",
    "labeller_from_row",
    "MAX_INT",
    "MAX_ID",
    "MAX_SECONDS",
    "check_int",
    "check_id",
    "check_name",
    "check_optional_name",
    "check_labeller_name",
    "check_positive",
    "dump_meta",
]

#: Bumped whenever the tables change; a store refuses a database written by a newer schema and
#: adds the columns an older one lacks (each new column has a server default).
#: 2: ``labellers.session_key`` and ``labellers.disabled`` (sessions that really end, issue #14);
#:    the ``excluded_labellers`` table (answers kept but left out of reward training).
SCHEMA_VERSION = 2

#: Longest name (labeller, teacher, env id) a row holds.
MAX_NAME_LENGTH = 200
#: Largest integer a BigInteger column holds (signed 64-bit on SQLite and PostgreSQL).
MAX_INT = 2**63 - 1
#: Largest id: id columns are ``Integer``, which PostgreSQL keeps in 32 bits.
MAX_ID = 2**31 - 1
#: Longest duration (lease, undo window) accepted: ten years, well inside ``datetime``'s range.
MAX_SECONDS = 10 * 365 * 86400.0


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


metadata = sa.MetaData()

schema_info = sa.Table(
    "prefrl_schema",
    metadata,
    sa.Column("key", sa.String(50), primary_key=True),
    sa.Column("value", sa.String(200), nullable=False),
)

segments = sa.Table(
    "segments",
    metadata,
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

text_pairs = sa.Table(
    "text_pairs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("prompt", sa.Text, nullable=False),
    sa.Column("response_a", sa.Text, nullable=False),
    sa.Column("response_b", sa.Text, nullable=False),
    sa.Column("meta", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

queries = sa.Table(
    "queries",
    metadata,
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

comparisons = sa.Table(
    "comparisons",
    metadata,
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

labellers = sa.Table(
    "labellers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # Every session cookie names the key it was issued under; a new key ends them all at once.
    sa.Column("session_key", sa.String(64), nullable=False, server_default=""),
    sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
)

# Names, not ids: an answer names its labeller, who need not be registered (an AI judge, a
# removed person). Their comparisons stay in the store but reward training leaves them out.
excluded_labellers = sa.Table(
    "excluded_labellers",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("excluded_at", UTCDateTime, nullable=False),
)


# ---- arrays ---------------------------------------------------------------------------


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


# ---- field checks ---------------------------------------------------------------------


def dump_meta(meta: Any, field_name: str = "meta") -> str:
    """``meta`` as JSON text; ``ValueError`` unless it is a JSON-serialisable dict."""
    if not isinstance(meta, dict):
        raise ValueError(f"{field_name} must be a dict, got {type(meta).__name__}")
    try:
        return json.dumps(meta, allow_nan=False, sort_keys=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{field_name} must be JSON-serialisable: {err}") from err


def check_int(value: Any, field_name: str) -> int:
    """``value`` as an ``int`` (numpy integers too, never ``bool``) that a 64-bit column holds."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{field_name} must be an integer, got {value!r}")
    value = int(value)
    if not -MAX_INT <= value <= MAX_INT:
        raise ValueError(f"{field_name} is out of range (|{field_name}| ≤ 2**63 - 1), got {value}")
    return value


def check_id(value: Any, field_name: str) -> int:
    """A positive integer id, at most :data:`MAX_ID`."""
    value = check_int(value, field_name)
    if value < 1:
        raise ValueError(f"{field_name} must be a positive id, got {value}")
    if value > MAX_ID:
        raise ValueError(f"{field_name} must be an id of at most {MAX_ID}, got {value}")
    return value


def check_name(value: Any, field_name: str) -> str:
    """A non-empty string of at most :data:`MAX_NAME_LENGTH` characters."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{field_name} must be a non-empty string, got {value!r}")
    if len(value) > MAX_NAME_LENGTH:
        raise ValueError(f"{field_name} is longer than {MAX_NAME_LENGTH} characters")
    return value


#: Longest labeller name (it is shown on pages and in the admin's tables).
MAX_LABELLER_NAME_LENGTH = 64


def check_labeller_name(value: Any, field_name: str = "name") -> str:
    """A labeller's name: printable characters only, no surrounding spaces, at most 64 of them."""
    value = check_name(value, field_name)
    if len(value) > MAX_LABELLER_NAME_LENGTH:
        raise ValueError(f"{field_name} is longer than {MAX_LABELLER_NAME_LENGTH} characters")
    if not value.isprintable():
        raise ValueError(f"{field_name} may hold printable characters only, got {value!r}")
    if value != value.strip():
        raise ValueError(f"{field_name} must not start or end with a space, got {value!r}")
    return value


def check_optional_name(value: Any, field_name: str) -> str | None:
    """``None`` or a name (:func:`check_name`)."""
    return None if value is None else check_name(value, field_name)


def check_positive(value: Any, field_name: str, maximum: float = math.inf) -> float:
    """A finite number in (0, ``maximum``]."""
    try:
        value = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{field_name} must be a positive number, got {value!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{field_name} must be a positive number, got {value!r}")
    if value > maximum:
        raise ValueError(f"{field_name} must be at most {maximum:g}, got {value!r}")
    return value


# ---- row codecs -----------------------------------------------------------------------


def _where(kind: str, index: int | None) -> str:
    return "" if index is None else f"{kind}[{index}]: "


def segment_row(seg: Segment, index: int | None = None) -> dict[str, Any]:
    """The ``segments`` row of a valid segment (``index`` names it in errors)."""
    where = _where("segments", index)
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
    if not isinstance(seg.env_id, str) or len(seg.env_id) > MAX_NAME_LENGTH:
        raise ValueError(
            f"{where}env_id must be a string of at most {MAX_NAME_LENGTH} characters, got {seg.env_id!r}"
        )
    return {
        "length": len(seg),
        **arrays,
        "env_id": seg.env_id,
        "policy_version": check_int(seg.policy_version, f"{where}policy_version"),
        "episode": check_int(seg.episode, f"{where}episode"),
        "start_step": check_int(seg.start_step, f"{where}start_step"),
        "meta": dump_meta(seg.meta, f"{where}meta"),
        "created_at": utcnow(),
    }


def segment_from_row(row: Any) -> Segment:
    """The segment of a ``segments`` row."""
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


def text_pair_row(pair: TextPair, index: int | None = None) -> dict[str, Any]:
    """The ``text_pairs`` row of a valid text pair."""
    where = _where("text_pairs", index)
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
        "meta": dump_meta(pair.meta, f"{where}meta"),
        "created_at": utcnow(),
    }


def text_pair_from_row(row: Any) -> TextPair:
    """The text pair of a ``text_pairs`` row."""
    return TextPair(
        prompt=row.prompt,
        response_a=row.response_a,
        response_b=row.response_b,
        meta=json.loads(row.meta),
        id=int(row.id),
    )


def comparison_row(comp: Comparison, index: int | None = None) -> dict[str, Any]:
    """The ``comparisons`` row of a valid comparison (its ids are checked to exist separately)."""
    where = _where("comparisons", index)
    if not isinstance(comp, Comparison):
        raise ValueError(f"{where}expected a Comparison, got {type(comp).__name__}")
    mu = check_mu(comp.mu, field_name=f"{where}mu")
    teacher = check_name(comp.teacher, f"{where}teacher")
    labeller = check_optional_name(comp.labeller, f"{where}labeller")
    is_segment_pair = comp.left_id is not None or comp.right_id is not None
    if is_segment_pair == (comp.text_pair_id is not None):
        raise ValueError(f"{where}set either left_id and right_id or text_pair_id, not both or neither")
    left_id = right_id = text_pair_id = None
    if is_segment_pair:
        if comp.left_id is None or comp.right_id is None:
            raise ValueError(f"{where}left_id and right_id must both be set")
        left_id = check_id(comp.left_id, f"{where}left_id")
        right_id = check_id(comp.right_id, f"{where}right_id")
        if left_id == right_id:
            raise ValueError(f"{where}left_id and right_id are the same segment ({left_id})")
    else:
        text_pair_id = check_id(comp.text_pair_id, f"{where}text_pair_id")
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


def comparison_from_row(row: Any) -> Comparison:
    """The comparison of a ``comparisons`` row."""
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


def query_from_row(row: Any, now: datetime) -> Query:
    """The query of a ``queries`` row as it stands at ``now``: a lapsed lease reads as "pending"."""
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


def labeller_from_row(row: Any) -> Labeller:
    """The labeller of a ``labellers`` row (its token hash and session key stay in the database)."""
    return Labeller(
        id=int(row.id), name=row.name, role=row.role, created_at=row.created_at, disabled=bool(row.disabled)
    )
