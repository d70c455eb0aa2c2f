"""Best-of-n / rejection sampling against a reward model (Nakano et al. 2021; Gao et al. 2022).

For each prompt, sample n responses from the policy and keep the one the reward model
scores highest. As a baseline it needs no training; as a data generator (ReST-style,
Gulcehre et al. 2023) its JSONL output (prompt, completion = best response) is SFT data.

Its KL to the sampling policy has the closed form KL_bon = log n − (n − 1)/n
(Stiennon et al. 2020, App. G.3), reported as ``objective/kl``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from prefrl.lm.best_of_n_config import BestOfNConfig
from prefrl.lm.data import write_jsonl
from prefrl.lm.generate import _prompts, sample_n, score_responses
from prefrl.lm.models import load_causal_lm

__all__ = ["BestOfNConfig", "best_of_n", "best_of_n_kl"]


def best_of_n_kl(n: int) -> float:
    """Analytic KL(π_bon ‖ π) = log n − (n − 1)/n."""
    if n < 1:
        raise ValueError(f"n must be ≥ 1, got {n}")
    return math.log(n) - (n - 1) / n


def best_of_n(cfg: BestOfNConfig) -> dict[str, Any]:
    """Run best-of-n; returns a summary with the mean best and mean sample scores and the KL."""
    from prefrl.lm.reward_model import RewardModel

    policy, tokenizer = load_causal_lm(cfg.model, padding_side="left", merge_adapter=True)
    rm = RewardModel.from_pretrained(cfg.reward_model, trainable=False)
    rm_tok = RewardModel.load_tokenizer(cfg.reward_model)
    prompts = _prompts(cfg, tokenizer)
    g = torch.Generator().manual_seed(cfg.seed)
    with torch.no_grad():
        samples = sample_n(policy, tokenizer, prompts, cfg.n, cfg, g)  # [prompt][j]
    flat_p = [p for p in prompts for _ in range(cfg.n)]
    flat_r = [r for rs in samples for r in rs]
    scores = score_responses(rm, rm_tok, flat_p, flat_r, cfg.batch_size, cfg.max_length).view(
        len(prompts), cfg.n
    )
    best = scores.argmax(1)  # (P,)
    rows = []
    for i, p in enumerate(prompts):
        j = int(best[i])
        rows.append(
            {
                "prompt": p,
                "completion": samples[i][j],
                "score": float(scores[i, j]),
                "scores": scores[i].tolist(),
                "candidates": samples[i],
            }
        )
    summary: dict[str, Any] = {
        "n": cfg.n,
        "prompts": len(prompts),
        "objective/scores_best": float(scores.max(1).values.mean()),
        "objective/scores_sample": float(scores.mean()),
        "objective/kl": best_of_n_kl(cfg.n),
    }
    if cfg.gold:
        from prefrl.lm.reward_functions import VaderScorer

        vader = VaderScorer()
        gold_all = vader.score_texts(flat_r).reshape(len(prompts), cfg.n)
        gold_best = gold_all[np.arange(len(prompts)), best.numpy()]
        for row, gb in zip(rows, gold_best):
            row["gold_score"] = float(gb)
        summary["gold/scores_best"] = float(gold_best.mean())
        summary["gold/scores_sample"] = float(gold_all.mean())
    write_jsonl(cfg.output, rows)
    summary["output"] = cfg.output
    return summary
