"""`prefrl lm …` commands: sft, rm, dpo, generate, evaluate, best-of-n, pairs, kto, ppo, rl (GRPO / RLOO / REINFORCE++), online-dpo.

Each command's options and their ``--help`` are generated from the fields of the
stage's config dataclass (``prefrl.lm.<stage>_config``, torch-free), so the documentation lives
in one place. Stage modules (torch, transformers) are imported only when a command runs.
Multi-process (SFT, RM, DPO): ``accelerate launch --multi_gpu --num_processes 2 -m prefrl lm sft …``
(:mod:`prefrl.lm.launch`); the other commands run in one process and refuse such a launch.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import typer

from prefrl.cli.options import command_from_config
from prefrl.cli.serve_train import SERVE_NICE, SERVE_OPTIONS, open_serving, serve_while
from prefrl.lm.best_of_n_config import BestOfNConfig
from prefrl.lm.critic_free_config import CriticFreeRunConfig
from prefrl.lm.dpo_config import DPOConfig
from prefrl.lm.generate_config import EvaluateConfig, GenerateConfig, PairsConfig
from prefrl.lm.kto_config import KTOConfig
from prefrl.lm.launch import require_single_process
from prefrl.lm.online_dpo_config import OnlineDPORunConfig
from prefrl.lm.ppo_config import PPORunConfig
from prefrl.lm.reward_model_config import RMConfig
from prefrl.lm.sft_config import SFTConfig

#: ``prefrl lm --help``: what each trainer needs, so the choice between them is the data you have.
HELP = """Language-model RLHF: SFT, reward model, then PPO / GRPO / RLOO / REINFORCE++, DPO, online DPO, KTO.

Which trainer? It follows from what you have (after sft):

- A reward model (rm, trained on pairs or on the store's answers): ppo (with a critic, one response
per prompt) or rl --algo grpo|rloo|reinforce++ (no critic, k responses per prompt: less memory);
best-of-n needs no training.

- Preference pairs (prompt, chosen, rejected) and no reward model: dpo, offline.

- A teacher to ask while training, fresh pairs from the current policy each round (a reward model, an
AI judge, or people in the web app: --teacher human --serve): online-dpo.

- Single responses marked good or bad (thumbs up/down, accepted/rejected logs): kto.

KL to the reference: ppo and rl penalise it with --kl-estimator k1 in the per-token reward (default) or
k2/k3 as a loss (--kl-penalty loss); dpo, online-dpo and kto hold it implicitly, strength --beta.
Loss aggregation: ppo token-mean; rl --loss-aggregation token-mean|sequence-mean|constant (Dr. GRPO);
dpo, online-dpo, kto one term per pair or example (summed log-probs), mean over the batch.
Each command's --help says the same for it."""

app = typer.Typer(no_args_is_help=True, help=HELP)

__all__ = ["app", "command_from_config"]


def _fresh_or_resumed(cfg: Any) -> None:
    """A run into a non-empty output_dir must be a --resume or say --overwrite (which empties it)."""
    out = Path(cfg.output_dir)
    if cfg.resume is not None or not out.is_dir() or not any(out.iterdir()):
        return
    if not cfg.overwrite:
        raise typer.BadParameter(
            f"output_dir {out} is not empty: pass --resume {out} to continue that run, "
            "or --overwrite to delete its contents and start afresh"
        )
    for entry in out.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _sft(cfg: SFTConfig) -> Any:
    _fresh_or_resumed(cfg)
    from prefrl.lm.sft import train_sft

    return train_sft(cfg)


def _rm(cfg: RMConfig) -> Any:
    _fresh_or_resumed(cfg)
    from prefrl.lm.reward_model_trainer import train_reward_model

    return train_reward_model(cfg)


def _dpo(cfg: DPOConfig) -> Any:
    _fresh_or_resumed(cfg)
    from prefrl.lm.dpo import train_dpo

    return train_dpo(cfg)


def _kto(cfg: KTOConfig) -> Any:
    _fresh_or_resumed(cfg)
    from prefrl.lm.kto import train_kto

    return train_kto(cfg)


def _generate(cfg: GenerateConfig) -> Any:
    require_single_process("prefrl lm generate")
    from prefrl.lm.generate import generate_completions

    return generate_completions(cfg)


def _evaluate(cfg: EvaluateConfig) -> Any:
    require_single_process("prefrl lm evaluate")
    from prefrl.lm.generate import evaluate

    return evaluate(cfg)


def _best_of_n(cfg: BestOfNConfig) -> Any:
    require_single_process("prefrl lm best-of-n")
    from prefrl.lm.best_of_n import best_of_n

    return best_of_n(cfg)


def _pairs(cfg: PairsConfig) -> Any:
    require_single_process("prefrl lm pairs")
    from prefrl.lm.generate import push_pairs

    ids = push_pairs(cfg)
    return {"text_pairs": len(ids), "first_id": ids[0] if ids else None, "store": cfg.store}


command_from_config(
    app,
    "sft",
    SFTConfig,
    _sft,
    "Supervised fine-tuning on prompt-completion data (loss on completion tokens only).",
)
command_from_config(
    app,
    "rm",
    RMConfig,
    _rm,
    "Train a Bradley-Terry reward model from a preference file or a PreferenceStore.",
)
def _ppo(cfg: PPORunConfig) -> Any:
    _fresh_or_resumed(cfg)
    from prefrl.lm.ppo import run_ppo

    typer.echo(f"ppo: {cfg.kl_description}; loss aggregation token-mean", err=True)
    return run_ppo(cfg)


