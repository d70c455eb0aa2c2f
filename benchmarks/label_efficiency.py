"""Label efficiency (Christiano et al. 2017, Fig. 1): preference runs with 350 / 700 / 1400
synthetic labels vs PPO on the true reward, equal env steps, several seeds.

Long: run it in the background and read the table when it is done; finished runs are kept in
``RUNS_DIR/results.jsonl`` and skipped on a restart, so the script can be killed and rerun.

    nohup .venv/bin/python benchmarks/label_efficiency.py --env HalfCheetah-v5 \
        --labels 350 700 1400 --seeds 0 1 2 --steps 1000000 > bench.log 2>&1 &

Reduced version (what fits in an afternoon on 2 cores):

    .venv/bin/python benchmarks/label_efficiency.py --steps 200000 --labels 175 350 --seeds 0 1 2

Each result row: final true return (mean of the last 10 training episodes) and the true
return of the deterministic (mean-action) and of the stochastic (sampled-action) policy over
``--eval-episodes`` fresh episodes, and the wall-clock minutes of the run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np

from prefrl.control.baseline import train_true_reward_ppo
from prefrl.control.config import ControlConfig
from prefrl.control.envs import make_vec_env
from prefrl.control.loop import PreferenceLoop
from prefrl.control.ppo_agent import PPOAgent

#: Every knob not given on the command line is ControlConfig's default (the measured best).
DEFAULTS = ControlConfig()


def make_config(args: argparse.Namespace, labels: int, seed: int, run_dir: Path) -> ControlConfig:
    return ControlConfig(
        env_id=args.env,
        labels=max(labels, 1),
        steps=args.steps,
        teacher=args.teacher,
        n_envs=args.n_envs,
        ppo=dataclasses.replace(DEFAULTS.ppo, num_steps=args.n_steps, clip_vloss=args.clip_vloss, anneal_lr=args.anneal_lr),
        reward=dataclasses.replace(DEFAULTS.reward, epochs=args.reward_epochs),
        run_dir=str(run_dir),
        seed=seed,
        fixed_horizon=args.fixed_horizon,
        checkpoint_minutes=10.0,
        progress=False,
    )


def last_mean(episodes: list[tuple[int, float]], n: int = 10) -> float:
    return float(np.mean([r for _, r in episodes[-n:]])) if episodes else float("nan")


def evaluate(agent: PPOAgent, env_id: str, n_episodes: int, seed: int, deterministic: bool, **env_kwargs) -> list[float]:
    """True returns of ``n_episodes`` episodes (one per env, seeds ``seed + i``) of the mean or the sampled action."""
    envs = make_vec_env(env_id, n_envs=n_episodes, seed=seed, record_sim_state=False, **env_kwargs)
    try:
        obs, _ = envs.reset()
        returns, finished = np.zeros(n_episodes), np.zeros(n_episodes, bool)
        while not finished.all():
            obs, reward, terminated, truncated, _ = envs.step(agent.act(obs, deterministic=deterministic))
            returns += np.where(finished, 0.0, reward)
            finished |= terminated | truncated
    finally:
        envs.close()
    return returns.tolist()


def run_one(args: argparse.Namespace, labels: int, seed: int) -> dict:
    """labels = 0 means PPO on the true reward."""
    name = f"{args.env.replace('/', '_')}-{'true' if labels == 0 else f'{labels}labels'}-s{seed}"
    name += f"-rep{args.reward_epochs}" + ("-clipv" if args.clip_vloss else "") + ("-anneal" if args.anneal_lr else "")
    run_dir = Path(args.runs_dir) / name
    start = time.monotonic()
    cfg = make_config(args, labels, seed, run_dir)
    if labels == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        agent, episodes = train_true_reward_ppo(cfg)
    else:
        loop = PreferenceLoop.resume(run_dir) if (run_dir / "checkpoint.pt").exists() else PreferenceLoop(cfg)
        loop.run()
        agent, episodes = loop.agent, loop.history.episodes
    minutes = (time.monotonic() - start) / 60  # training only, as imitation's side
    evals = [
        evaluate(agent, args.env, args.eval_episodes, 10_000 + seed, det, fixed_horizon=args.fixed_horizon)
        for det in (True, False)
    ]
    eval_return, eval_stochastic = (float(np.mean(e)) for e in evals)
    return {
        "env": args.env,
        "labels": labels,
        "seed": seed,
        "steps": args.steps,
        "final_return": last_mean(episodes),
        "clip_vloss": args.clip_vloss,
        "anneal_lr": args.anneal_lr,
        "reward_epochs": args.reward_epochs,
        "eval_return": eval_return,
        "eval_return_stochastic": eval_stochastic,
        "curve": [(int(s), float(r)) for s, r in episodes[:: max(1, len(episodes) // 50)]],
        "minutes": round(minutes, 1),
    }


def load_results(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _same_setup(r: dict, args: argparse.Namespace) -> bool:
    # Rows written before these fields existed: cleanrl's PPO settings, 10 reward epochs.
    return (
        r["env"] == args.env
        and r["steps"] == args.steps
        and r.get("clip_vloss", True) == args.clip_vloss
        and r.get("anneal_lr", True) == args.anneal_lr
        and r.get("reward_epochs", 10) == args.reward_epochs
    )


def _mean_std(xs: list[float]) -> str:
    xs = [x for x in xs if np.isfinite(x)]
    return f"{np.mean(xs):.0f} ± {np.std(xs):.0f} ({', '.join(f'{x:.0f}' for x in xs)})" if xs else "—"


def markdown(results: list[dict], args: argparse.Namespace) -> str:
    rows = [r for r in results if _same_setup(r, args)]
    lines = [
        f"### {args.env}, {args.steps:,} env steps, PPO value clipping {'on' if args.clip_vloss else 'off'}, "
        f"lr annealing {'on' if args.anneal_lr else 'off'}, {args.reward_epochs} reward epochs per round",
        "",
        "| reward | seeds | final true return (last 10 episodes), mean ± std (per seed) | deterministic eval "
        "| stochastic eval | minutes per seed |",
        "|---|---|---|---|---|---|",
    ]
    for labels in sorted({r["labels"] for r in rows}, key=lambda x: (x == 0, x)):
        group = [r for r in rows if r["labels"] == labels]
        what = "true reward (PPO)" if labels == 0 else f"{labels} synthetic labels"
        lines.append(
            f"| {what} | {len(group)} | {_mean_std([r['final_return'] for r in group])} "
            f"| {_mean_std([r['eval_return'] for r in group])} "
            f"| {_mean_std([r.get('eval_return_stochastic', float('nan')) for r in group])} "
            f"| {', '.join(str(r['minutes']) for r in group)} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="HalfCheetah-v5")
    p.add_argument("--labels", type=int, nargs="+", default=[350, 700, 1400])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=1_000_000)
    p.add_argument("--n-envs", type=int, default=DEFAULTS.n_envs)
    p.add_argument("--n-steps", type=int, default=DEFAULTS.rollout_steps)
    p.add_argument("--reward-epochs", type=int, default=DEFAULTS.reward.epochs,
                   help="reward-model epochs per round (3: the demo's, and imitation's per iteration)")
    p.add_argument("--clip-vloss", action="store_true", help="PPO: clip the value change to ±0.2 (cleanrl; see control_ppo_config)")
    p.add_argument("--anneal-lr", action="store_true", help="PPO: anneal the lr to 0 over the run (cleanrl; see control_ppo_config)")
    p.add_argument("--teacher", default="rational")
    p.add_argument("--fixed-horizon", type=int, default=None, help="e.g. 1000 for Hopper (the paper's App. A)")
    p.add_argument("--eval-episodes", type=int, default=5)
    p.add_argument("--no-true-reward", action="store_true", help="skip the true-reward PPO runs")
    p.add_argument("--runs-dir", default="runs/bench_label_efficiency")
    p.add_argument("--out", default="docs/benchmarks_control.md")
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    runs_dir = Path(args.runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    results_path = runs_dir / "results.jsonl"
    todo = [(labels, seed) for seed in args.seeds for labels in ([] if args.no_true_reward else [0]) + args.labels]
    for labels, seed in todo:
        done = load_results(results_path)
        if any(_same_setup(r, args) and r["labels"] == labels and r["seed"] == seed for r in done):
            continue
        print(f"[{time.strftime('%H:%M:%S')}] {args.env} labels={labels or 'true reward'} seed={seed}", flush=True)
        row = run_one(args, labels, seed)
        with results_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"  final true return {row['final_return']:.1f}, eval {row['eval_return']:.1f} (deterministic), "
              f"{row['eval_return_stochastic']:.1f} (stochastic), {row['minutes']} min", flush=True)
    table = markdown(load_results(results_path), args)
    print(table)
    print(f"(raw results: {results_path}; paste the table into {args.out})")


if __name__ == "__main__":
    main()
