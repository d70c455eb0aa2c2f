"""Label-quality statistics for the admin view: pure functions over stored comparisons.

- *inter-labeller agreement* on repeated pairs (pairs answered by ≥ 2 labellers): the
  fraction of labeller pairs (i, j) on the same item that gave the same μ;
- *oracle agreement* where true rewards exist: the fraction of answers equal to the
  rational answer (1 if R_left > R_right, 0 if <, 0.5 if equal), as in B-Pref's
  ``rational`` teacher (Lee et al. 2021);
- *time per label*: the median gap between one labeller's consecutive answers, ignoring
  gaps longer than ``max_gap_seconds`` (breaks);
- per labeller, *agreement with the consensus*: on items that others answered too, how often
  the labeller's answer equals the others' majority answer (leave-one-out, ties skipped), and
  agreement with the oracle;
- a *looks random* flag: enough answers compared, and an agreement rate that a coin would
  reach with probability above ``alpha`` (one-sided binomial test against 1/2).
"""

from __future__ import annotations

import collections
import itertools
import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from prefrl.data.types import Comparison

#: Key of one compared item: ("seg", min_id, max_id) or ("text", pair_id).
ItemKey = tuple


def item_key(c: Comparison) -> tuple[ItemKey, float | None]:
    """The order-free key of a comparison's item and μ expressed on that key's left item.

    A pair shown as (7, 3) is the same item as (3, 7); its μ is flipped (1 − μ) so that the
    answers of two labellers who saw the two orders can be compared.
    """
    if c.text_pair_id is not None:
        return ("text", int(c.text_pair_id)), c.mu
    if c.left_id is None or c.right_id is None:
        raise ValueError(f"comparison {c.id} has neither a text pair nor two segment ids")
    left, right = int(c.left_id), int(c.right_id)
    if left <= right:
        return ("seg", left, right), c.mu
    return ("seg", right, left), (None if c.mu is None else 1.0 - c.mu)


def rational_mu(return_left: float, return_right: float) -> float:
    """The rational teacher's answer for two true returns."""
    if return_left > return_right:
        return 1.0
    if return_left < return_right:
        return 0.0
    return 0.5


@dataclass
class Agreement:
    """A rate of agreement: ``rate = agree / total`` (``None`` when ``total == 0``)."""

    agree: int
    total: int

    @property
    def rate(self) -> float | None:
        return None if self.total == 0 else self.agree / self.total


def inter_labeller_agreement(comparisons: Iterable[Comparison]) -> tuple[Agreement, int]:
    """Agreement over all pairs of distinct labellers that answered the same item.

    Only human answers (``labeller`` set) count; a labeller's latest answer per item is
    used. Returns ``(agreement, n_repeated_items)``.
    """
    answers: dict[ItemKey, dict[str, float | None]] = defaultdict(dict)
    for c in sorted(comparisons, key=lambda c: (c.created_at, c.id or 0)):
        if not c.labeller:
            continue
        key, mu = item_key(c)
        answers[key][c.labeller] = mu
    agree = total = repeated = 0
    for by_labeller in answers.values():
        if len(by_labeller) < 2:
            continue
        repeated += 1
        for mu_i, mu_j in itertools.combinations(by_labeller.values(), 2):
            total += 1
            agree += int(mu_i == mu_j)
    return Agreement(agree, total), repeated


def oracle_agreement(
    comparisons: Iterable[Comparison], true_return: Callable[[int], float | None]
) -> Agreement:
    """Agreement of answered segment comparisons (μ ≠ None) with the rational answer.

    ``true_return(segment_id)`` gives a segment's true return or ``None`` when it has no
    true rewards; such comparisons are left out.
    """
    agree = total = 0
    for c in comparisons:
        if c.mu is None or c.left_id is None or c.right_id is None:
            continue
        r_left, r_right = true_return(int(c.left_id)), true_return(int(c.right_id))
        if r_left is None or r_right is None:
            continue
        total += 1
        agree += int(rational_mu(r_left, r_right) == c.mu)
    return Agreement(agree, total)


def _latest_answers(comparisons: Iterable[Comparison]) -> dict[ItemKey, dict[str, float | None]]:
    """Each labeller's latest answer per item (μ on the item key's left), human answers only."""
    answers: dict[ItemKey, dict[str, float | None]] = defaultdict(dict)
    for c in sorted(comparisons, key=lambda c: (c.created_at, c.id or 0)):
        if c.labeller:
            key, mu = item_key(c)
            answers[key][c.labeller] = mu
    return answers


def consensus_agreement(comparisons: Iterable[Comparison]) -> dict[str, Agreement]:
    """Per labeller: agreement of their answers with the majority answer of the *other* labellers.

    Only items answered (μ ≠ None) by the labeller and by at least one other labeller count,
    and only where the others' most common answer is unique (no tie).
    """
    out: dict[str, Agreement] = defaultdict(lambda: Agreement(0, 0))
    for by_labeller in _latest_answers(comparisons).values():
        for name, mu in by_labeller.items():
            if mu is None:
                continue
            others = [m for other, m in by_labeller.items() if other != name and m is not None]
            counts = collections.Counter(others).most_common()
            if not counts or (len(counts) > 1 and counts[0][1] == counts[1][1]):
                continue
            out[name].total += 1
            out[name].agree += int(mu == counts[0][0])
    return dict(out)


def oracle_agreement_by_labeller(
    comparisons: Iterable[Comparison], true_return: Callable[[int], float | None]
) -> dict[str, Agreement]:
    """:func:`oracle_agreement` of each labeller's answers."""
    by_labeller: dict[str, list[Comparison]] = defaultdict(list)
    for c in comparisons:
        if c.labeller:
            by_labeller[c.labeller].append(c)
    return {name: oracle_agreement(cs, true_return) for name, cs in by_labeller.items()}


def chance_probability(agreement: Agreement) -> float:
    """P(at least ``agree`` of ``total`` agree) for a labeller who agrees by a fair coin."""
    n, k = agreement.total, agreement.agree
    return sum(math.comb(n, i) for i in range(k, n + 1)) / 2.0**n


def looks_random(agreement: Agreement, min_answers: int = 10, alpha: float = 0.05) -> bool:
    """True when at least ``min_answers`` were compared and a coin would agree as often with
    probability above ``alpha``; too few answers to tell → False."""
    return agreement.total >= min_answers and chance_probability(agreement) > alpha


def seconds_per_label(comparisons: Sequence[Comparison], max_gap_seconds: float = 300.0) -> dict[str, float]:
    """Median seconds between consecutive answers of each labeller (gaps > max_gap left out)."""
    if max_gap_seconds <= 0:
        raise ValueError(f"max_gap_seconds must be > 0, got {max_gap_seconds}")
    times: dict[str, list] = defaultdict(list)
    for c in comparisons:
        if c.labeller:
            times[c.labeller].append(c.created_at)
    out: dict[str, float] = {}
    for name, ts in times.items():
        ts.sort()
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(ts)]
        gaps = [g for g in gaps if 0.0 <= g <= max_gap_seconds]
        if gaps:
            out[name] = float(statistics.median(gaps))
    return out
