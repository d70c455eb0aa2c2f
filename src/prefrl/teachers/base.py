"""The teacher seam: anything that answers comparisons of two segments.

Synthetic (true reward), human (through the store) and AI-judge teachers are
interchangeable; the training loop never knows which one it has.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from prefrl.data.types import Segment

__all__ = ["Teacher"]


@runtime_checkable
class Teacher(Protocol):
    """Answers pairs (σ¹, σ²) with μ, the preference mass on the left segment.

    μ ∈ {1.0 (left better), 0.0 (right better), 0.5 (equally good)}, or ``None`` when
    the teacher can't tell or skips the query (stored as incomparable, never trained on).
    """

    name: str

    def answer(self, pairs: Sequence[tuple[Segment, Segment]]) -> list[float | None]:
        """One μ (or ``None``) per pair, in order."""
        ...
