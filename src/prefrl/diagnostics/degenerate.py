"""Detectors of degenerate language-model outputs, the cheap exploits of a learned reward.

Cohen et al. 2024 find an agent that says nothing (an empty reply scores a neutral
sentiment) and swaps double for single spaces; Singhal et al. 2023 ("A Long Way to Go")
find that response length explains much of RLHF's reward gain. These statistics make
such behaviour visible in the logs.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
from scipy import stats

__all__ = ["is_empty", "is_whitespace_only", "repetition_score", "whitespace_only_change", "degenerate_report"]

_WS = re.compile(r"\s+")


def is_empty(text: str) -> bool:
    return len(text) == 0


def is_whitespace_only(text: str) -> bool:
    """Non-empty and made only of whitespace."""
    return len(text) > 0 and text.strip() == ""


def whitespace_only_change(text: str, reference: str) -> bool:
    """True when ``text`` differs from ``reference`` only in whitespace (e.g. double → single spaces)."""
    return text != reference and _WS.sub(" ", text).strip() == _WS.sub(" ", reference).strip()


def repetition_score(text: str, n: int = 3) -> float:
    """Fraction of word n-grams that repeat an earlier n-gram of the same text (0 = none)."""
    words = text.split()
    if len(words) < n + 1:
        return 0.0
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    counts = Counter(grams)
    repeated = sum(c - 1 for c in counts.values())
    return repeated / len(grams)


def degenerate_report(
    responses: Sequence[str],
    references: Sequence[str] | None = None,
    rewards: Sequence[float] | None = None,
    repetition_threshold: float = 0.3,
    prefix: str = "degenerate",
) -> dict[str, float]:
    """Rates of degenerate responses in a batch.

    Args:
        responses: the policy's responses.
        references: the reference policy's responses to the same prompts (for whitespace changes).
        rewards: the reward of each response (for the reward–length correlation).
        repetition_threshold: a response whose :func:`repetition_score` exceeds it counts as repetitive.

    Returns:
        ``{prefix}/empty_rate``, ``/whitespace_only_rate``, ``/repetition_rate``,
        ``/mean_length`` (characters), and when given ``/whitespace_change_rate`` and
        ``/reward_length_corr`` (Spearman).
    """
    if len(responses) == 0:
        raise ValueError("responses must not be empty")
    n = len(responses)
    out = {
        f"{prefix}/empty_rate": sum(is_empty(r) for r in responses) / n,
        f"{prefix}/whitespace_only_rate": sum(is_whitespace_only(r) for r in responses) / n,
        f"{prefix}/repetition_rate": sum(repetition_score(r) > repetition_threshold for r in responses) / n,
        f"{prefix}/mean_length": float(np.mean([len(r) for r in responses])),
    }
    if references is not None:
        if len(references) != n:
            raise ValueError(f"references has {len(references)} items but responses has {n}")
        out[f"{prefix}/whitespace_change_rate"] = sum(whitespace_only_change(r, s) for r, s in zip(responses, references)) / n
    if rewards is not None:
        if len(rewards) != n:
            raise ValueError(f"rewards has {len(rewards)} items but responses has {n}")
        lengths = np.array([len(r) for r in responses], dtype=np.float64)
        r = np.asarray(rewards, dtype=np.float64)
        if np.ptp(lengths) > 0 and np.ptp(r) > 0:
            out[f"{prefix}/reward_length_corr"] = float(stats.spearmanr(lengths, r).statistic)
        else:
            out[f"{prefix}/reward_length_corr"] = 0.0
    return out
