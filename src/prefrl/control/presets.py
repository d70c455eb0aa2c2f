"""Named runs: what ``make demo`` / ``prefrl control demo`` run. Every other value is a ``ControlConfig`` default."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from prefrl.control.config import ControlConfig

__all__ = ["demo_config"]


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
