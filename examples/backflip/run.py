"""Hopper learns a backflip from a judge alone (Christiano et al. 2017, §3.2), as one `control train` run.

    MUJOCO_GL=osmesa .venv/bin/python examples/backflip/run.py --out runs/backflip            # the full run
    MUJOCO_GL=osmesa .venv/bin/python examples/backflip/run.py --out /tmp/bf --quick          # smoke (~1 min)
    MUJOCO_GL=osmesa .venv/bin/python examples/backflip/run.py --out runs/backflip --finish   # a run stopped early

It assembles the command line ``prefrl control train --env backflip_env:HopperBackflip-v0 --teacher judge
--judge examples/backflip/judge.py:score_segment --clip-steps 1000 …`` (the run's report.html then has
the comparison count, the return curves, and the final policy's episode as a video and a strip of
frames), then measures the rotation of that episode: ``RUN/rotation.json``. The env is Hopper-v5
without its healthy termination (``backflip_env.py``): with it, a torso tilted past 11.5° ends the
episode, so no flip could happen.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ENV = "backflip_env:HopperBackflip-v0"  # importable from HERE (this script's folder is on sys.path)


def command(out: Path, quick: bool, labels: int, steps: int, seed: int) -> list[str]:
    if quick:
        labels, steps = 40, 8192
    return [sys.executable, "-m", "prefrl", "control", "train", "--env", ENV, "--teacher", "judge",
            "--judge", f"{HERE / 'judge.py'}:score_segment", "--labels", str(labels), "--steps", str(steps),
            "--fixed-horizon", "1000", "--seed", str(seed), "--clip-steps", "1000", "--run-dir", str(out)]


def rotation(run_dir: Path) -> dict[str, float]:
    """Torso rotation of the report's episode (same env, seed ``EVAL_SEED`` and deterministic policy as final_policy.mp4).

    ``backward_turns``: net backward rotation of the torso hinge over the episode / 2π (a backflip
    is one); ``max_backward_turns``: the furthest backwards it got at any time.
    """
    from prefrl.control.envs import make_env
    from prefrl.control.evaluation import EVAL_SEED
    from prefrl.control.run_state import load_agent

    agent, cfg = load_agent(run_dir)
    env = make_env(cfg.env_id, seed=EVAL_SEED, fixed_horizon=cfg.fixed_horizon, record_sim_state=False)
    obs, _ = env.reset()
    angles = [float(env.unwrapped.data.qpos[2])]
    for _ in range(cfg.fixed_horizon or 1000):
        obs, _, terminated, truncated, _ = env.step(agent.act(np.asarray(obs)[None])[0])
        angles.append(float(env.unwrapped.data.qpos[2]))
        if terminated or truncated:
            break
    env.close()
    back = -(np.asarray(angles) - angles[0])  # rooty's axis is +y: a backward turn lowers the angle
    return {"steps": len(angles) - 1, "backward_turns": float(back[-1] / (2 * np.pi)),
            "max_backward_turns": float(back.max() / (2 * np.pi))}


def finish(run_dir: Path) -> None:
    """Resume the checkpointed run with its budget cut to the steps it reached: the loop goes straight to its end."""
    from prefrl.control.loop import PreferenceLoop

    loop = PreferenceLoop.resume(run_dir, clip_steps=1000)
    loop.cfg.steps = loop.counters.global_step
    print(f"finishing {run_dir} at {loop.counters.global_step} env steps, {loop.counters.queries_posted} comparisons",
          flush=True)
    loop.run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="Run directory (must not exist).")
    parser.add_argument("--labels", type=int, default=900, help="Comparisons (the paper: 900 for the backflip).")
    parser.add_argument("--steps", type=int, default=2_000_000, help="Env steps.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="A tiny budget, to check that it runs.")
    parser.add_argument("--finish", action="store_true",
                        help="Finish the run in --out where its last checkpoint stopped (e.g. killed when its time "
                             "was up): last reward round, report with the video, rotation.")
    args = parser.parse_args()
    if args.finish:
        finish(args.out)
    else:
        cmd = command(args.out, args.quick, args.labels, args.steps, args.seed)
        print(" ".join(cmd), flush=True)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p))
        code = subprocess.call(cmd, env=env)
        if code:
            sys.exit(code)
    turns = rotation(args.out)
    (args.out / "rotation.json").write_text(json.dumps(turns, indent=1))
    print(json.dumps(turns), flush=True)


if __name__ == "__main__":
    main()
