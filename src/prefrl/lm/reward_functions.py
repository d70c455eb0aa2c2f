"""Reward functions for LM PPO, at three granularities, and their placement on tokens.

A reward function is any callable ``reward_fn(batch: RolloutBatch) -> RewardOutput``
(or a :class:`RewardResult`, which carries metrics computed on the way, e.g. the reward heads'
disagreement). A reward function with a ``score_with_metrics(batch) -> RewardResult`` method
(:class:`RewardModelScorer`) is scored through it: :func:`call_reward` is the one place that
decides. The output is one of:

- **sequence**: a (B,) tensor, one score per response, placed on its last valid token
  (the EOS when there is one — InstructGPT, Ziegler et al. 2019);
- **token**: a (B, R) tensor aligned with ``batch.response_ids``; entries after the
  last valid token are ignored;
- **span**: a list (length B) of lists of ``(start, end, score)`` over response-token
  columns, ``start`` inclusive and ``end`` exclusive; each score is delivered on the
  span's last token (``end − 1``), when the span is complete, as in process / segment
  rewards (Lightman et al. 2023; Wu et al. 2023, "Fine-grained human feedback").

:func:`place_rewards` turns all three into the same (B, R) per-token reward, so GAE and
the KL penalty treat them alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, Union, runtime_checkable

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from prefrl.lm.rollout import RolloutBatch

__all__ = [
    "Span",
    "RewardOutput",
    "RewardFn",
    "RewardResult",
    "ScoringRewardFn",
    "call_reward",
    "place_rewards",
    "RewardModelScorer",
    "VaderScorer",
    "TextReward",
    "TokenFrequencyReward",
    "gold_reward",
]

Span = tuple[int, int, float]
RewardOutput = Union[torch.Tensor, Sequence[Sequence[Span]]]


@dataclass
class RewardResult:
    """What a reward function computed for a batch: the rewards and metrics to log beside them.

    Attributes:
        rewards: (B,) sequence scores, (B, R) token rewards, or per-row span lists.
        metrics: scalars about this batch (e.g. ``reward/ensemble_std``), logged by the trainer.
    """

    rewards: RewardOutput
    metrics: dict[str, float] = field(default_factory=dict)


class RewardFn(Protocol):
    """Scores a batch of rollouts per sequence (B,), per token (B, R) or per span."""

    def __call__(self, batch: RolloutBatch) -> RewardOutput | RewardResult: ...


@runtime_checkable
class ScoringRewardFn(Protocol):
    """A reward function that also returns what it computed on the way (:class:`RewardResult`)."""

    def score_with_metrics(self, batch: RolloutBatch) -> RewardResult: ...


def call_reward(reward_fn: RewardFn | ScoringRewardFn, batch: RolloutBatch) -> RewardResult:
    """Score ``batch``: through ``reward_fn.score_with_metrics`` when it has one, else ``reward_fn(batch)``."""
    out = reward_fn.score_with_metrics(batch) if isinstance(reward_fn, ScoringRewardFn) else reward_fn(batch)
    return out if isinstance(out, RewardResult) else RewardResult(out)


def place_rewards(output: RewardOutput, batch: RolloutBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Put a reward function's output on the response tokens.

    Args:
        output: (B,) sequence scores, (B, R) token rewards, or per-row span lists.
        batch: the rollouts that were scored.

    Returns:
        ``(scores (B,), token_rewards (B, R))``: ``scores`` is the total reward of each
        response (for logging); ``token_rewards`` is zero outside ``response_mask``.
    """
    b, r = batch.response_ids.shape
    last = batch.last_index  # (B,)
    mask = batch.response_mask.to(torch.float32)
    token_rewards = torch.zeros((b, r), dtype=torch.float32)
    if isinstance(output, torch.Tensor):
        out = output.detach().to("cpu", torch.float32)
        if out.shape == (b,):
            token_rewards[torch.arange(b), last] = out
        elif out.shape == (b, r):
            token_rewards = out * mask
        else:
            raise ValueError(
                f"reward tensor must be (B,) = ({b},) per sequence or (B, R) = ({b}, {r}) per token, got {tuple(out.shape)}"
            )
    else:
        if len(output) != b:
            raise ValueError(f"span rewards must have one list per response ({b}), got {len(output)}")
        for i, spans in enumerate(output):
            for span in spans:
                if len(span) != 3:
                    raise ValueError(f"row {i}: a span must be (start, end, score), got {span!r}")
                start, end, score = int(span[0]), int(span[1]), float(span[2])
                if not 0 <= start < end <= r:
                    raise ValueError(f"row {i}: span ({start}, {end}) must satisfy 0 ≤ start < end ≤ R = {r}")
                if start > int(last[i]):
                    raise ValueError(
                        f"row {i}: span ({start}, {end}) starts after the response ends (last token {int(last[i])})"
                    )
                token_rewards[i, min(end - 1, int(last[i]))] += score
    if not torch.isfinite(token_rewards).all():
        raise ValueError("reward function returned non-finite values")
    return token_rewards.sum(dim=1), token_rewards


