"""Configuration of best-of-n sampling against a reward model (``prefrl lm best-of-n``)."""

from __future__ import annotations

from dataclasses import dataclass

from prefrl.lm.generate_config import SamplingArgs
from prefrl.utils.config import doc

__all__ = ["BestOfNConfig"]


@dataclass
class BestOfNConfig(SamplingArgs):
    """Best-of-n sampling against a reward model; writes the best response per prompt."""

    reward_model: str = doc("Reward-model directory that ranks the n samples.", default="")
    n: int = doc("Samples per prompt.", default=4)
    output: str = doc(
        "Output JSONL (prompt, completion = best, score, scores, candidates).", default="best_of_n.jsonl"
    )
    gold: bool = doc("Also report VADER gold scores of the best and of all samples.", default=False)
    max_length: int = doc("Truncate prompt+response to this many tokens when scoring.", default=512)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.reward_model:
            raise ValueError("reward_model: give a reward-model directory")
        if self.n < 1:
            raise ValueError(f"n must be ≥ 1, got {self.n}")
