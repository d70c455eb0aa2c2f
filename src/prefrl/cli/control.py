"""`prefrl control …` commands: train from preferences, evaluate a run, the demo.

Heavy imports (torch, gymnasium, the loop) happen inside the commands so `--help` is instant.
Bad input ends with a one-line message and a non-zero exit, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

app = typer.Typer(no_args_is_help=True)

TEACHER_HELP = "rational | stochastic | myopic | skip | equal | mistake (synthetic, on the hidden reward) | human (web app)"


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"Error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def _parse_teacher_args(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--teacher-arg must be KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = float(value)
        except ValueError:
            out[key.strip()] = None if value.strip().lower() == "none" else value
    return out


@app.command()
def train(
    env: str = typer.Option("HalfCheetah-v5", "--env", help="Gymnasium env id (HalfCheetah-v5, Hopper-v5, ALE/Pong-v5 …)."),
    labels: int = typer.Option(700, "--labels", help="Total comparisons to ask over the run (≥ 1)."),
    steps: int = typer.Option(1_000_000, "--steps", help="Total env steps of the preference run."),
    teacher: str = typer.Option("rational", "--teacher", help=TEACHER_HELP),
    teacher_arg: list[str] = typer.Option([], "--teacher-arg", help="Synthetic teacher parameter KEY=VALUE (beta, gamma, epsilon, …); repeatable."),
    store: str | None = typer.Option(None, "--store", help="Preference store URL or path (default: RUN_DIR/preferences.sqlite)."),
    run_dir: Path | None = typer.Option(None, "--run-dir", help="Output directory (default: runs/<env>-s<seed>-<time>)."),
    resume: Path | None = typer.Option(None, "--resume", help="Continue the checkpointed run in this directory (other options ignored)."),
    baseline: bool = typer.Option(False, "--baseline", help="Also run PPO on the true reward with the same steps, for the report."),
    n_envs: int = typer.Option(1, "--n-envs", help="Parallel envs."),
    n_steps: int = typer.Option(2048, "--n-steps", help="PPO rollout length per env (T)."),
    n_minibatches: int = typer.Option(32, "--n-minibatches", help="PPO minibatches per epoch."),
    lr: float = typer.Option(3e-4, "--lr", help="PPO learning rate (constant; no value clipping either: see docs/benchmarks_control.md)."),
    segment_steps: int | None = typer.Option(None, "--segment-steps", help="Steps per segment (default: 1.5 s of env time, clamped to [25, 60]; 25 without dt)."),
    selector: str = typer.Option("disagreement", "--selector", help="Query selection: disagreement | entropy | uniform."),
    reward_epochs: int = typer.Option(50, "--reward-epochs", help="Reward-model epochs per training round."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    asynchronous: bool = typer.Option(False, "--async/--sync", help="Train the reward model and answer queries in background threads."),
    fixed_horizon: int | None = typer.Option(None, "--fixed-horizon", help="Make every episode exactly this long (termination becomes a penalty)."),
    drop_ctrl_cost: bool = typer.Option(False, "--drop-ctrl-cost", help="MuJoCo: env reward without the control cost."),
    checkpoint_minutes: float = typer.Option(10.0, "--checkpoint-minutes", help="Minutes between checkpoints."),
    human_wait: float = typer.Option(0.0, "--human-wait", help="With --teacher human: seconds to wait at the end for outstanding answers."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the progress bar."),
) -> None:
    """Train an agent from comparisons (Christiano et al. 2017) and write RUN_DIR/report.html."""
    from prefrl.control.checkpoint import CheckpointError
    from prefrl.control.config import ControlConfig, control_ppo_config
    from prefrl.control.loop import PreferenceLoop
    from prefrl.reward.trainer import RewardTrainerConfig

    try:
        if resume is not None:
            loop = PreferenceLoop.resume(resume, progress=progress)
        else:
            ppo = control_ppo_config(num_steps=n_steps, num_minibatches=n_minibatches, learning_rate=lr, total_steps=max(steps, 1))
            cfg = ControlConfig(
                env_id=env,
                labels=labels,
                steps=steps,
                teacher=teacher,  # type: ignore[arg-type]
                teacher_kwargs=_parse_teacher_args(teacher_arg),
                store=store,
                run_dir=str(run_dir) if run_dir is not None else None,
                n_envs=n_envs,
                segment_steps=segment_steps,
                selector=selector,  # type: ignore[arg-type]
                reward=RewardTrainerConfig(epochs=reward_epochs),
                ppo=ppo,
                seed=seed,
                asynchronous=asynchronous,
                fixed_horizon=fixed_horizon,
                drop_ctrl_cost=drop_ctrl_cost,
                true_reward_baseline=baseline,
                checkpoint_minutes=checkpoint_minutes,
                human_wait_seconds=human_wait,
                progress=progress,
            )
            loop = PreferenceLoop(cfg)
    except (ValueError, CheckpointError) as e:
        raise _fail(str(e)) from None
    out = loop.run()
    typer.echo(f"report: {out / 'report.html'}")


@app.command("eval")
def evaluate(
    run_dir: Path = typer.Argument(..., help="A run directory written by `prefrl control train`."),
    episodes: int = typer.Option(10, "--episodes", help="Episodes of the deterministic policy."),
    video: Path | None = typer.Option(None, "--video", help="Also record one episode to this MP4 (MuJoCo: MUJOCO_GL=osmesa)."),
    seed: int = typer.Option(12345, "--seed", help="Seed of the evaluation envs."),
) -> None:
    """True return of a run's policy over N episodes (mean ± std), optionally an MP4 of one."""
    from prefrl.control.checkpoint import CheckpointError
    from prefrl.control.loop import load_agent

    if episodes < 1:
        raise _fail(f"--episodes must be ≥ 1, got {episodes}")
    try:
        agent, cfg = load_agent(run_dir)
    except (ValueError, CheckpointError) as e:
        raise _fail(str(e)) from None
    import numpy as np

    returns = agent.evaluate(cfg.env_id, episodes, seed=seed, fixed_horizon=cfg.fixed_horizon, drop_ctrl_cost=cfg.drop_ctrl_cost)
    typer.echo(f"{cfg.env_id}: true return {np.mean(returns):.1f} ± {np.std(returns):.1f} over {episodes} episodes")
    if video is not None:
        from prefrl.control.render import record_episode

        path, ret = record_episode(cfg.env_id, lambda o: agent.act(np.asarray(o)[None])[0], video, seed=seed)
        typer.echo(f"video: {path} (episode return {ret:.1f})")


@app.command()
def demo(
    run_dir: Path | None = typer.Option(None, "--run-dir", help="Output directory (default: runs/demo-<time>)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    baseline: bool = typer.Option(False, "--baseline", help="Also run PPO on the true reward (doubles the time)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the progress bar."),
) -> None:
    """A preference-only run that finishes in ≤ 15 minutes on 2 CPU cores and writes a report."""
    from prefrl.control.loop import PreferenceLoop, demo_config

    try:
        cfg = demo_config(run_dir=str(run_dir) if run_dir else None, seed=seed, baseline=baseline, progress=progress)
        loop = PreferenceLoop(cfg)
    except ValueError as e:
        raise _fail(str(e)) from None
    typer.echo(
        f"demo: {cfg.env_id}, {cfg.steps} steps, {cfg.labels} labels from a synthetic '{cfg.teacher}' teacher "
        f"(the agent never sees the env reward) → {loop.run_dir}"
    )
    out = loop.run()
    typer.echo(f"report: {out / 'report.html'}")