command_from_config(
    app, "ppo", PPORunConfig, _ppo,
    help="PPO-RLHF with a critic: policy, reference, critic (initialised from the RM) and a frozen --reward-model; "
    "one response per prompt, GAE advantages. KL to the reference: --kl-estimator k1 in the per-token reward "
    "(--kl-penalty reward, default) or k2/k3 as a loss (--kl-penalty loss). Loss: PPO-clip and value loss, "
    "token-mean over the minibatch. The run prints its KL setting.",
)  # fmt: skip


def _rl(cfg: CriticFreeRunConfig) -> Any:
    _fresh_or_resumed(cfg)
    from prefrl.lm.critic_free import run_critic_free

    typer.echo(f"{cfg.algo}: {cfg.kl_description}; loss aggregation {cfg.loss_aggregation}", err=True)
    return run_critic_free(cfg)


command_from_config(
    app,
    "rl",
    CriticFreeRunConfig,
    _rl,
    help="Critic-free RL against a frozen --reward-model, k completions per prompt, PPO-clip on the policy only "
    "(no critic: less memory than ppo): --algo grpo (group-relative advantage), rloo (leave-one-out) or "
    "reinforce++ (batch baseline). KL to the reference: --kl-estimator k1 in the reward (--kl-penalty reward, "
    "default) or k2/k3 as a loss (--kl-penalty loss). Loss: --loss-aggregation token-mean (default), "
    "sequence-mean (GRPO's paper) or constant (Dr. GRPO). The run prints both settings.",
)


command_from_config(
    app, "dpo", DPOConfig, _dpo,
    "Offline DPO / IPO / cDPO on preference pairs (prompt, chosen, rejected), no reward model. KL to the reference "
    "(the starting --model): implicit, strength --beta. Loss: one term per pair from the responses' summed "
    "log-probs, mean over the batch.",
)  # fmt: skip


def _online_dpo(cfg: OnlineDPORunConfig, serve: bool = False, labellers: str = "", host: str = "127.0.0.1",
                port: int = 8000, serve_nice: int = SERVE_NICE) -> Any:
    names, sock = open_serving(serve, labellers, host, port, cfg.teacher)  # the port bound before anything is written
    try:
        _fresh_or_resumed(cfg)
    except BaseException:
        if sock is not None:
            sock.close()
        raise
    from prefrl.lm.online_dpo import run_online_dpo

    typer.echo(f"online-dpo: teacher {cfg.teacher}, reference {cfg.reference}, store {cfg.store_url}", err=True)
    if sock is None:
        return run_online_dpo(cfg)
    from prefrl.data.store import PreferenceStore

    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    with PreferenceStore(cfg.store_url) as store:  # one store: the app serves it, the rounds post to it
        return serve_while(store, names, lambda: run_online_dpo(cfg, store), host, port, sock=sock,
                           clips_dir=Path(cfg.output_dir) / "clips", nice=serve_nice,
                           echo=lambda line: typer.echo(line, err=True))  # fmt: skip


command_from_config(
    app,
    "online-dpo",
    OnlineDPORunConfig,
    _online_dpo,
    help="Online (iterative) DPO: each round samples two responses per prompt from the current policy, asks a "
    "teacher through the store (every pair and answer is kept there), and runs DPO on the fresh answers. "
    "--teacher reward-model (a frozen --reward-model prefers the higher score), judge (an AI judge, --judge "
    "MODEL or URL) or human (people in the web app: --serve --labellers ann,bob serves it from this run and "
    "prints a login link each, or run `prefrl label serve --store STORE` beside it; a round waits up to "
    "--answer-wait-s). --reference initial (the starting policy) or previous (the round's sampler). KL to the "
    "reference: implicit, strength --beta (the logs measure it to the starting policy with --kl-estimator). "
    "Loss: one DPO term per answered pair, mean over the minibatch. Resumable between rounds: --resume "
    "OUTPUT_DIR continues the run's own pairs, none asked twice.",
    extra=SERVE_OPTIONS,
)
command_from_config(
    app, "kto", KTOConfig, _kto,
    "KTO from unpaired feedback (prompt, completion, label: true/false; thumbs up/down, accepted/rejected logs), "
    "no pairs needed. KL to the reference: implicit, strength --beta. Loss: one term per example from the "
    "completion's summed log-probs, weighted by --desirable-weight / --undesirable-weight, mean over the batch.",
)  # fmt: skip
command_from_config(
    app,
    "best-of-n",
    BestOfNConfig,
    _best_of_n,
    "Best-of-n sampling against a reward model, no training (a baseline, or ReST data).",
)
command_from_config(app, "generate", GenerateConfig, _generate, "Sample responses for prompts; JSONL out.")
command_from_config(
    app, "evaluate", EvaluateConfig, _evaluate, "Score generations with a reward model and/or VADER gold."
)
command_from_config(
    app,
    "pairs",
    PairsConfig,
    _pairs,
    "Sample two responses per prompt and queue them in a store for labellers.",
)
