"""Checkpoints of LM PPO: policy, critic, both optimisers, KL controller, counters, generator.

A checkpoint directory holds ``policy/`` (HF format + tokenizer; a LoRA policy as its
adapter), ``critic/`` (:meth:`~prefrl.lm.reward_model.RewardModel.save_pretrained`),
``trainer_state.pt`` and ``ppo_config.json``. The global torch RNG is never saved: the
trainer draws only from its own generator.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from prefrl.lm.models import is_peft
from prefrl.utils.files import atomic_write

__all__ = ["save_ppo_checkpoint", "load_ppo_checkpoint", "TRAINER_STATE_FILE"]

TRAINER_STATE_FILE = "trainer_state.pt"


def save_ppo_checkpoint(trainer: Any, directory: str | Path) -> Path:
    """Write ``trainer``'s (an :class:`~prefrl.lm.ppo.LMPPOTrainer`) checkpoint into ``directory``.

    The policy directory loads with ``AutoModelForCausalLM.from_pretrained`` (or, for a LoRA
    policy, ``PeftModel.from_pretrained`` on the base).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    trainer.policy.save_pretrained(directory / "policy")
    trainer.tokenizer.save_pretrained(directory / "policy")
    if hasattr(trainer.critic, "save_pretrained"):
        trainer.critic.save_pretrained(directory / "critic")
    else:
        atomic_write(directory / "critic" / "critic.pt", lambda tmp: torch.save(trainer.critic.state_dict(), tmp))
    state = {
        "policy_optimizer": trainer.policy_optimizer.state_dict(),
        "critic_optimizer": trainer.critic_optimizer.state_dict(),
        "kl_controller": dict(vars(trainer.kl_controller)),
        "global_step": trainer.global_step,
        "n_samples": trainer.n_samples,
        "generator": trainer.generator.get_state(),
        "config": trainer.cfg.to_dict(),
    }
    atomic_write(directory / TRAINER_STATE_FILE, lambda tmp: torch.save(state, tmp))
    atomic_write(directory / "ppo_config.json", json.dumps(trainer.cfg.to_dict(), indent=2))
    return directory


def load_ppo_checkpoint(trainer: Any, directory: str | Path, load_models: bool = True) -> None:
    """Restore a checkpoint written by :func:`save_ppo_checkpoint` into ``trainer``.

    With ``load_models=False`` only the optimisers, KL controller, counters and generator are
    restored (when the caller already built the policy and critic from the checkpoint's
    ``policy/`` and ``critic/`` directories).
    """
    directory = Path(directory)
    state_path = directory / TRAINER_STATE_FILE
    if not state_path.is_file():
        raise FileNotFoundError(f"no {TRAINER_STATE_FILE} in {directory}")
    state = torch.load(state_path, map_location="cpu", weights_only=False)
    if load_models:
        _load_policy_weights(trainer, directory / "policy")
        _load_critic_weights(trainer, directory / "critic")
    try:
        trainer.policy_optimizer.load_state_dict(state["policy_optimizer"])
        trainer.critic_optimizer.load_state_dict(state["critic_optimizer"])
    except ValueError as exc:
        raise ValueError(
            f"{state_path}: the optimiser state does not fit this trainer's trainable parameters "
            "(resume with the same LoRA / train_top_layers settings as the saved run)"
        ) from exc
    for key, value in state["kl_controller"].items():
        setattr(trainer.kl_controller, key, value)
    trainer.global_step = int(state["global_step"])
    trainer.n_samples = int(state["n_samples"])
    trainer.generator.set_state(state["generator"])


def _load_policy_weights(trainer: Any, path: Path) -> None:
    if is_peft(trainer.policy):
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(trainer.policy, load_file(str(path / "adapter_model.safetensors")))
        return
    loaded = type(trainer.policy).from_pretrained(path, dtype=next(trainer.policy.parameters()).dtype)
    trainer.policy.load_state_dict(loaded.state_dict())


def _load_critic_weights(trainer: Any, path: Path) -> None:
    if (path / "critic.pt").is_file():
        trainer.critic.load_state_dict(torch.load(path / "critic.pt", map_location="cpu"))
        return
    loaded = type(trainer.critic).from_pretrained(path)
    trainer.critic.load_state_dict(loaded.state_dict())
