"""Typed configs of the LM stages, one dataclass each, every field documented.

Kept free of torch/transformers imports so that ``prefrl lm --help`` is instant: the
CLI builds its options (and their ``--help``) from these fields' ``metadata["help"]``.
Invalid values fail when a config is built, not at step 10,000.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from prefrl.utils.config import doc

__all__ = [
    "doc",
    "TrainArgs",
    "SFTConfig",
    "RMConfig",
    "DPOConfig",
    "DPOLoss",
    "SamplingArgs",
    "GenerateConfig",
    "EvaluateConfig",
    "PairsConfig",
    "BestOfNConfig",
    "config_to_dict",
]

DPOLoss = Literal["sigmoid", "ipo"]


@dataclass
class TrainArgs:
    """Options every LM training stage shares (SFT, RM, DPO)."""

    model: str = doc(
        "Causal LM to start from: a checkpoint directory, 'smollm2' or 'tiny'.", default="smollm2"
    )
    output_dir: str = doc(
        "Where the final checkpoint, step checkpoints and TensorBoard logs go.", default="runs/lm"
    )
    seed: int = doc("Seed of data order, head initialisation and dropout.", default=0)
    learning_rate: float = doc("Peak AdamW learning rate.", default=1e-5)
    weight_decay: float = doc("AdamW weight decay.", default=0.0)
    warmup_steps: int = doc("Linear warm-up steps, then a linear decay to 0.", default=0)
    batch_size: int = doc("Examples per optimizer step, over all processes.", default=8)
    epochs: float = doc("Passes over the data (ignored when max_steps > 0).", default=1.0)
    max_steps: int = doc("Optimizer steps to run; 0 means derive from epochs.", default=0)
    max_length: int = doc("Truncate prompt+response to this many tokens.", default=512)
    max_grad_norm: float = doc("Clip the gradient norm to this value; 0 disables clipping.", default=1.0)
    lora_r: int = doc("LoRA rank; 0 trains all weights.", default=0)
    lora_alpha: float = doc("LoRA scaling numerator alpha (update scaled by alpha/r).", default=32.0)
    lora_dropout: float = doc("Dropout on the LoRA adapter input.", default=0.05)
    lora_target_modules: str = doc(
        "Comma-separated module names that get LoRA adapters.", default="q_proj,k_proj,v_proj,o_proj"
    )
    train_top_layers: int = doc(
        "Train only the last this many decoder layers, the final norm and any head (0 = all weights): "
        "backpropagation stops there, about (N / layers) of the backward pass on CPU.",
        default=0,
    )
    save_every: int = doc("Write a resumable checkpoint every this many steps; 0 only at the end.", default=0)
    log_every: int = doc("Write TensorBoard scalars every this many steps.", default=1)
    resume: str | None = doc(
        "Checkpoint directory to resume from (model, optimizer, scheduler, step, RNG).", default=None
    )

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_length", "log_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("max_steps", "warmup_steps", "save_every", "lora_r", "train_top_layers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be ≥ 0, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.max_steps == 0 and self.epochs <= 0:
            raise ValueError("set epochs > 0 or max_steps > 0")
        if self.max_grad_norm < 0:
            raise ValueError(f"max_grad_norm must be ≥ 0, got {self.max_grad_norm}")
        if self.resume is not None and not Path(self.resume).is_dir():
            raise ValueError(f"resume: {self.resume} is not a directory")
        if self.lora_r > 0 and self.train_top_layers > 0:
            raise ValueError("lora_r and train_top_layers are alternatives; set one of them")
        if self.lora_r > 0:
            self.lora  # noqa: B018 - validate the LoRA fields now

    @property
    def lora(self) -> Any:
        """The :class:`~prefrl.lm.models.LoraSpec`, or ``None`` for full fine-tuning."""
        from prefrl.lm.models import LoraSpec

        if self.lora_r == 0:
            return None
        return LoraSpec(
            self.lora_r, self.lora_alpha, self.lora_dropout, tuple(self.lora_target_modules.split(","))
        )

    def total_steps(self, n_examples: int) -> int:
        """Optimizer steps for ``n_examples`` training examples."""
        if self.max_steps > 0:
            return self.max_steps
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        return max(1, math.ceil(self.epochs * max(1, math.ceil(n_examples / self.batch_size))))


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-safe dict of a config dataclass."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}


@dataclass
class SFTConfig(TrainArgs):
    """Supervised fine-tuning on prompt-completion data."""

    data: str = doc("Prompt-completion data: JSONL/JSON/Parquet file or datasets directory.", default="")
    skip_bad_rows: bool = doc("Skip malformed rows (and report how many) instead of failing.", default=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.data:
            raise ValueError("data: give a prompt-completion file")


@dataclass
class RMConfig(TrainArgs):
    """Bradley-Terry reward-model training on preference pairs."""

    data: str | None = doc("Preference data file/directory (prompt/chosen/rejected).", default=None)
    store: str | None = doc(
        "PreferenceStore URL or SQLite path: train on people's answered text pairs.", default=None
    )
    n_heads: int = doc("Ensemble heads sharing the backbone (forward returns their mean).", default=1)
    margin: float = doc(
        "Margin m subtracted from r_chosen − r_rejected inside the loss (Llama 2).", default=0.0
    )
    center_rewards_coef: float = doc(
        "Weight c of the centring term c·mean((r_c + r_r)²); 0 disables.", default=0.0
    )
    normalize: bool = doc(
        "After training, normalise scores of the training responses to mean 0, std 1.", default=True
    )
    norm_samples: int = doc("Responses used for the normalisation statistics.", default=256)
    skip_bad_rows: bool = doc("Skip malformed rows (and report how many) instead of failing.", default=False)
    learning_rate: float = doc("Peak AdamW learning rate.", default=1e-5)

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.data is None) == (self.store is None):
            raise ValueError("give exactly one of data or store")
        if self.n_heads < 1:
            raise ValueError(f"n_heads must be ≥ 1, got {self.n_heads}")
        if self.center_rewards_coef < 0:
            raise ValueError(f"center_rewards_coef must be ≥ 0, got {self.center_rewards_coef}")
        if self.norm_samples < 2:
            raise ValueError(f"norm_samples must be ≥ 2, got {self.norm_samples}")


@dataclass
class DPOConfig(TrainArgs):
    """DPO / IPO / cDPO on preference pairs."""

    data: str = doc("Preference data file/directory (prompt/chosen/rejected).", default="")
    ref_model: str | None = doc(
        "Reference model; default: the starting model (LoRA: adapter disabled).", default=None
    )
    beta: float = doc("β: strength of the implicit KL penalty to the reference.", default=0.1)
    loss_type: str = doc("'sigmoid' (DPO) or 'ipo' (Azar et al. 2023).", default="sigmoid")
    label_smoothing: float = doc("Assumed label-noise rate; > 0 gives conservative DPO (cDPO).", default=0.0)
    skip_bad_rows: bool = doc("Skip malformed rows (and report how many) instead of failing.", default=False)
    learning_rate: float = doc("Peak AdamW learning rate.", default=5e-7)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.data:
            raise ValueError("data: give a preference file")
        if self.loss_type not in get_args(DPOLoss):
            raise ValueError(f"loss_type must be one of {get_args(DPOLoss)}, got {self.loss_type!r}")
        if self.beta <= 0:
            raise ValueError(f"beta must be positive, got {self.beta}")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}")


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
