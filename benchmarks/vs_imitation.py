"""The same preference task with the `imitation` library (HumanCompatibleAI), for comparison.

imitation pins its own gymnasium / SB3, so it lives in its own venv outside the repo and
this script imports nothing from prefrl:

    python3 -m venv /work/bench-venv
    # -c constraints.txt keeps the CPU torch 2.13.0 (a bare install pulls a CUDA build);
    # imitation 1.0.1 brings SB3 2.2.1 and needs gymnasium 0.29 (MuJoCo ids -v4).
    /work/bench-venv/bin/pip install -c constraints.txt imitation==1.0.1 "gymnasium[mujoco]==0.29.*"
    OMP_NUM_THREADS=1 /work/bench-venv/bin/python benchmarks/vs_imitation.py --env HalfCheetah-v4 \
        --labels 700 --steps 150000 --seeds 0 1 2 --out runs/bench_imitation.jsonl

It runs imitation's ``PreferenceComparisons`` (SB3 PPO, ``BasicRewardNet``, synthetic
Bradley-Terry gatherer on the true reward, hyperbolic query schedule) and appends one JSON
row per seed with the true return of the deterministic (mean-action) policy and of the
stochastic policy (actions sampled as in training), each over ``--eval-episodes`` episodes. Compare with
``benchmarks/label_efficiency.py`` rows at the same labels and steps (ids ``-v4`` here,
``-v5`` in prefrl: the dynamics and reward are the same).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def run(
    env_id: str, labels: int, steps: int, seed: int, n_envs: int, eval_episodes: int, save_dir: Path | None = None
) -> dict:
    from imitation.algorithms import preference_comparisons
    from imitation.policies.base import FeedForward32Policy, NormalizeFeaturesExtractor
    from imitation.rewards.reward_nets import BasicRewardNet
    from imitation.util.networks import RunningNorm
    from imitation.util.util import make_vec_env
    from stable_baselines3 import PPO
    from stable_baselines3.common.evaluation import evaluate_policy

    rng = np.random.default_rng(seed)
    venv = make_vec_env(env_id, rng=rng, n_envs=n_envs)
    reward_net = BasicRewardNet(venv.observation_space, venv.action_space, normalize_input_layer=RunningNorm)
    fragmenter = preference_comparisons.RandomFragmenter(warning_threshold=0, rng=rng)
    gatherer = preference_comparisons.SyntheticGatherer(rng=rng)
    preference_model = preference_comparisons.PreferenceModel(reward_net)
    reward_trainer = preference_comparisons.BasicRewardTrainer(
        preference_model=preference_model,
        loss=preference_comparisons.CrossEntropyRewardLoss(),
        epochs=3,
        rng=rng,
    )
    agent = PPO(
        policy=FeedForward32Policy,
        policy_kwargs=dict(
            features_extractor_class=NormalizeFeaturesExtractor,
            features_extractor_kwargs=dict(normalize_class=RunningNorm),
        ),
        env=venv,
        seed=seed,
        n_steps=2048 // n_envs,
        batch_size=64,
        ent_coef=0.0,
        learning_rate=3e-4,
        n_epochs=10,
    )
    trajectory_generator = preference_comparisons.AgentTrainer(
        algorithm=agent, reward_fn=reward_net, venv=venv, exploration_frac=0.0, rng=rng
    )
    pref = preference_comparisons.PreferenceComparisons(
        trajectory_generator,
        reward_net,
        num_iterations=max(1, steps // 10_000),
        fragmenter=fragmenter,
        preference_gatherer=gatherer,
        reward_trainer=reward_trainer,
        fragment_length=30,  # 1.5 s of HalfCheetah, as in prefrl
        transition_oversampling=1,
        initial_comparison_frac=0.25,
        allow_variable_horizon=False,
        initial_epoch_multiplier=4,
        query_schedule="hyperbolic",
    )
    start = time.monotonic()
    pref.train(total_timesteps=steps, total_comparisons=labels)
    minutes = (time.monotonic() - start) / 60
    if save_dir is not None:  # SB3 zip; the obs normaliser lives inside the policy
        agent.save(save_dir / f"imitation-{env_id}-{labels}labels-{steps}steps-s{seed}.zip")
    eval_env = make_vec_env(env_id, rng=np.random.default_rng(10_000 + seed), n_envs=1)
    mean, std = evaluate_policy(agent.policy, eval_env, n_eval_episodes=eval_episodes, deterministic=True)
    eval_env = make_vec_env(env_id, rng=np.random.default_rng(10_000 + seed), n_envs=1)
    s_mean, s_std = evaluate_policy(agent.policy, eval_env, n_eval_episodes=eval_episodes, deterministic=False)
    return {"library": "imitation", "env": env_id, "labels": labels, "steps": steps, "seed": seed,
            "eval_return": float(mean), "eval_std": float(std),
            "eval_return_stochastic": float(s_mean), "eval_std_stochastic": float(s_std),
            "minutes": round(minutes, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="HalfCheetah-v4")
    p.add_argument("--labels", type=int, default=700)
    p.add_argument("--steps", type=int, default=150_000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--n-envs", type=int, default=4)
    p.add_argument("--eval-episodes", type=int, default=5)
    p.add_argument("--out", default="runs/bench_imitation.jsonl")
    p.add_argument("--save-dir", default=None, help="also save each seed's PPO agent here (SB3 zip)")
    args = p.parse_args()
    save_dir = Path(args.save_dir) if args.save_dir else None
    if save_dir is not None:
        save_dir.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        row = run(args.env, args.labels, args.steps, seed, args.n_envs, args.eval_episodes, save_dir)
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