class RewardModelScorer:
    """Sequence reward from a learned reward model (frozen), read at the last valid token.

    Args:
        reward_model: a module whose ``forward(input_ids, attention_mask) -> (B,)`` scores a
            sequence at its last attended token (``prefrl.lm.reward_model.RewardModel``).
        tokenizer: the reward model's tokenizer. Given, the prompt and response *texts* are
            re-encoded exactly as the reward model was trained on them
            (``prefrl.lm.encoding.collate_prompt_completion``: EOS appended, right padding), which
            also handles a tokenizer different from the policy's. None reuses the policy's token
            ids (prompt ‖ response up to its EOS) directly.
        batch_size: rows per forward pass.
        max_length: truncation of prompt ‖ response when re-encoding.
        aggregate: with an ensemble reward model (several heads), what PPO optimises:
            ``"mean"``, the worst case ``"min"`` or ``"mean_minus_std"`` (mean − λ·std; Coste et
            al. 2023). :meth:`score_with_metrics` returns the heads' std on the batch as
            ``reward/ensemble_std`` (``last_disagreement`` keeps the latest per-row std for
            interactive inspection; the trainer reads the returned metrics).
        lam: λ of ``"mean_minus_std"``.
    """

    def __init__(
        self,
        reward_model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase | None = None,
        batch_size: int = 16,
        max_length: int = 512,
        aggregate: str = "mean",
        lam: float = 1.0,
    ) -> None:
        from prefrl.reward.uncertainty import aggregate_members

        aggregate_members(torch.zeros(1, 1), aggregate, lam)  # unknown names fail here, not mid-run
        self.aggregate, self.lam = aggregate, lam
        self.last_disagreement: torch.Tensor | None = None
        if batch_size <= 0 or max_length <= 1:
            raise ValueError(
                f"batch_size must be positive and max_length > 1, got {batch_size}, {max_length}"
            )
        self.reward_model = reward_model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length

    def __call__(self, batch: RolloutBatch) -> torch.Tensor:
        """(B,) aggregated scores."""
        return self.score_with_metrics(batch).rewards  # type: ignore[return-value]

    @torch.no_grad()
    def score_with_metrics(self, batch: RolloutBatch) -> RewardResult:
        """(B,) aggregated scores and ``reward/ensemble_std`` (the heads' mean std on this batch)."""
        from prefrl.reward.uncertainty import aggregate_members, disagreement

        n = len(batch.prompts) if self.tokenizer is not None else batch.input_ids.shape[0]
        scores = [self._member_scores(batch, slice(s, s + self.batch_size)) for s in range(0, n, self.batch_size)]
        members = torch.cat(scores, dim=1)  # (M, B)
        spread = disagreement(members)  # (B,)
        self.last_disagreement = spread
        return RewardResult(
            aggregate_members(members, self.aggregate, self.lam),  # (B,)
            {"reward/ensemble_std": float(spread.mean())},
        )

    def _member_scores(self, batch: RolloutBatch, rows: slice) -> torch.Tensor:
        """(M, mb) the heads' scores of the batch's ``rows``, on the CPU."""
        device = next(self.reward_model.parameters()).device
        if self.tokenizer is None:
            ids, mask = batch.input_ids[rows], batch.attention_mask[rows]
        else:
            from prefrl.lm.encoding import (
                collate_prompt_completion,
                collate_shared_prompts,
                encode_prompt_rows,
            )

            prompts, responses = batch.prompts[rows], batch.responses[rows]
            encoded = encode_prompt_rows(self.tokenizer, prompts, responses, self.max_length)  # tokenised once
            if hasattr(self.reward_model, "shared_prompt_member_scores"):
                shared = collate_shared_prompts(self.tokenizer, prompts, responses, encoded=encoded)
                if shared is not None:  # rows sharing a prompt (the k completions of GRPO / RLOO) compute it once
                    shared = {key: v.to(device) for key, v in shared.items()}
                    return self.reward_model.shared_prompt_member_scores(shared).float().cpu()
            enc = collate_prompt_completion(self.tokenizer, prompts, responses, encoded=encoded)
            ids, mask = enc["input_ids"], enc["attention_mask"]
        ids, mask = ids.to(device), mask.to(device)
        if hasattr(self.reward_model, "member_scores"):
            return self.reward_model.member_scores(ids, mask).float().cpu()
        return self.reward_model(ids, mask).float().cpu()[None]  # (1, mb)


