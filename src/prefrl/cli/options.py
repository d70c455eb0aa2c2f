"""Commands generated from config dataclasses: one place for each option's default and help.

:func:`command_from_config` registers a Typer command whose options are a config dataclass's
fields: ``--field-name`` with the field's default and help — ``metadata["help"]``
(:func:`prefrl.utils.config.doc`) or else the field's attribute docstring; a ``Literal`` type
becomes a choice (listed in ``--help`` as ``<a|b>``; an unknown name is refused naming the field:
``unknown <field> 'x'; <field> must be one of …``, as :func:`prefrl.names.check_choice` words it);
old spellings in ``metadata["aliases"]`` stay accepted.

Further field metadata, for configs that nest others (``ControlConfig.ppo``):

- ``flatten``: the nested config's fields become options of their own, named with this prefix
  (``""`` → ``--num-steps``, ``"reward-"`` → ``--reward-epochs``); defaults come from the outer
  field's default instance; ``flatten_aliases`` maps a nested field to old spellings and
  ``flatten_exclude`` names nested fields that are derived, not set.
- ``option``: the full option declaration instead of ``--field-name`` (``("--async/--sync",)``).
- ``key_value``: a ``dict`` field set by a repeatable ``KEY=VALUE`` option (numbers parsed).
- ``cli: False``: not an option.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import json
import os
import textwrap
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, get_args, get_origin

import typer

__all__ = ["OneLineErrors", "command_from_config", "as_json", "field_docs", "parse_key_values"]


class OneLineErrors(typer.core.TyperGroup):
    """The ``prefrl`` command group: a usage error is one line on stderr, not Typer's boxed panel.

    ``Error: Invalid value for '--optimizer': unknown optimizer 'nope'; optimizer must be one of …
    (see 'prefrl control train --help')``, exit status 2 — for every command and every kind of
    usage error (a bad ``Literal`` choice, an unknown option, a missing argument, a bad number).
    """

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:  # fmt: skip
        import sys

        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.exceptions.TyperException as e:  # click's ClickException (usage errors) derives from it
            ctx = getattr(e, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            message = " ".join(e.format_message().split())  # one line, whatever click wrapped
            print(f"Error: {message}{hint}", file=sys.stderr)
            sys.exit(e.exit_code)
        except typer.Abort:
            print("Aborted.", file=sys.stderr)
            sys.exit(1)
        # standalone_mode=False returns an Exit's code (--help, typer.Exit) or the command's value.
        sys.exit(rv if isinstance(rv, int) else 0)


@functools.cache
def field_docs(config_cls: type) -> dict[str, str]:
    """The attribute docstrings of a dataclass (the string literal right under each field), by field name."""
    docs: dict[str, str] = {}
    for klass in reversed(config_cls.__mro__):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, nxt in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr)
                    and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):  # fmt: skip
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _literal_choices(annotation: Any) -> tuple[Any, ...] | None:
    """The choices of a ``Literal`` (or ``Literal | None``) annotation; None for other types."""
    if get_origin(annotation) is Literal:
        return get_args(annotation)
    if get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [a for a in get_args(annotation) if a is not type(None)]
        if len(inner) == 1 and get_origin(inner[0]) is Literal:
            return get_args(inner[0])
    return None


def _choice_check(field: str, choices: tuple[Any, ...]) -> Callable[[Any], Any]:
    """A Typer callback that accepts one of ``choices`` (or None) and refuses the rest naming the field."""

    def check(value: Any) -> Any:
        if value is not None and value not in choices:
            allowed = ", ".join(map(repr, choices))
            raise typer.BadParameter(f"unknown {field} {value!r}; {field} must be one of {allowed}")
        return value

    return check


def parse_key_values(items: list[str], option: str) -> dict[str, Any]:
    """``["beta=1", "name=x"]`` → ``{"beta": 1.0, "name": "x"}`` (``none`` → ``None``)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"{option} must be KEY=VALUE, got {item!r}")
        key, value = (part.strip() for part in item.split("=", 1))
        try:
            out[key] = float(value)
        except ValueError:
            out[key] = None if value.lower() == "none" else value
    return out


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return ...


def _option(name: str, annotation: Any, default: Any, decls: list[str], help: str | None,
            switchable: bool = False) -> inspect.Parameter:  # fmt: skip
    kwargs: dict[str, Any] = {"help": help}
    if switchable and annotation is bool and not any("/" in d for d in decls):
        decls = [f"{decls[0]}/--no-{decls[0][2:]}", *decls[1:]]  # a nested config's flag can be set either way
    choices = _literal_choices(annotation)
    if choices is not None:
        kwargs.update(callback=_choice_check(name, choices), metavar="<" + "|".join(map(str, choices)) + ">")
        annotation = str if type(None) not in get_args(annotation) else (str | None)
    elif get_origin(annotation) is tuple and get_args(annotation)[-1] is Ellipsis:  # tuple[int, ...]: repeatable
        annotation, default = list[get_args(annotation)[0]], list(default)  # type: ignore[valid-type]
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=typer.Option(default, *decls, **kwargs),
                             annotation=annotation)  # fmt: skip


