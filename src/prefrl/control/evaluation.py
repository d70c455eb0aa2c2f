"""What the report shows of the policy itself: deterministic evaluations during the run, a clip at its end.

The training curve (true returns of the stochastic policy's own episodes) is what PPO collected;
a researcher also wants the deterministic policy's return (``ControlConfig.eval_episodes`` episodes,
``eval_points`` times, evenly spread, the last at the end) and to *see* the final policy: the first
``clip_steps`` steps of the first evaluation episode (same env settings and seed ``EVAL_SEED``, so a
whole-episode clip has that episode's return), saved as ``RUN_DIR/final_policy.mp4`` with a strip of
its frames, ``RUN_DIR/final_policy_frames.png``. This is the run's one recording of its final policy
(the deprecated ``report_video`` only lengthens it to the whole episode); whoever replays it (e.g.
``examples/backflip/run.py``'s rotation) uses :data:`EVAL_SEED` too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CLIP_NAME", "EVAL_SEED", "STRIP_NAME", "evaluation_due", "evaluate_now", "record_final_clip"]

#: The final policy's clip and its strip of frames, in the run directory.
CLIP_NAME, STRIP_NAME = "final_policy.mp4", "final_policy_frames.png"
#: Seed of the evaluation envs (fixed, so that successive evaluations compare like with like).
EVAL_SEED = 12_345


def evaluation_due(cfg: Any, done: int, global_step: int) -> bool:
    """Whether evaluation number ``done + 1`` of ``cfg.eval_points`` (at steps k·steps / points) is due."""
    if cfg.eval_episodes <= 0 or done >= cfg.eval_points:
        return False
    return global_step >= (done + 1) * cfg.steps / cfg.eval_points


def evaluate_now(loop: Any) -> tuple[int, float, float]:
    """(env step, mean, std) of the deterministic policy's true return over ``cfg.eval_episodes`` episodes."""
    cfg = loop.cfg
    returns = loop.agent.evaluate(cfg.env_id, cfg.eval_episodes, seed=EVAL_SEED, fixed_horizon=cfg.fixed_horizon,
                                  drop_ctrl_cost=cfg.drop_ctrl_cost)  # fmt: skip
    point = (int(loop.counters.global_step), float(np.mean(returns)), float(np.std(returns)))
    loop.history.evaluations.append(point)
    return point


def record_final_clip(loop: Any) -> dict[str, Any]:
    """The final policy's clip as ``RUN_DIR/final_policy.mp4`` and its strip of frames (``final_policy_frames.png``):
    ``{"path", "strip", "return", "steps"}``, or ``{"reason"}`` when there is none (it cannot render, or 0 steps)."""
    from prefrl.control.render import record_episode

    cfg = loop.cfg
    steps = cfg.final_clip_steps
    if steps <= 0:
        return {"reason": "clip_steps is 0"}
    path, strip = Path(loop.run_dir) / CLIP_NAME, Path(loop.run_dir) / STRIP_NAME
    env_kwargs = {"fixed_horizon": cfg.fixed_horizon, "drop_ctrl_cost": cfg.drop_ctrl_cost}
    try:
        out, ret = record_episode(cfg.env_id, lambda o: loop.agent.act(np.asarray(o)[None])[0], path, seed=EVAL_SEED,
                                  max_steps=steps, env_kwargs=env_kwargs, strip=strip)  # fmt: skip
    except Exception as e:  # noqa: BLE001 - no renderer here (pygame, GL): the report says why, the run stands
        path.unlink(missing_ok=True)
        strip.unlink(missing_ok=True)
        return {"reason": " ".join(str(e).split())[:300] or type(e).__name__}
    return {"path": str(out), "strip": str(strip), "return": ret, "steps": steps}
