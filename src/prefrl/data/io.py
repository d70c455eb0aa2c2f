"""JSON Lines export and import of a store's preferences, and TRL preference rows.

:func:`export_jsonl` writes a self-contained dump: every comparison together with the
segments and text pairs it refers to, each written once, before its first use::

    {"type": "segment", "id": 7, "obs": {"npy_zlib_b64": "…"}, …, "env_id": "Hopper-v5", …}
    {"type": "text_pair", "id": 2, "prompt": "…", "response_a": "…", "response_b": "…", "meta": {}}
    {"type": "comparison", "id": 9, "left_id": 7, "right_id": 8, "mu": 1.0, "teacher": "human", …}

Arrays travel as base64 of the store's own encoding (``np.save`` bytes, zlib), so dtype,
shape and values come back exactly. :func:`import_jsonl` reads such a file into another
store, giving records new ids and remapping the references. :func:`export_trl_preferences`
writes text comparisons as TRL's ``{"prompt", "chosen", "rejected"}`` rows.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from prefrl.data.schema import comparison_row, decode_array, encode_array, segment_row, text_pair_row
from prefrl.data.store import PreferenceStore
from prefrl.data.types import Comparison, Segment, TextPair

__all__ = ["DumpCounts", "export_jsonl", "import_jsonl", "export_trl_preferences"]

_ARRAY_FIELDS = ("obs", "actions", "true_rewards", "sim_states")
_ARRAY_KEY = "npy_zlib_b64"
_CHUNK = 500


@dataclass(frozen=True)
class DumpCounts:
    """How many records of each kind were written or read."""

    segments: int = 0
    text_pairs: int = 0
    comparisons: int = 0


def _chunks(seq: Sequence[int], size: int = _CHUNK) -> Iterator[Sequence[int]]:
    for start in range(0, len(seq), size):
        yield seq[start : start + size]


def _segment_record(seg: Segment) -> dict[str, Any]:
    record: dict[str, Any] = {"type": "segment", "id": seg.id}
    for name in _ARRAY_FIELDS:
        arr = getattr(seg, name)
        record[name] = (
            None if arr is None else {_ARRAY_KEY: base64.b64encode(encode_array(arr)).decode("ascii")}
        )
    record.update(
        env_id=seg.env_id,
        policy_version=seg.policy_version,
        episode=seg.episode,
        start_step=seg.start_step,
        meta=seg.meta,
    )
    return record


def export_jsonl(
    store: PreferenceStore, path: str | os.PathLike[str], *, since_id: int | None = None
) -> DumpCounts:
    """Write the store's comparisons (after ``since_id``, incomparable ones included) to ``path``.

    Segments and text pairs are written only if a comparison refers to them. Returns the counts.
    """
    comparisons = store.comparisons(include_incomparable=True, since_id=since_id)
    seg_ids = sorted({i for c in comparisons for i in (c.left_id, c.right_id) if i is not None})
    pair_ids = sorted({c.text_pair_id for c in comparisons if c.text_pair_id is not None})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for chunk in _chunks(seg_ids):
            for seg in store.get_segments(chunk):
                fh.write(json.dumps(_segment_record(seg), allow_nan=False) + "\n")
        for pair_id in pair_ids:
            pair = store.get_text_pair(pair_id)
            record = {"type": "text_pair", "id": pair.id, "prompt": pair.prompt}
            record.update(response_a=pair.response_a, response_b=pair.response_b, meta=pair.meta)
            fh.write(json.dumps(record, allow_nan=False) + "\n")
        for c in comparisons:
            record = {
                "type": "comparison",
                "id": c.id,
                "left_id": c.left_id,
                "right_id": c.right_id,
                "text_pair_id": c.text_pair_id,
                "mu": c.mu,
                "teacher": c.teacher,
                "labeller": c.labeller,
                "created_at": c.created_at.isoformat(),
            }
            fh.write(json.dumps(record, allow_nan=False) + "\n")
    return DumpCounts(segments=len(seg_ids), text_pairs=len(pair_ids), comparisons=len(comparisons))


def _field(record: dict[str, Any], name: str, where: str) -> Any:
    if name not in record:
        raise ValueError(f"{where}: missing field {name!r}")
    return record[name]


def _decode(value: Any, name: str, where: str) -> Any:
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get(_ARRAY_KEY), str):
        raise ValueError(f"{where}: {name} must be null or {{{_ARRAY_KEY!r}: str}}")
    try:
        return decode_array(base64.b64decode(value[_ARRAY_KEY], validate=True))
    except Exception as err:  # corrupt base64, zlib or npy header
        raise ValueError(f"{where}: {name} is not a valid encoded array ({err})") from None


def _new_key(record: dict[str, Any], known: dict[int, int], kind: str, where: str) -> int:
    key = _field(record, "id", where)
    if isinstance(key, bool) or not isinstance(key, int):
        raise ValueError(f"{where}: id must be an integer, got {key!r}")
    if key in known:
        raise ValueError(f"{where}: a {kind} with id {key} appears twice")
    return key


def _local_id(record: dict[str, Any], name: str, known: dict[int, int], kind: str, where: str) -> int | None:
    value = record.get(name)
    if value is None:
        return None
    if value not in known:
        raise ValueError(f"{where}: {name} {value!r} refers to no {kind} earlier in the file")
    return known[value]


def import_jsonl(store: PreferenceStore, path: str | os.PathLike[str]) -> DumpCounts:
    """Read a file written by :func:`export_jsonl` into ``store``; records get new ids.

    The whole file is parsed and checked first (``ValueError`` naming the line and field),
    so a malformed file writes nothing. Segments, text pairs and comparisons are then
    added in three atomic batches (a database failure between them can leave stored
    segments or text pairs without their comparisons, never half a batch).
    """
    path = Path(path)
    segments: list[Segment] = []
    pairs: list[TextPair] = []
    rows: list[tuple[str, dict[str, Any]]] = []
    seg_index: dict[int, int] = {}  # id in the file -> position in ``segments``
    pair_index: dict[int, int] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}:line {lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: invalid JSON ({err.msg})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{where}: expected a JSON object")
            kind = _field(record, "type", where)
            if kind == "segment":
                arrays = {name: _decode(_field(record, name, where), name, where) for name in _ARRAY_FIELDS}
                seg = Segment(
                    **arrays,
                    env_id=record.get("env_id", ""),
                    policy_version=record.get("policy_version", 0),
                    episode=record.get("episode", 0),
                    start_step=record.get("start_step", 0),
                    meta=record.get("meta", {}),
                )
                seg_index[_new_key(record, seg_index, "segment", where)] = len(segments)
                segments.append(seg)
            elif kind == "text_pair":
                pair = TextPair(
                    prompt=_field(record, "prompt", where),
                    response_a=_field(record, "response_a", where),
                    response_b=_field(record, "response_b", where),
                    meta=record.get("meta", {}),
                )
                pair_index[_new_key(record, pair_index, "text pair", where)] = len(pairs)
                pairs.append(pair)
            elif kind == "comparison":
                _local_id(record, "left_id", seg_index, "segment", where)
                _local_id(record, "right_id", seg_index, "segment", where)
                _local_id(record, "text_pair_id", pair_index, "text pair", where)
                rows.append((where, record))
            else:
                raise ValueError(f"{where}: unknown record type {kind!r}")
    # Build and check every record before the first write, so that a bad one leaves no orphans.
    # Comparisons refer to positions (+1) in ``segments`` / ``pairs`` until those are stored.
    comparisons = []
    for where, record in rows:
        created_at = record.get("created_at")
        kwargs: dict[str, Any] = {}
        if created_at is not None:
            try:
                kwargs["created_at"] = datetime.fromisoformat(created_at)
            except (TypeError, ValueError):
                raise ValueError(f"{where}: created_at is not an ISO datetime: {created_at!r}") from None
        left = _local_id(record, "left_id", seg_index, "segment", where)
        right = _local_id(record, "right_id", seg_index, "segment", where)
        pair = _local_id(record, "text_pair_id", pair_index, "text pair", where)
        comp = Comparison(
            mu=_field(record, "mu", where),
            teacher=_field(record, "teacher", where),
            left_id=None if left is None else left + 1,
            right_id=None if right is None else right + 1,
            text_pair_id=None if pair is None else pair + 1,
            labeller=record.get("labeller"),
            **kwargs,
        )
        try:
            comparison_row(comp)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        comparisons.append(comp)
    for i, seg in enumerate(segments):
        segment_row(seg, i)
    for i, text_pair in enumerate(pairs):
        text_pair_row(text_pair, i)

    seg_ids = store.add_segments(segments) if segments else []
    pair_ids = store.add_text_pairs(pairs) if pairs else []
    for comp in comparisons:
        if comp.left_id is not None and comp.right_id is not None:
            comp.left_id, comp.right_id = seg_ids[comp.left_id - 1], seg_ids[comp.right_id - 1]
        if comp.text_pair_id is not None:
            comp.text_pair_id = pair_ids[comp.text_pair_id - 1]
    if comparisons:
        store.add_comparisons(comparisons)
    return DumpCounts(segments=len(segments), text_pairs=len(pairs), comparisons=len(comparisons))


def export_trl_preferences(
    store: PreferenceStore, path: str | os.PathLike[str], *, include_ties: bool = False
) -> int:
    """Write answered text comparisons as TRL rows ``{"prompt", "chosen", "rejected"}``; returns the count.

    μ = 1 chooses ``response_a``, μ = 0 ``response_b``. Ties (μ = 0.5) are left out unless
    ``include_ties``, in which case they are written with ``"mu": 0.5`` (``response_a`` as chosen).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for pair, mu in store.text_preferences():
            if mu == 0.5 and not include_ties:
                continue
            chosen, rejected = (
                (pair.response_b, pair.response_a) if mu == 0.0 else (pair.response_a, pair.response_b)
            )
            row: dict[str, Any] = {"prompt": pair.prompt, "chosen": chosen, "rejected": rejected}
            if mu == 0.5:
                row["mu"] = 0.5
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n
