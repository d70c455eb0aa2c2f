"""`prefrl control …` commands: train from preferences, evaluate a run, the demo.

``train``'s options are generated from ``ControlConfig``'s fields (``prefrl.cli.options``): each
default and its help live once, on the field. Heavy imports (torch, gymnasium, the loop) happen
inside the commands so `--help` is instant (``prefrl.control.config`` is torch-free).
Bad input ends with a one-line message and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Optional

import typer

from prefrl.cli.options import as_json, command_from_config
from prefrl.cli.serve_train import SERVE_NICE, SERVE_OPTIONS, open_serving, train_serving
from prefrl.control.config import ControlConfig

app = typer.Typer(no_args_is_help=True)



def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"Error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def set_threads(threads: int | None) -> None:
    """The entry point's choice of torch intra-op threads (``ControlConfig.threads``; 0 or None: torch's default)."""
    import torch

    if threads:
        torch.set_num_threads(int(threads))


def _train(cfg: Any, resume: Path | None = None, serve: bool = False, labellers: str = "",
           host: str = "127.0.0.1", port: int = 8000, serve_nice: int = SERVE_NICE) -> dict[str, Any]:
    from prefrl.control.checkpoint import CheckpointError
    from prefrl.control.loop import PreferenceLoop

    set_threads(cfg.threads)  # a setting of this process, also on --resume (not of the run)
    sock = None
    try:
        names, sock = open_serving(serve, labellers, host, port, None if resume is not None else cfg.teacher)
        loop = PreferenceLoop.resume(resume, progress=cfg.progress) if resume is not None else PreferenceLoop(cfg)
        if serve:
            done = train_serving(loop, names, host, port, sock=sock, nice=serve_nice,
                                 echo=lambda line: typer.echo(line, err=True))
            return run_summary(done)
    except (ValueError, CheckpointError) as e:
        if sock is not None:
            sock.close()
        raise _fail(str(e)) from None
    return run_summary(loop.run())


def run_summary(run_dir: Path) -> dict[str, Any]:
    """The one-line JSON summary ``control train`` prints (like every ``lm`` command): the report's numbers.

    A run that trained no reward model gets a warning line on stderr first.
    """
    from prefrl.control.report import NO_REWARD_MODEL

    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").is_file() else {}
    if summary.get("reward_rounds") == 0:
        typer.secho(f"Warning: {NO_REWARD_MODEL}.", err=True, fg=typer.colors.YELLOW)
    return {"run_dir": str(run_dir), "report": str(run_dir / "report.html"), **summary}


_RESUME = inspect.Parameter(
    "resume", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],  # noqa: UP045 - Typer reads it at runtime
    default=typer.Option(None, "--resume", help="Continue the checkpointed run in this directory (other options ignored)."),
)

def _preset(values: dict[str, Any], given: set[str]) -> dict[str, Any]:
    from prefrl.control.presets import preset_for

    defaults = preset_for(str(values.get("env_id") or ""))
    if "reward_epochs" in given:  # epochs asked for: not the preset's fixed steps per round
        defaults.pop("reward.steps_per_round", None)
        defaults.pop("reward.initial_steps", None)
    return defaults


command_from_config(
    app, "train", ControlConfig, _train,
    "Train an agent from comparisons (Christiano et al. 2017) and write RUN_DIR/report.html. Atari ids take the "
    "Atari preset (prefrl.control.presets.ATARI) for the options not given.",
    extra=(_RESUME, *SERVE_OPTIONS), fail=_fail, preset=_preset,
)  # fmt: skip


@app.command("eval")
def evaluate(
    run_dir: Path = typer.Argument(..., help="A run directory written by `prefrl control train`."),
    episodes: int = typer.Option(10, "--episodes", help="Episodes of the deterministic policy."),
    video: Path | None = typer.Option(None, "--video", help="Also record one episode to this MP4 (MuJoCo: MUJOCO_GL=osmesa)."),
    seed: int = typer.Option(12345, "--seed", help="Seed of the evaluation envs."),
) -> None:
    """True return of a run's policy over N episodes (mean ± std), optionally an MP4 of one."""
    from prefrl.control.checkpoint import CheckpointError
    from prefrl.control.run_state import load_agent

    if episodes < 1:
        raise _fail(f"--episodes must be ≥ 1, got {episodes}")
    try:
        agent, cfg = load_agent(run_dir)
        if video is not None:
            from prefrl.control.render import check_renderable

            check_renderable(cfg.env_id)  # before the evaluation, not after it
    except (ValueError, CheckpointError) as e:
        raise _fail(f"--video: {e}" if video is not None and "render" in str(e) else str(e)) from None
    import numpy as np

    returns = agent.evaluate(cfg.env_id, episodes, seed=seed, fixed_horizon=cfg.fixed_horizon, drop_ctrl_cost=cfg.drop_ctrl_cost)
    typer.echo(f"{cfg.env_id}: true return {np.mean(returns):.1f} ± {np.std(returns):.1f} over {episodes} episodes")
    if video is not None:
        from prefrl.control.render import record_episode

        env_kwargs = {"fixed_horizon": cfg.fixed_horizon, "drop_ctrl_cost": cfg.drop_ctrl_cost}
        path, ret = record_episode(cfg.env_id, lambda o: agent.act(np.asarray(o)[None])[0], video, seed=seed, env_kwargs=env_kwargs)
        typer.echo(f"video: {path} (episode return {ret:.1f})")


@app.command()
def demo(
    run_dir: Path | None = typer.Option(None, "--run-dir", help="Output directory (default: runs/demo-<time>)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    baseline: bool = typer.Option(False, "--baseline", help="Also run PPO on the true reward (doubles the time)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the progress bar."),
) -> None:
    """A preference-only run that finishes in ≤ 15 minutes on 2 CPU cores and writes a report."""
    from prefrl.control.loop import PreferenceLoop
    from prefrl.control.presets import demo_config

    try:
        cfg = demo_config(run_dir=str(run_dir) if run_dir else None, seed=seed, baseline=baseline, progress=progress)
        set_threads(cfg.threads)
        loop = PreferenceLoop(cfg)
    except ValueError as e:
        raise _fail(str(e)) from None
    typer.echo(
        f"demo: {cfg.env_id}, {cfg.steps} steps, {cfg.labels} labels from a synthetic '{cfg.teacher}' teacher "
        f"(the agent never sees the env reward) → {loop.run_dir}"
    )
    typer.echo(as_json(run_summary(loop.run())))
