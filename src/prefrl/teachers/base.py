"""The teacher seam: anything that answers queries, whatever they compare.

Synthetic teachers (the hidden true reward), people (through the store and the web app) and
AI judges are interchangeable: the training loops hold one :class:`Teacher` and never ask
which kind it is. A pair is either two segments ``(σ¹, σ²)`` or one
:class:`~prefrl.data.types.TextPair` (prompt + two responses); μ is the preference mass on
the first (left segment, ``response_a``).

Queries reach a teacher through the store's query queue, pumped by
:func:`prefrl.teachers.queue.answer_queries` (lease → ``answer`` → store).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol, TypeVar, Union, runtime_checkable

from prefrl.data.types import Segment, TextPair

__all__ = ["Teacher", "Pair", "Compares", "pair_kind"]

#: What a query compares: two segments, or two responses to one prompt.
Pair = Union[tuple[Segment, Segment], TextPair]
Compares = Literal["segments", "text"]
P_contra = TypeVar("P_contra", contravariant=True)


@runtime_checkable
class Teacher(Protocol[P_contra]):
    """Answers pairs with μ ∈ {1.0 (first better), 0.0 (second better), 0.5 (equally good)}, or ``None``.

    ``None`` means *can't tell* or skipped: stored as incomparable, never trained on.

    Attributes:
        name: recorded with every answer (``Comparison.teacher``).
        lease_as: the store labeller this teacher leases queries as; ``None`` for people,
            who lease their own queries in the web app (so a pump has nothing to do for them).
        compares: what it can answer, ``"segments"`` or ``"text"``; ``None`` = either.
    """

    name: str
    lease_as: str | None
    compares: Compares | None

    def answer(self, pairs: Sequence[P_contra]) -> list[float | None]:
        """One μ (or ``None``) per pair, in order."""
        ...


def pair_kind(pair: object) -> Compares:
    """``"text"`` for a :class:`TextPair`, ``"segments"`` for a two-segment tuple; ValueError otherwise."""
    if isinstance(pair, TextPair):
        return "text"
    if isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(s, Segment) for s in pair):
        return "segments"
    raise ValueError(f"a pair is a (Segment, Segment) tuple or a TextPair, got {type(pair).__name__}")
