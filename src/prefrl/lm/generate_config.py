"""Configurations of sampling from a policy: ``prefrl lm generate``, ``evaluate`` and ``pairs``.

:class:`SamplingArgs` holds what every sampling command shares.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefrl.utils.config import doc

__all__ = ["SamplingArgs", "GenerateConfig", "EvaluateConfig", "PairsConfig"]


@dataclass
class SamplingArgs:
    """How to sample responses from a policy."""

    model: str = doc(
        "Causal LM to sample from: a checkpoint directory, 'smollm2' or 'tiny'.", default="smollm2"
    )
    prompts: str = doc(
        "Prompt file (JSONL/JSON/Parquet or datasets directory with a 'prompt' column).", default=""
    )
    max_new_tokens: int = doc("Longest response, in tokens.", default=48)
    temperature: float = doc("Sampling temperature.", default=1.0)
    top_k: int = doc("Sample from the k most likely tokens; 0 disables.", default=0)
    max_prompt_length: int = doc("Keep the last this many prompt tokens.", default=256)
    batch_size: int = doc("Sequences per generate call.", default=16)
    seed: int = doc("Seed of the sampling generator.", default=0)
    max_prompts: int = doc("Use only the first this many prompts; 0 uses all.", default=0)

    def __post_init__(self) -> None:
        if not self.prompts:
            raise ValueError("prompts: give a prompt file")
        for name in ("max_new_tokens", "max_prompt_length", "batch_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if self.top_k < 0 or self.max_prompts < 0:
            raise ValueError("top_k and max_prompts must be ≥ 0")


@dataclass
class GenerateConfig(SamplingArgs):
    """Sample responses for prompts and write them as JSONL (prompt, completion, sample)."""

    output: str = doc("Output JSONL path.", default="generations.jsonl")
    n: int = doc("Samples per prompt.", default=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n < 1:
            raise ValueError(f"n must be ≥ 1, got {self.n}")


@dataclass
class EvaluateConfig:
    """Score generations (prompt/completion JSONL) with a reward model and/or the VADER gold reward."""

    data: str = doc("Generations file with prompt and completion columns.", default="")
    reward_model: str | None = doc("Reward-model directory to score with.", default=None)
    gold: bool = doc("Also score the completions with VADER sentiment (the gold reward).", default=False)
    batch_size: int = doc("Sequences per reward-model forward pass.", default=16)
    max_length: int = doc("Truncate prompt+response to this many tokens.", default=512)
    output: str | None = doc("Write per-row scores to this JSONL (optional).", default=None)

    def __post_init__(self) -> None:
        if not self.data:
            raise ValueError("data: give a generations file")
        if self.reward_model is None and not self.gold:
            raise ValueError("give a reward_model, gold=True, or both")
        if self.batch_size <= 0 or self.max_length <= 0:
            raise ValueError("batch_size and max_length must be positive")


@dataclass
class PairsConfig(SamplingArgs):
    """Sample two responses per prompt and queue them in a PreferenceStore for labellers."""

    store: str = doc("PreferenceStore URL or SQLite path.", default="")
    priority: float = doc("Priority of the queued queries (higher is asked first).", default=0.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.store:
            raise ValueError("store: give a PreferenceStore URL or path")
