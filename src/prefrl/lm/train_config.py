"""Options every LM training stage shares (SFT, reward model, DPO): :class:`TrainArgs`.

Torch-free, so that ``prefrl lm --help`` is instant: the CLI builds its options (and their
``--help``) from the fields' ``metadata["help"]``. Invalid values fail when a config is built.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prefrl.utils.config import doc

__all__ = ["TrainArgs", "config_to_dict"]


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
    overwrite: bool = doc(
        "Delete what a non-empty output_dir holds and start afresh (without it such a run is refused, "
        "unless it is a --resume).",
        default=False,
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