class VaderScorer:
    """Gold sentiment: VADER compound score in [−1, 1] of the response text (Hutto & Gilbert 2014).

    Stands in for people in the positive-reviews example. ``include_prompt=True`` scores
    prompt + response instead of the response alone.
    """

    def __init__(self, include_prompt: bool = False) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self._analyzer = SentimentIntensityAnalyzer()
        self.include_prompt = include_prompt

    def score_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(N,) compound scores."""
        return np.array([self._analyzer.polarity_scores(t)["compound"] for t in texts], dtype=np.float64)

    def __call__(self, batch: RolloutBatch) -> torch.Tensor:
        texts = (
            [p + r for p, r in zip(batch.prompts, batch.responses, strict=True)]
            if self.include_prompt
            else batch.responses
        )
        return torch.as_tensor(self.score_texts(texts), dtype=torch.float32)


class TextReward:
    """Adapts ``fn(prompts, responses) -> sequence of floats`` to a sequence-level reward."""

    def __init__(self, fn: Callable[[list[str], list[str]], Sequence[float]]) -> None:
        self.fn = fn

    def __call__(self, batch: RolloutBatch) -> torch.Tensor:
        scores = list(self.fn(batch.prompts, batch.responses))
        if len(scores) != len(batch):
            raise ValueError(f"reward fn returned {len(scores)} scores for {len(batch)} responses")
        return torch.tensor(scores, dtype=torch.float32)


class TokenFrequencyReward:
    """A toy reward with a known optimum: emit ``token_id``.

    ``granularity="token"`` pays ``value`` on every response token equal to ``token_id``;
    ``"sequence"`` pays ``value`` × the fraction of valid response tokens that equal it.
    """

    def __init__(self, token_id: int, granularity: str = "token", value: float = 1.0) -> None:
        if granularity not in ("token", "sequence"):
            raise ValueError(f"granularity must be 'token' or 'sequence', got {granularity!r}")
        self.token_id = token_id
        self.granularity = granularity
        self.value = value

    def __call__(self, batch: RolloutBatch) -> torch.Tensor:
        hits = (batch.response_ids == self.token_id).float() * batch.response_mask.float()  # (B, R)
        if self.granularity == "token":
            return self.value * hits
        return self.value * hits.sum(1) / batch.response_mask.float().sum(1).clamp(min=1.0)


def gold_reward(spec: str | None) -> RewardFn | None:
    """The reward ``--gold`` names: ``"vader"`` (:class:`VaderScorer`) or ``"module:function"``, a
    ``function(prompts, responses) -> scores`` (:class:`TextReward`); None for None."""
    if spec is None:
        return None
    if spec == "vader":
        return VaderScorer()
    import importlib

    module_name, _, attr = spec.partition(":")
    try:
        fn = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"gold: cannot import module {module_name!r} ({exc})") from None
    for part in attr.split("."):
        if not hasattr(fn, part):
            raise ValueError(f"gold: module {module_name!r} has no {attr!r}")
        fn = getattr(fn, part)
    if not callable(fn):
        raise ValueError(f"gold: {spec} is not callable")
    return TextReward(fn)
