"""Named runs and per-family defaults: ``make demo`` / ``prefrl control demo``, and the Atari preset.

Every other value is a ``ControlConfig`` default. :data:`ATARI` is the one place the defaults of an
Atari run live: ``prefrl control train --env ALE/Pong-v5`` takes them for every option not given on
the command line (``prefrl.cli.options.command_from_config``'s ``preset``), :func:`atari_config`
for the Python API.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prefrl.control.config import ControlConfig, is_atari

__all__ = ["ATARI", "apply_preset", "atari_config", "demo_config", "preset_for"]

#: Atari defaults, by ControlConfig field (``ppo.…`` / ``reward.…`` for the nested configs). Measured
#: in ``benchmarks/atari_speed.py`` (docs/benchmarks_control.md, "Atari speed"): the MuJoCo defaults
#: (Nature CNN policy, 10 PPO epochs of 64-sample minibatches, 3 reward epochs over every comparison
#: at all 25 frames) ran Pong at 18 env steps/s on the 2-core machine.
ATARI: dict[str, Any] = {
    # cleanrl's ppo_atari.py: 8 envs × 128 steps, 4 epochs of 4 minibatches, lr 2.5e-4, clip 0.1, entropy 0.01.
    "n_envs": 8,
    "ppo.num_steps": 128,
    "ppo.num_minibatches": 4,
    "ppo.update_epochs": 4,
    "ppo.learning_rate": 2.5e-4,
    "ppo.clip_coef": 0.1,
    "ppo.ent_coef": 0.01,
    # The policy network of the paper's Atari agents (A3C's), 3.1× cheaper than the Nature CNN.
    "policy_cnn": "a3c",
    # The paper's reward CNN is kept; its training costs a fixed amount per round, not epochs over a
    # growing dataset: 2 minibatch steps of 16 pairs per member at 4 of each segment's 25 frames, 30
    # steps on the up-front labels (the paper pre-trains its reward predictor before the policy starts);
    # losses, accuracy and normalisation every 5th round on at most 24 pairs per split and 32 segments.
    "reward.steps_per_round": 2,
    "reward.initial_steps": 30,
    "reward.batch_size": 16,
    "reward.frames_per_segment": 4,
    "reward.eval_pairs": 24,
    "reward.normalisation_segments": 32,
    # 128 segments of 25 × 4 × 84 × 84 frames = 90 MB in memory (the pool is also checkpointed).
    "pool_size": 128,
    # The pool holds ≈ 3 rollouts (8 × 128 steps ≈ 40 segments each) and a reward round is 2 minibatch
    # steps: query selection reuses every pool segment's collection-time scores instead of a second CNN
    # pass over ≈ 1,000 frames (measured: select 23–31 % of the loop → 1 %).
    "score_reuse_rounds": 4,
    # Collect in an actor process while this one learns (control/actor.py): the loop on both cores.
    "actors": 1,
}


def preset_for(env_id: str) -> dict[str, Any]:
    """The preset of ``env_id``'s family: :data:`ATARI` for Atari ids, else none (``{}``)."""
    return dict(ATARI) if is_atari(env_id) else {}


def apply_preset(cfg: ControlConfig, preset: dict[str, Any]) -> ControlConfig:
    """``cfg`` with the preset's values (``field`` or ``nested.field`` keys) in place of its own."""
    top: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in preset.items():
        outer, _, inner = key.partition(".")
        if inner:
            nested.setdefault(outer, {})[inner] = value
        else:
            top[key] = value
    for outer, values in nested.items():
        top[outer] = dataclasses.replace(getattr(cfg, outer), **values)
    return dataclasses.replace(cfg, **top)


def atari_config(env_id: str = "ALE/Pong-v5", **overrides: Any) -> ControlConfig:
    """A ``ControlConfig`` for an Atari game with :data:`ATARI`'s defaults; ``overrides`` are ControlConfig fields."""
    base = ControlConfig(env_id=env_id, **{k: v for k, v in overrides.items() if k not in ("ppo", "reward")})
    cfg = apply_preset(base, {k: v for k, v in ATARI.items() if k.partition(".")[0] not in overrides})
    return dataclasses.replace(cfg, **{k: overrides[k] for k in ("ppo", "reward") if k in overrides})


def demo_config(run_dir: str | None = None, seed: int = 0, baseline: bool = False, progress: bool = True) -> ControlConfig:
    """What ``make demo`` runs: HalfCheetah-v5 from 400 synthetic comparisons in ≤ 15 min on 2 cores.

    300k env steps is short for PPO, but from preferences alone the cheetah goes from a random
    policy's ≈ −300 to clearly positive true returns. Rollouts (4 envs × 512 steps) and reward
    epochs per round (3) are the ``ControlConfig`` defaults, measured in ``benchmarks/label_efficiency.py``.
    """
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return ControlConfig(
        env_id="HalfCheetah-v5",
        labels=400,
        steps=300_000,
        teacher="rational",
        run_dir=run_dir or str(Path("runs") / f"demo-{stamp}"),
        seed=seed,
        true_reward_baseline=baseline,
        checkpoint_minutes=5.0,
        progress=progress,
    )