def command_from_config(
    typer_app: typer.Typer,
    name: str,
    config_cls: type,
    run: Callable[..., Any],
    help: str | None = None,
    *,
    extra: tuple[inspect.Parameter, ...] = (),
    fail: Callable[[str], BaseException] | None = None,
    preset: Callable[[dict[str, Any], set[str]], dict[str, Any]] | None = None,
) -> Callable[..., None]:
    """Register a command whose options are ``config_cls``'s fields (see the module docstring).

    ``run(config, **extra)`` does the work; its return value (a dict, a path or a list) is printed
    as JSON. ``extra``: options that are not config fields (keyword-only ``inspect.Parameter``s
    with a ``typer.Option`` default), passed to ``run`` by name. A ``ValueError`` from the config
    (bad option) becomes a usage error, or ``fail(message)`` when given; a message that starts with
    a field's name names its option instead (``--steps must …``). ``preset(values, given)`` (values by
    parameter name, the names given on the command line) returns defaults by field path (``n_envs``,
    ``ppo.num_steps``) that replace those of the options *not given* (``prefrl.control.presets.ATARI``).
    """
    hints = typing.get_type_hints(config_cls)
    docs = field_docs(config_cls)
    params: list[inspect.Parameter] = []
    nested: dict[str, tuple[Any, dict[str, str]]] = {}  # outer field → (default instance, {param: nested field})
    option_of: dict[str, str] = {}
    path_of: dict[str, str] = {}  # parameter → field path ("n_envs", "ppo.num_steps")
    for f in dataclasses.fields(config_cls):
        meta = f.metadata
        if meta.get("cli", True) is False or not f.init:
            continue
        if "flatten" in meta:
            inner = _default(f)
            inner_hints, inner_docs = typing.get_type_hints(type(inner)), field_docs(type(inner))
            aliases = meta.get("flatten_aliases", {})
            mapping = {}
            for g in dataclasses.fields(inner):
                if not g.init or g.name in meta.get("flatten_exclude", ()):
                    continue
                pname = (meta["flatten"] + g.name).replace("-", "_")
                decls = ["--" + pname.replace("_", "-"), *aliases.get(g.name, ())]
                help_text = g.metadata.get("help") or inner_docs.get(g.name)
                params.append(_option(pname, inner_hints[g.name], getattr(inner, g.name), decls, help_text, True))
                mapping[pname] = g.name
                option_of[pname] = decls[0]
                path_of[pname] = f"{f.name}.{g.name}"
            nested[f.name] = (inner, mapping)
            continue
        decls = list(meta.get("option", ["--" + f.name.replace("_", "-"), *meta.get("aliases", ())]))
        help_text = meta.get("help") or docs.get(f.name)
        annotation, default = hints[f.name], _default(f)
        if meta.get("key_value"):
            annotation, default = list[str], []
        params.append(_option(f.name, annotation, default, decls, help_text))
        option_of[f.name] = decls[0].split("/")[0]
        path_of[f.name] = f.name
    params.extend(extra)
    if preset is not None:
        params.append(inspect.Parameter("_ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context))
    extra_names = {p.name for p in extra}
    key_value = {f.name for f in dataclasses.fields(config_cls) if f.metadata.get("key_value")}

    def bad(message: str) -> BaseException:
        head = message.split(" ", 1)[0]
        if head in option_of:
            message = option_of[head] + message[len(head):]
        return fail(message) if fail is not None else typer.BadParameter(message)

    def command(**kwargs: Any) -> None:
        extras = {k: kwargs.pop(k) for k in list(kwargs) if k in extra_names}
        ctx = kwargs.pop("_ctx", None)
        try:
            if preset is not None and ctx is not None:
                given = set()
                for pname in path_of:
                    source = ctx.get_parameter_source(pname)
                    if source is not None and source.name != "DEFAULT":
                        given.add(pname)
                defaults = preset(dict(kwargs), given)
                for pname, path in path_of.items():
                    if path in defaults and pname not in given:
                        kwargs[pname] = defaults[path]
            for outer, (inner, mapping) in nested.items():
                values = {mapping[p]: kwargs.pop(p) for p in list(kwargs) if p in mapping}
                kwargs[outer] = dataclasses.replace(inner, **values)
            for k in key_value:
                kwargs[k] = parse_key_values(kwargs[k], option_of[k])
            for k, v in kwargs.items():
                if isinstance(v, list) and get_origin(hints[k]) is tuple:
                    kwargs[k] = tuple(v)
            cfg = config_cls(**kwargs)
        except ValueError as exc:
            raise bad(str(exc)) from None
        result = run(cfg, **extras)
        if os.environ.get("RANK", "0") == "0":  # one summary under `accelerate launch`
            typer.echo(as_json(result))

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__name__ = name.replace("-", "_")
    command.__doc__ = help or (config_cls.__doc__ or "").strip().splitlines()[0]
    typer_app.command(name)(command)
    return command


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
