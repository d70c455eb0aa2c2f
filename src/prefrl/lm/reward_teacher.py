"""A teacher for text pairs that prefers the response a reward scores higher (online DPO's machine teacher).

:class:`RewardTeacher` implements the :class:`~prefrl.teachers.base.Teacher` protocol for
:class:`~prefrl.data.types.TextPair`\\ s, so it answers the store's query queue through
:func:`prefrl.teachers.queue.answer_queries` exactly as an AI judge or a synthetic teacher does.
The reward is any text-level reward function of :mod:`prefrl.lm.reward_functions` — a frozen
:class:`~prefrl.lm.reward_functions.RewardModelScorer` with its tokenizer (the prompt and response
texts are re-encoded), :class:`~prefrl.lm.reward_functions.VaderScorer`, a
:class:`~prefrl.lm.reward_functions.TextReward` — called on a :class:`TextBatch`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from prefrl.data.types import TextPair
from prefrl.lm.reward_functions import RewardFn, call_reward

__all__ = ["RewardTeacher", "TextBatch"]


@dataclass
class TextBatch:
    """Prompts and responses as text only: what a text-level reward function reads of a rollout."""

    prompts: list[str]
    responses: list[str]

    def __len__(self) -> int:
        return len(self.responses)


class RewardTeacher:
    """μ = 1 when the reward scores ``response_a`` higher, 0 when lower, 0.5 within ``margin``.

    Args:
        reward_fn: a sequence-level reward that reads ``batch.prompts`` and ``batch.responses``.
        name: recorded with every answer; also the store labeller it leases queries as.
        margin: score gaps up to this are answered "equally good" (0.5; online DPO skips them).
    """

    compares = "text"

    def __init__(self, reward_fn: RewardFn, name: str = "reward-model", margin: float = 0.0) -> None:
        if not margin >= 0.0:
            raise ValueError(f"margin must be ≥ 0, got {margin}")
        self.reward_fn = reward_fn
        self.name = name
        self.lease_as: str | None = name
        self.margin = float(margin)

    def scores(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        """(N,) sequence scores of ``responses`` to ``prompts``."""
        out = call_reward(self.reward_fn, TextBatch(list(prompts), list(responses))).rewards
        scores = torch.as_tensor(out, dtype=torch.float32).reshape(-1)
        if scores.shape[0] != len(responses):
            raise ValueError(f"the reward returned {scores.shape[0]} scores for {len(responses)} responses")
        return scores

    def answer(self, pairs: Sequence[TextPair]) -> list[float | None]:
        for i, pair in enumerate(pairs):
            if not isinstance(pair, TextPair):
                raise ValueError(f"pairs[{i}] must be a TextPair, got {type(pair).__name__}")
        prompts = [p.prompt for p in pairs]
        s = self.scores(prompts * 2, [p.response_a for p in pairs] + [p.response_b for p in pairs])
        gap = s[: len(pairs)] - s[len(pairs) :]  # (N,) score of a − score of b
        return [0.5 if abs(float(d)) <= self.margin else (1.0 if d > 0 else 0.0) for d in gap]
