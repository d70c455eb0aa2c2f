"""Commands generated from config dataclasses: one place for each option's default and help.

:func:`command_from_config` registers a Typer command whose options are a config dataclass's
fields: ``--field-name`` with the field's default and ``metadata["help"]``
(:func:`prefrl.utils.config.doc`); a ``Literal`` type becomes a choice (listed in ``--help`` as
``<a|b>`` and checked with :func:`prefrl.names.check_choice`, so the CLI and the config reject an
unknown name with the same message, naming the field); old spellings in ``metadata["aliases"]``
stay accepted.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import types
import typing
from collections.abc import Callable
from typing import Any

import typer

__all__ = ["command_from_config", "as_json"]


def command_from_config(
    typer_app: typer.Typer, name: str, config_cls: type, run: Callable[[Any], Any], help: str | None = None
) -> Callable[..., None]:
    """Register a command whose options are ``config_cls``'s fields (help = ``metadata["help"]``).

    ``run(config)`` does the work; its return value (a dict, a path or a list) is printed
    as JSON. A ``ValueError`` from the config (bad option) becomes a usage error.
    """
    hints = typing.get_type_hints(config_cls)
    params = []
    for f in dataclasses.fields(config_cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = ...
        names = ["--" + f.name.replace("_", "-"), *f.metadata.get("aliases", ())]
        annotation, extra = hints[f.name], {}
        choices = _literal_choices(annotation)
        if choices is not None:
            annotation = str if type(None) not in typing.get_args(annotation) else (str | None)
            extra = {"metavar": "<" + "|".join(map(str, choices)) + ">", "callback": _choice_check(f.name, choices)}
        option = typer.Option(default, *names, help=f.metadata.get("help"), **extra)
        params.append(
            inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)
        )

    def command(**kwargs: Any) -> None:
        try:
            cfg = config_cls(**kwargs)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        result = run(cfg)
        if os.environ.get("RANK", "0") == "0":  # one summary under `accelerate launch`
            typer.echo(as_json(result))

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__name__ = name.replace("-", "_")
    command.__doc__ = help or (config_cls.__doc__ or "").strip().splitlines()[0]
    typer_app.command(name)(command)
    return command


def _literal_choices(annotation: Any) -> tuple[Any, ...] | None:
    """The choices of a ``Literal`` (or ``Literal | None``) annotation; None for other types."""
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(inner) == 1 and typing.get_origin(inner[0]) is typing.Literal:
            return typing.get_args(inner[0])
    return None


def _choice_check(field: str, choices: tuple[Any, ...]) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if value is not None and value not in choices:
            raise typer.BadParameter(f"{field} must be one of {', '.join(map(repr, choices))}; got {value!r}")
        return value

    return check


def as_json(result: Any) -> str:
    if isinstance(result, dict):
        out = {}
        for k, v in result.items():
            if k == "history":
                if v:
                    out["final"] = {kk: round(vv, 6) for kk, vv in v[-1].items()}
                continue
            out[k] = v if isinstance(v, (int, float, str, bool, type(None), list)) else str(v)
        return json.dumps(out)
    if isinstance(result, list):
        return json.dumps(result)
    return json.dumps({"output": str(result)})
