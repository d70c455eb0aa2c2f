"""`prefrl demo …` commands: small demos of the preference core.

Heavy imports (torch, the reward package) happen inside the commands so `--help` is instant.
Bad input ends with a one-line message and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True)

TEACHERS = "rational | stochastic | myopic | skip | equal | mistake"


@app.command()
def reward(
    comparisons: int = typer.Option(500, "--comparisons", help="Number of segment pairs the synthetic teacher labels (≥ 2)."),
    teacher: str = typer.Option("rational", "--teacher", help=f"Synthetic B-Pref teacher: {TEACHERS}."),
    seed: int = typer.Option(0, "--seed", help="Seeds the hidden reward, the segments, the teacher and the ensemble."),
    epochs: int = typer.Option(50, "--epochs", help="Reward-model training epochs (≥ 1)."),
    fresh: int = typer.Option(1000, "--fresh", help="Fresh, never-labelled segments on which the learned reward is scored (≥ 3)."),
) -> None:
    """Learn a hidden linear reward from synthetic comparisons and score it on fresh segments.

    Toy problem: 8-dim observations, 2-dim actions, 25-step segments, true reward w · (o ‖ a).
    A 3-member reward ensemble is fit to the teacher's answers with the Bradley-Terry loss;
    the Spearman correlation of its predicted returns with the true ones on fresh segments
    says how well it learned the reward.
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from prefrl.reward.toy import learn_toy_reward
    from prefrl.reward.trainer import RewardTrainerConfig
    from prefrl.teachers.synthetic import TEACHER_PRESETS

    console = Console()
    problems = []
    if comparisons < 2:
        problems.append(f"--comparisons must be ≥ 2, got {comparisons}")
    if teacher not in TEACHER_PRESETS:
        problems.append(f"unknown --teacher {teacher!r}; choose one of {', '.join(TEACHER_PRESETS)}")
    if fresh < 3:
        problems.append(f"--fresh must be ≥ 3, got {fresh}")
    if epochs < 1:
        problems.append(f"--epochs must be ≥ 1, got {epochs}")
    if problems:
        typer.secho(f"Error: {problems[0]}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2)
    cfg = RewardTrainerConfig(epochs=epochs, seed=seed)

    console.print(
        f"[bold]Learning a hidden reward[/bold] from {comparisons} comparisons by the "
        f"[cyan]{teacher}[/cyan] teacher (seed {seed})"
    )
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("epoch {task.completed}/{task.total}"),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("reward ensemble", total=epochs, status="")

        def on_eval(epoch: int, m: dict[str, float]) -> None:
            bar.update(
                task,
                completed=epoch + 1,
                status=f"train {m['reward/train_loss']:.3f}  val {m['reward/val_loss']:.3f}  "
                f"acc {m['reward/accuracy']:.3f}",
            )

        try:
            result = learn_toy_reward(comparisons, teacher, seed, cfg=cfg, n_fresh=fresh, progress=on_eval)
        except ValueError as err:
            bar.stop()
            typer.secho(f"Error: {err}", err=True, fg=typer.colors.RED)
            raise typer.Exit(2) from None

    m = result.metrics
    table = Table(title="Learned reward", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("labels used (answered)", f"{result.n_labels}"),
        ("train / val pairs", f"{int(m['reward/n_train'])} / {int(m['reward/n_val'])}"),
        ("train loss (Bradley-Terry)", f"{m['reward/train_loss']:.4f}"),
        ("val loss", f"{m['reward/val_loss']:.4f}"),
        ("val accuracy", f"{m['reward/accuracy']:.3f}"),
        ("agreement with the true reward (labelled pairs)", f"{m.get('reward/true_agreement', float('nan')):.3f}"),
        ("L2 coefficient", f"{m['reward/l2']:.2e}"),
        (f"Spearman ρ on {fresh} fresh segments", f"[bold]{result.fresh_rank_correlation:.4f}[/bold]"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
