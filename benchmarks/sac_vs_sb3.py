"""Our SAC (``prefrl.rl.sac``) vs Stable-Baselines3's SAC on the true reward: same env, hyper-parameters, steps.

Issue #16, item 1 ("ours or SB3's: measure and choose"). Both learn on one gymnasium env, one gradient
step per env step, with the hyper-parameters SB3 can express (one learning rate for actor, critics and
temperature; a policy step after every critic step), so ours runs with ``policy_frequency=1`` and
``q_lr = policy_lr`` here. Per run: env steps/s over the whole run (acting + learning), the mean return
of the last 10 training episodes and of a deterministic evaluation (10 episodes, seeds 10,000+).

Resumable: one JSON line per finished run in ``--results``; finished (impl, env, steps, seed) are
skipped; the table between the ``sac_vs_sb3`` markers of ``docs/benchmarks_control.md`` is rewritten
after each run.

    nice .venv/bin/python benchmarks/sac_vs_sb3.py --env Pendulum-v1 --steps 8000
    nice .venv/bin/python benchmarks/sac_vs_sb3.py --env HalfCheetah-v5 --steps 20000
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from _docs import write_section  # benchmarks/ is sys.path[0] when run as a script

MARK_START, MARK_END = "<!-- sac_vs_sb3:start -->", "<!-- sac_vs_sb3:end -->"
IMPLS = ("prefrl", "sb3")


def hyper(args: argparse.Namespace) -> dict:
    """The one set of hyper-parameters both implementations get."""
    return {"hidden": list(args.hidden), "learning_rate": args.lr, "batch_size": 256, "learning_starts": args.learning_starts,
            "buffer_size": args.steps, "gamma": 0.99, "tau": 0.005, "alpha_init": 0.2, "autotune": True}  # fmt: skip


def run_prefrl(env_id: str, steps: int, seed: int, h: dict) -> tuple[list[float], object]:
    import gymnasium as gym

    from prefrl.rl.replay import ReplayBuffer
    from prefrl.rl.sac import SACAgent, SACConfig, run_sac

    env = gym.make(env_id)
    cfg = SACConfig(hidden=tuple(h["hidden"]), policy_lr=h["learning_rate"], q_lr=h["learning_rate"],
                    batch_size=h["batch_size"], learning_starts=h["learning_starts"], buffer_size=h["buffer_size"],
                    gamma=h["gamma"], tau=h["tau"], alpha=h["alpha_init"], autotune=h["autotune"], policy_frequency=1)  # fmt: skip
    agent = SACAgent(env.observation_space.shape[0], env.action_space.low, env.action_space.high, cfg, seed=seed)
    buffer = ReplayBuffer(cfg.buffer_size, env.observation_space.shape, env.action_space.shape)
    episodes = run_sac(env, agent, buffer, steps, np.random.default_rng(seed), seed=seed)
    env.close()
    return episodes, agent.act


def run_sb3(env_id: str, steps: int, seed: int, h: dict) -> tuple[list[float], object]:
    import gymnasium as gym
    from stable_baselines3 import SAC
    from stable_baselines3.common.monitor import Monitor

    env = Monitor(gym.make(env_id))
    model = SAC("MlpPolicy", env, learning_rate=h["learning_rate"], buffer_size=h["buffer_size"],
                learning_starts=h["learning_starts"], batch_size=h["batch_size"], tau=h["tau"], gamma=h["gamma"],
                train_freq=1, gradient_steps=1, ent_coef=f"auto_{h['alpha_init']}" if h["autotune"] else h["alpha_init"],
                policy_kwargs={"net_arch": list(h["hidden"])}, seed=seed, device="cpu", verbose=0)  # fmt: skip
    model.learn(total_timesteps=steps)
    episodes = [float(r) for r in env.get_episode_rewards()]
    env.close()

    def act(obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        return model.predict(obs, deterministic=deterministic)[0]

    return episodes, act


def run_one(args: argparse.Namespace, impl: str, seed: int) -> dict:
    import gymnasium  # noqa: F401  (imports outside the timed part)

    from prefrl.control.ppo_agent import evaluate_policy

    if impl == "sb3":
        import stable_baselines3  # noqa: F401
    h = hyper(args)
    start, cpu_start = time.monotonic(), time.process_time()
    episodes, act = (run_prefrl if impl == "prefrl" else run_sb3)(args.env, args.steps, seed, h)
    seconds, cpu_seconds = time.monotonic() - start, time.process_time() - cpu_start
    evals = evaluate_policy(act, args.env, args.eval_episodes, seed=10_000 + seed)
    return {"impl": impl, "env": args.env, "steps": args.steps, "seed": seed, "sps": args.steps / seconds, "cpu_sps": args.steps / cpu_seconds,
            "minutes": round(seconds / 60, 1), "final_return": float(np.mean(episodes[-10:])) if episodes else float("nan"),
            "eval_return": float(np.mean(evals)), "hyper": h, "load": os.getloadavg()[0]}  # fmt: skip


def load_results(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _mean_std(xs: list[float], fmt: str = ".0f") -> str:
    return f"{np.mean(xs):{fmt}} ± {np.std(xs):{fmt}}" if xs else "—"


def markdown(results: list[dict]) -> str:
    lines = ["| env | steps | impl | seeds | env steps/s | env steps per CPU-second | final return (last 10 episodes) "
             "| deterministic eval (10) | minutes per run | load avg |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for env, steps in sorted({(r["env"], r["steps"]) for r in results}):
        for impl in IMPLS:
            g = [r for r in results if r["env"] == env and r["steps"] == steps and r["impl"] == impl]
            if g:
                cpu = _mean_std([r["cpu_sps"] for r in g if "cpu_sps" in r], ".1f")  # not recorded by the first runs
                lines.append(f"| {env} | {steps:,} | {impl} | {len(g)} | {_mean_std([r['sps'] for r in g], '.1f')} | {cpu} "
                             f"| {_mean_std([r['final_return'] for r in g])} | {_mean_std([r['eval_return'] for r in g])} "
                             f"| {', '.join(str(r['minutes']) for r in g)} | {', '.join(format(r['load'], '.1f') for r in g)} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def write_table(doc: Path, table: str) -> None:
    write_section(doc, MARK_START, MARK_END, table,
                  heading="## Our SAC vs SB3's SAC (#16)\n\nWritten by `benchmarks/sac_vs_sb3.py`.")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="Pendulum-v1")
    p.add_argument("--steps", type=int, default=8000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    p.add_argument("--hidden", type=int, nargs="+", default=[64, 64])
    p.add_argument("--lr", type=float, default=1e-3, help="one learning rate (actor, critics, temperature)")
    p.add_argument("--learning-starts", type=int, default=1000)
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--results", default="benchmarks/results/sac_vs_sb3.jsonl")
    p.add_argument("--doc", default="docs/benchmarks_control.md")
    p.add_argument("--table-only", action="store_true", help="rewrite the table from the results file and exit")
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    results_path = Path(args.results)
    results_path.parent.mkdir(parents=True, exist_ok=True)
    if not args.table_only:
        for seed in args.seeds:
            for impl in args.impls:
                if any(r["impl"] == impl and r["env"] == args.env and r["steps"] == args.steps and r["seed"] == seed
                       for r in load_results(results_path)):  # fmt: skip
                    continue
                print(f"[{time.strftime('%H:%M:%S')}] {impl} {args.env} {args.steps} steps seed {seed}", flush=True)
                row = run_one(args, impl, seed)
                with results_path.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"  {row['sps']:.1f} steps/s, final {row['final_return']:.1f}, eval {row['eval_return']:.1f}", flush=True)
                write_table(Path(args.doc), markdown(load_results(results_path)))
    write_table(Path(args.doc), markdown(load_results(results_path)))


if __name__ == "__main__":
    main()
