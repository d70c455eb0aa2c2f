"""Checkpoints of the LM RL trainers: policy, critic (PPO only), optimisers, KL controller, counters, generator.

One checkpoint holds ``policy/`` (HF format + tokenizer; a LoRA policy as its adapter),
``critic/`` (:meth:`~prefrl.lm.reward_model.RewardModel.save_pretrained`), ``trainer_state.pt``
and a JSON copy of the config named by the trainer (``config_file``: ``ppo_config.json``
for PPO, ``rl_config.json`` for GRPO / RLOO / REINFORCE++, ``online_dpo_config.json`` for online
DPO; runs written before the critic-free trainers had their own name hold ``ppo_config.json``,
which nothing reads back: resuming reads ``trainer_state.pt``). A run directory keeps them
atomically (#12 item 6)::

    run/checkpoints/step-00000040/   one complete checkpoint per save (the last N are kept)
    run/current -> checkpoints/step-00000040
    run/policy, run/critic, run/trainer_state.pt, run/<config_file> -> current/…

Each save is written to a fresh ``checkpoints/.tmp-*`` directory, renamed to its step name
once complete, and then ``current`` is switched by replacing one symlink (``os.replace``), so
weights, optimiser state and counters always change together: a run killed during a save
resumes from the previous checkpoint, and the partial directory is removed by the next save.
``run/policy`` stays a loadable HF model directory. The global torch RNG is never saved: the
trainer draws only from its own generator.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from prefrl.lm.models import is_peft
from prefrl.utils.files import fsync_dir

__all__ = ["save_ppo_checkpoint", "load_ppo_checkpoint", "checkpoint_dir_of", "TRAINER_STATE_FILE"]

TRAINER_STATE_FILE = "trainer_state.pt"
CHECKPOINTS = "checkpoints"
CURRENT = "current"
#: Entries of a run directory that point into ``current``.
LINKED = ("policy", "critic", TRAINER_STATE_FILE, "ppo_config.json", "rl_config.json", "online_dpo_config.json")


def save_ppo_checkpoint(trainer: Any, directory: str | Path, keep_last: int = 3) -> Path:
    """Save ``trainer`` (an :class:`~prefrl.lm.ppo.LMPPOTrainer`) into run directory ``directory``.

    Writes ``checkpoints/step-NNNNNNNN`` atomically, switches ``current`` to it and keeps the
    last ``keep_last`` step checkpoints. Returns the new checkpoint's directory. The policy
    directory loads with ``AutoModelForCausalLM.from_pretrained`` (or, for a LoRA policy,
    ``PeftModel.from_pretrained`` on its base).
    """
    if keep_last < 1:
        raise ValueError(f"keep_last must be ≥ 1, got {keep_last}")
    directory = Path(directory)
    root = directory / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    for partial in root.glob(".tmp-*"):  # left by a save that was killed
        shutil.rmtree(partial, ignore_errors=True)
    name = f"step-{trainer.global_step:08d}"
    final = root / name
    if not final.is_dir():  # the same step saved twice (save_every hits the last step): nothing new
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=root))
        _write(trainer, tmp)
        _fsync_tree(tmp)
        os.rename(tmp, final)
        fsync_dir(root)
    _switch_current(directory, final)
    _prune(root, keep_last, final)
    return final


def checkpoint_dir_of(directory: str | Path) -> Path:
    """The checkpoint a path stands for: a run directory's ``current`` one, or the path itself."""
    directory = Path(directory)
    return directory / CURRENT if (directory / CURRENT).is_dir() else directory


