"""The `prefrl` command: `prefrl control|lm|label|demo …`.

Each family's commands live in their own module here; heavy imports (torch,
transformers, gymnasium) happen inside the commands so that `--help` is instant.
"""

from __future__ import annotations

import os
import sys
import traceback

import typer

from prefrl.cli import control, demo, label, lm
from prefrl.cli.options import OneLineErrors

app = typer.Typer(
    name="prefrl",
    help="Reinforcement learning from human preferences: control agents and language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=OneLineErrors,  # a usage error is one line (`Error: Invalid value for '--x': …`), not a boxed panel
)
app.add_typer(control.app, name="control", help="Control agents in Gymnasium envs learning from comparisons.")
app.add_typer(lm.app, name="lm", help=lm.HELP)
app.add_typer(label.app, name="label", help="The labelling web app for people.")
app.add_typer(demo.app, name="demo", help="Small demos of the preference core.")


@app.callback()
def _options(
    debug: bool = typer.Option(
        False, "--debug", help="Show the full traceback of an error (anywhere on the line; or PREFRL_DEBUG=1)."
    ),
) -> None:
    """Reinforcement learning from human preferences: control agents and language models."""


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; a bad input or option ends in one line on stderr (exit status 1), not a traceback.

    ``--debug`` (anywhere on the command line) or ``PREFRL_DEBUG=1`` shows the traceback instead.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("PREFRL_DEBUG", "") not in ("", "0")
    args = [a for a in args if a != "--debug"]
    try:
        app(args=args, prog_name="prefrl")
    except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, UnicodeError) as exc:
        if debug:
            traceback.print_exc()
        print(f"prefrl: error: {exc}", file=sys.stderr)
        sys.exit(1)
