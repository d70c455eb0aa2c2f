"""`prefrl lm …` commands: sft, rm, dpo, generate, evaluate, best-of-n, pairs.

Each command's options and their ``--help`` are generated from the fields of the
stage's config dataclass (``prefrl.lm.configs``), so the documentation lives in one
place. Stage modules (torch, transformers) are imported only when a command runs.
Multi-process: ``accelerate launch --num_processes 2 -m prefrl.cli lm sft …``.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import typing
from collections.abc import Callable
from typing import Any

import typer

from prefrl.lm import configs as C

app = typer.Typer(no_args_is_help=True)

__all__ = ["app", "command_from_config"]


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
        option = typer.Option(default, "--" + f.name.replace("_", "-"), help=f.metadata.get("help"))
        params.append(
            inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=hints[f.name]
            )
        )

    def command(**kwargs: Any) -> None:
        try:
            cfg = config_cls(**kwargs)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        result = run(cfg)
        if os.environ.get("RANK", "0") == "0":  # one summary under `accelerate launch`
            typer.echo(_as_json(result))

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__name__ = name.replace("-", "_")
    command.__doc__ = help or (config_cls.__doc__ or "").strip().splitlines()[0]
    typer_app.command(name)(command)
    return command


def _as_json(result: Any) -> str:
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


def _sft(cfg: C.SFTConfig) -> Any:
    from prefrl.lm.sft import train_sft

    return train_sft(cfg)


def _rm(cfg: C.RMConfig) -> Any:
    from prefrl.lm.rm_trainer import train_reward_model

    return train_reward_model(cfg)


def _dpo(cfg: C.DPOConfig) -> Any:
    from prefrl.lm.dpo import train_dpo

    return train_dpo(cfg)


def _generate(cfg: C.GenerateConfig) -> Any:
    from prefrl.lm.generate import generate_completions

    return generate_completions(cfg)


def _evaluate(cfg: C.EvaluateConfig) -> Any:
    from prefrl.lm.generate import evaluate

    return evaluate(cfg)


def _best_of_n(cfg: C.BestOfNConfig) -> Any:
    from prefrl.lm.best_of_n import best_of_n

    return best_of_n(cfg)


def _pairs(cfg: C.PairsConfig) -> Any:
    from prefrl.lm.generate import push_pairs

    ids = push_pairs(cfg)
    return {"text_pairs": len(ids), "first_id": ids[0] if ids else None, "store": cfg.store}


command_from_config(
    app,
    "sft",
    C.SFTConfig,
    _sft,
    "Supervised fine-tuning on prompt-completion data (loss on completion tokens only).",
)
command_from_config(
    app,
    "rm",
    C.RMConfig,
    _rm,
    "Train a Bradley-Terry reward model from a preference file or a PreferenceStore.",
)
command_from_config(app, "dpo", C.DPOConfig, _dpo, "Direct preference optimisation (DPO / IPO / cDPO).")
command_from_config(app, "generate", C.GenerateConfig, _generate, "Sample responses for prompts; JSONL out.")
command_from_config(
    app, "evaluate", C.EvaluateConfig, _evaluate, "Score generations with a reward model and/or VADER gold."
)
command_from_config(
    app,
    "best-of-n",
    C.BestOfNConfig,
    _best_of_n,
    "Best-of-n sampling against a reward model (baseline / ReST data).",
)
command_from_config(
    app,
    "pairs",
    C.PairsConfig,
    _pairs,
    "Sample two responses per prompt and queue them in a store for labellers.",
)


# ---------------------------------------------------------------- ppo (part B: prefrl.lm.ppo)


def _ppo(cfg: Any) -> Any:
    from prefrl.lm.ppo import run_ppo

    return run_ppo(cfg)


def _register_ppo() -> None:
    from prefrl.lm.ppo_config import PPORunConfig  # torch-free

    command_from_config(
        app, "ppo", PPORunConfig, _ppo, help="PPO-RLHF: policy, reference, critic (from the RM) and a frozen reward model."
    )


_register_ppo()
