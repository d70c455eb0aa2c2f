"""The one pump from the store's query queue to a teacher: lease → answer → store.

The same path people take in the web app, for every other teacher: a synthetic teacher in the
control loop, an AI judge labelling text pairs (``prefrl label judge``). One query at a time,
as a labeller holds one lease at a time.
"""

from __future__ import annotations

from typing import Any

from prefrl.teachers.base import Pair, Teacher

__all__ = ["answer_queries"]


def answer_queries(
    store: Any,
    teacher: Teacher[Any],
    *,
    lease_seconds: float = 60.0,
    limit: int | None = None,
    env_id: str | None = None,
) -> int:
    """Answer queries from ``store``'s queue with ``teacher``; return the number of answers stored.

    Queries are leased as ``teacher.lease_as`` and answered with ``teacher.answer``; the answer
    is stored with ``teacher.name``. A query the teacher cannot compare (a text pair for a
    segment teacher, or segments of another env than ``env_id``) is released untouched and ends
    the pump. A teacher with ``lease_as = None`` (people, who answer in the web app) takes
    nothing from the queue: 0.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be ≥ 0, got {limit}")
    labeller = teacher.lease_as
    if labeller is None:
        return 0
    answered = 0
    while limit is None or answered < limit:
        query = store.lease_query(labeller, lease_seconds=lease_seconds)
        if query is None:
            break
        pair: Pair
        if query.text_pair_id is not None:
            kind = "text"
            pair = store.get_text_pair(query.text_pair_id)
        else:
            kind = "segments"
            left, right = store.get_segments([query.left_id, query.right_id])
            pair = (left, right)
        wrong_env = kind == "segments" and env_id is not None and pair[0].env_id != env_id  # type: ignore[index]
        if (teacher.compares is not None and kind != teacher.compares) or wrong_env:
            store.release_query(query.id, labeller)
            break
        (mu,) = teacher.answer([pair])
        store.answer_query(query.id, labeller, mu, teacher=teacher.name)
        answered += 1
    return answered