def _switch_current(directory: Path, final: Path) -> None:
    link = directory / f".{CURRENT}.tmp"
    link.unlink(missing_ok=True)
    os.symlink(os.path.relpath(final, directory), link)
    os.replace(link, directory / CURRENT)  # the one atomic step of a save
    for entry in LINKED:
        path, target = directory / entry, os.path.join(CURRENT, entry)
        if not (final / entry).exists():  # no critic/ for a critic-free trainer; one config name per trainer
            if path.is_symlink():  # left by an older save of this run (e.g. ppo_config.json, now rl_config.json)
                path.unlink()
            continue
        if path.is_symlink() and os.readlink(path) == target:
            continue
        if path.is_dir() and not path.is_symlink():  # a checkpoint written in place by an older prefrl
            shutil.rmtree(path)
        tmp = directory / f".{entry}.link.tmp"
        tmp.unlink(missing_ok=True)
        os.symlink(target, tmp)
        os.replace(tmp, path)
    fsync_dir(directory)


def _prune(root: Path, keep_last: int, current: Path) -> None:
    steps = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-"))
    for old in steps[:-keep_last]:
        if old == current:
            continue
        doomed = root / f".tmp-delete-{old.name}"
        os.rename(old, doomed)  # atomic: a kill mid-delete leaves a .tmp-* the next save removes
        shutil.rmtree(doomed, ignore_errors=True)


def _fsync_tree(directory: Path) -> None:
    for path in directory.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    for sub in [directory, *(p for p in directory.rglob("*") if p.is_dir())]:
        fsync_dir(sub)


def _write(trainer: Any, directory: Path) -> None:
    """One checkpoint's files into ``directory``."""
    trainer.policy.save_pretrained(directory / "policy")
    trainer.tokenizer.save_pretrained(directory / "policy")
    critic = getattr(trainer, "critic", None)  # None: GRPO, RLOO, REINFORCE++
    if critic is not None and hasattr(critic, "save_pretrained"):
        critic.save_pretrained(directory / "critic")
    elif critic is not None:
        (directory / "critic").mkdir()
        torch.save(critic.state_dict(), directory / "critic" / "critic.pt")
    state = {
        "policy_optimizer": trainer.policy_optimizer.state_dict(),
        "kl_controller": dict(vars(trainer.kl_controller)),
        "global_step": trainer.global_step,
        "n_samples": trainer.n_samples,
        "generator": trainer.generator.get_state(),
        "config": trainer.cfg.to_dict(),
        "gold_monitor": trainer.gold_monitor.state_dict(),  # the start's proxy–gold calibration
    }
    if critic is not None:
        state["critic_optimizer"] = trainer.critic_optimizer.state_dict()
    state.update(trainer.extra_state())  # e.g. online DPO's run id and last trained answer
    torch.save(state, directory / TRAINER_STATE_FILE)
    (directory / trainer.config_file).write_text(json.dumps(trainer.cfg.to_dict(), indent=2))


def load_ppo_checkpoint(trainer: Any, directory: str | Path, load_models: bool = True) -> None:
    """Restore a checkpoint written by :func:`save_ppo_checkpoint` into ``trainer``.

    ``directory`` is a run directory (its ``current`` checkpoint is read), one checkpoint
    directory, or a checkpoint an older prefrl wrote in place. With ``load_models=False`` only the optimisers, KL controller, counters and generator are
    restored (when the caller already built the policy and critic from the checkpoint's
    ``policy/`` and ``critic/`` directories).
    """
    directory = checkpoint_dir_of(directory)
    state_path = directory / TRAINER_STATE_FILE
    if not state_path.is_file():
        raise FileNotFoundError(f"no {TRAINER_STATE_FILE} in {directory}")
    state = torch.load(state_path, map_location="cpu", weights_only=False)
    if load_models:
        _load_policy_weights(trainer, directory / "policy")
        if getattr(trainer, "critic", None) is not None:
            _load_critic_weights(trainer, directory / "critic")
    try:
        trainer.policy_optimizer.load_state_dict(state["policy_optimizer"])
        if getattr(trainer, "critic", None) is not None:
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
    if "gold_monitor" in state:  # absent in older checkpoints: the monitor starts afresh
        trainer.gold_monitor.load_state_dict(state["gold_monitor"])
    trainer.load_extra_state(state)


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
