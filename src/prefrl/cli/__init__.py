"""The `prefrl` command: `prefrl control|lm|label|demo …`.

Each family's commands live in their own module here; heavy imports (torch,
transformers, gymnasium) happen inside the commands so that `--help` is instant.
"""

from __future__ import annotations

import typer

from prefrl.cli import control, demo, label, lm

app = typer.Typer(
    name="prefrl",
    help="Reinforcement learning from human preferences: control agents and language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(control.app, name="control", help="Control agents in Gymnasium envs learning from comparisons.")
app.add_typer(lm.app, name="lm", help="Language-model RLHF: SFT, reward model, PPO, DPO.")
app.add_typer(label.app, name="label", help="The labelling web app for people.")
app.add_typer(demo.app, name="demo", help="Small demos of the preference core.")


def main() -> None:
    app()
