"""Env steps per second of prefrl's PPO (collect + update) vs Stable-Baselines3's PPO.

Same machine, same run, same hyper-parameters (cleanrl's MuJoCo defaults: 2048 steps per
env, 32 minibatches, 10 epochs, lr 3e-4 annealed, clipped value loss, obs normalisation,
64-64 tanh actor and critic), same env stack (gymnasium ``make`` + our ``make_env``), one
torch thread. Each system first runs one untimed warm-up iteration, then ``--iters``
timed iterations, interleaved between the systems so that a change in machine load hits
all of them; the figure is env steps / wall seconds of collect + update.

    python benchmarks/ppo_throughput.py                    # HalfCheetah-v5 and CartPole-v1
    python benchmarks/ppo_throughput.py --iters 5 --out docs/benchmarks_ppo.md

Needs ``stable-baselines3`` (``pip install stable-baselines3``; see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from prefrl.control.envs import make_env, make_vec_env
from prefrl.control.ppo_agent import PPOAgent
from prefrl.rl.ppo import PPOConfig


def make_prefrl(env_id: str, n_envs: int, iters: int, record_sim_state: bool) -> Callable[[], None]:
    """One PPO iteration (collect + update) of our agent, warmed up."""
    cfg = PPOConfig(total_steps=(iters + 1) * 2048 * n_envs)
    agent = PPOAgent(make_vec_env(env_id, n_envs=n_envs, seed=0, record_sim_state=record_sim_state), cfg, seed=0)

    def iteration() -> None:
        r = agent.collect()
        agent.update(r, r.true_rewards)

    iteration()  # warm-up
    return iteration


def make_sb3(env_id: str, n_envs: int) -> Callable[[], None]:
    """One PPO iteration (``learn`` of one rollout) of SB3 with the same hyper-parameters, warmed up."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    venv = DummyVecEnv([lambda i=i: make_env(env_id, seed=i, record_sim_state=False) for i in range(n_envs)])
    venv = VecNormalize(venv, norm_obs=True, norm_reward=False, clip_obs=10.0)
    model = PPO(
        "MlpPolicy",
        venv,
        learning_rate=lambda progress: 3e-4 * progress,  # linear annealing, as anneal_lr
        n_steps=2048,
        batch_size=2048 * n_envs // 32,
        n_epochs=10,
        gamma=0.99,
        gae_lambda=0.95,
        clip_range=0.2,
        clip_range_vf=0.2,
        ent_coef=0.0,
        vf_coef=0.5,
        max_grad_norm=0.5,
        policy_kwargs={"net_arch": {"pi": [64, 64], "vf": [64, 64]}, "activation_fn": torch.nn.Tanh},
        seed=0,
        device="cpu",
        verbose=0,
    )

    def iteration() -> None:
        model.learn(2048 * n_envs, reset_num_timesteps=False)

    iteration()  # warm-up
    return iteration


def bench(env_id: str, n_envs: int, iters: int) -> tuple[list[float], list[float]]:
    """Steps/s of (prefrl, prefrl + sim_state, SB3) by wall clock and by CPU time.

    Iterations are interleaved so that load drifts hit all three. The CPU-time figure
    (``time.process_time``; every system runs on one thread) is what the wall clock would
    read on an idle core, so it stays comparable when other jobs share the machine.
    """
    systems = [
        make_prefrl(env_id, n_envs, iters, record_sim_state=False),
        make_prefrl(env_id, n_envs, iters, record_sim_state=True),
        make_sb3(env_id, n_envs),
    ]
    wall = [0.0, 0.0, 0.0]
    cpu = [0.0, 0.0, 0.0]
    for _ in range(iters):
        for k, iteration in enumerate(systems):
            t0, c0 = time.perf_counter(), time.process_time()
            iteration()
            wall[k] += time.perf_counter() - t0
            cpu[k] += time.process_time() - c0
    steps = iters * 2048 * n_envs
    return [steps / s for s in wall], [steps / s for s in cpu]


