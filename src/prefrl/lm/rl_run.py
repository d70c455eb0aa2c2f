"""Building and running an on-policy LM trainer from files (``prefrl lm ppo``, ``prefrl lm rl``).

The pieces every such command shares: refusing a resume whose settings differ, loading the
policy and its reference (a LoRA checkpoint merged first, so "adapter disabled" is the starting
policy, #12), the frozen reward model, the prompts and the gold reward, and the outer loop into
``output_dir`` with its summary.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from prefrl.lm.models import freeze_all_but_top_layers, is_peft

__all__ = ["check_resume", "load_policy_and_reference", "load_reward_prompts_gold", "run_trainer"]


def check_resume(cfg: Any, keys: tuple[str, ...]) -> Path | None:
    """``cfg.resume`` as a path (None when fresh); ValueError when the checkpoint used other ``keys``."""
    if not cfg.resume:
        return None
    resume = Path(cfg.resume)
    saved = torch.load(resume / "trainer_state.pt", map_location="cpu", weights_only=False)["config"]
    for key in keys:
        if key in saved and saved[key] != getattr(cfg, key):
            raise ValueError(f"resume: the checkpoint was trained with {key}={saved[key]!r}, not {getattr(cfg, key)!r}")
    return resume


def load_policy_and_reference(cfg: Any, resume: Path | None) -> tuple[Any, Any, Any]:
    """``(policy, reference or None for LoRA, tokenizer)``; ``train_top_layers`` applied to the policy.

    The reference is always the *starting* policy (``cfg.policy``), also when resuming.
    """
    from prefrl.lm.models import LoraSpec, load_causal_lm

    if resume is not None:  # the run's own weights (a LoRA adapter stays trainable)
        policy, tokenizer = load_causal_lm(resume / "policy", padding_side="left")
    else:  # a LoRA checkpoint is merged first, so "adapter disabled" is this policy (#12)
        lora = LoraSpec(cfg.lora_r, cfg.lora_alpha, 0.0) if cfg.lora_r else None
        policy, tokenizer = load_causal_lm(cfg.policy, lora=lora, padding_side="left", seed=cfg.seed, merge_adapter=True)
    ref_policy = None if is_peft(policy) else load_causal_lm(cfg.policy, merge_adapter=True)[0]
    if cfg.train_top_layers and not is_peft(policy):
        freeze_all_but_top_layers(policy, cfg.train_top_layers)
    return policy, ref_policy, tokenizer


def load_reward_prompts_gold(cfg: Any, tokenizer: Any) -> tuple[Any, list[str], Any]:
    """``(reward_fn from the frozen reward model, prompts (first max_prompts), gold_fn or None)``."""
    from prefrl.lm.data import load_prompts
    from prefrl.lm.reward_functions import RewardModelScorer, gold_reward
    from prefrl.lm.reward_model import RewardModel

    reward_model = RewardModel.from_pretrained(cfg.reward_model, trainable=False)
    reward_fn = RewardModelScorer(reward_model, RewardModel.load_tokenizer(cfg.reward_model))
    prompts = [p.prompt for p in load_prompts(cfg.prompts, tokenizer)]
    if cfg.max_prompts:
        prompts = prompts[: cfg.max_prompts]
    return reward_fn, prompts, gold_reward(cfg.gold)


def run_trainer(trainer: Any, cfg: Any, prompts: list[str], resume: Path | None) -> dict[str, Any]:
    """Restore ``resume`` (optimisers, counters, RNG; the models are already loaded), train to
    ``cfg.total_steps`` into ``cfg.output_dir``; return the run's summary."""
    out = Path(cfg.output_dir)
    if resume is not None:
        trainer.load_checkpoint(resume, load_models=False)
    out.mkdir(parents=True, exist_ok=True)
    t0, step0 = time.perf_counter(), trainer.global_step
    history = trainer.train(
        prompts,
        cfg.total_steps,
        log_path=out / "metrics.jsonl",
        tensorboard_dir=out / "tensorboard",
        checkpoint_dir=out,
        save_every=cfg.save_every,
        keep_checkpoints=cfg.keep_checkpoints,
    )
    elapsed = time.perf_counter() - t0
    return {
        "output_dir": str(out),
        "global_step": trainer.global_step,
        "steps_per_s": (trainer.global_step - step0) / elapsed if elapsed > 0 else float("nan"),
        "history": history,
    }