def bench_loop(steps: int) -> tuple[float, float, float]:
    """The whole preference loop (``make demo``'s configuration, cut to ``steps``): (steps/s wall, CPU, labels)."""
    import dataclasses
    import tempfile

    from prefrl.control.loop import train
    from prefrl.control.presets import demo_config

    with tempfile.TemporaryDirectory() as tmp:
        cfg = demo_config(run_dir=str(Path(tmp) / "run"), progress=False)
        labels = max(8, round(cfg.labels * steps / cfg.steps))
        cfg = dataclasses.replace(cfg, steps=steps, labels=labels, ppo=dataclasses.replace(cfg.ppo, total_steps=steps))
        t0, c0 = time.perf_counter(), time.process_time()
        train(cfg)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return steps / wall, steps / cpu, float(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=["HalfCheetah-v5", "CartPole-v1"])
    parser.add_argument("--n-envs", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3, help="timed PPO iterations (of 2048·n_envs steps)")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks_ppo.md"))
    parser.add_argument(
        "--loop-steps", type=int, default=61_440,
        help="env steps of the whole-loop measurement (make demo's configuration, labels scaled); 0 skips it",
    )  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(1)

    import stable_baselines3

    load_before = os.getloadavg()[0]
    rows = []
    for env_id in args.envs:
        wall, cpu = bench(env_id, args.n_envs, args.iters)
        rows.append((env_id, wall, cpu))
        print(f"{env_id:16s} wall: prefrl {wall[0]:6.0f} | +sim_state {wall[1]:6.0f} | SB3 {wall[2]:6.0f} sps "
              f"({wall[0] / wall[2]:4.2f}×)   CPU time: {cpu[0]:6.0f} | {cpu[1]:6.0f} | {cpu[2]:6.0f} sps "
              f"({cpu[0] / cpu[2]:4.2f}×)", flush=True)  # fmt: skip
    loop = bench_loop(args.loop_steps) if args.loop_steps > 0 else None
    if loop is not None:
        print(f"whole loop (HalfCheetah-v5, demo config, {args.loop_steps} steps, {loop[2]:.0f} labels): "
              f"{loop[0]:.0f} sps wall, {loop[1]:.0f} sps CPU time", flush=True)  # fmt: skip
    load_after = os.getloadavg()[0]

    lines = [
        "## PPO throughput: prefrl vs Stable-Baselines3",
        "",
        f"Env steps per second of collect + update, {args.n_envs} env(s), {args.iters} timed iterations of "
        f"2048·n_envs steps (interleaved between systems) after one warm-up, 1 torch thread, cleanrl MuJoCo hyper-parameters for both "
        f"(32 minibatches × 10 epochs, 64-64 tanh MLPs, obs normalisation, clipped value loss).",
        f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} thread; "
        f"torch {torch.__version__}, stable-baselines3 {stable_baselines3.__version__}, numpy {np.__version__}.",
        f"Load average (1 min) {load_before:.1f} before and {load_after:.1f} after the run on {os.cpu_count()} cores. "
        "Steps/s by wall clock, and by CPU time of the process (`time.process_time`, every system on one thread): "
        "what the wall clock would read on an idle core, so it stays comparable when the machine is shared.",
        "Generated by `python benchmarks/ppo_throughput.py`.",
        "",
        "| env | clock | prefrl PPO | prefrl PPO + sim_state | SB3 PPO | prefrl / SB3 |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for e, wall, cpu in rows:
        for clock, (o, s, b) in (("wall", wall), ("CPU time", cpu)):
            lines.append(f"| {e} | {clock} | {o:,.0f} | {s:,.0f} | {b:,.0f} | {o / b:.2f}× |")
    if loop is not None:
        lines += [
            "",
            "### The whole preference loop",
            "",
            f"`make demo`'s configuration (HalfCheetah-v5, 4 envs × 512-step rollouts, 3-member reward ensemble, "
            f"3 reward epochs per round, disagreement selection, rational teacher) cut to {args.loop_steps:,} steps "
            f"and {loop[2]:.0f} labels, synchronous mode, start to finished report: collect, ask, answer, reward "
            f"training, reward prediction, PPO update, checkpoints and report included.",
            "",
            "| clock | env steps/s |",
            "|---|---:|",
            f"| wall | {loop[0]:,.0f} |",
            f"| CPU time (main thread's process) | {loop[1]:,.0f} |",
        ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
