"""Sampling and scoring text outside training: ``generate``, ``evaluate`` and ``pairs``.

- :func:`generate_completions` samples n responses per prompt (JSONL out, in the
  prompt-completion format the SFT stage reads);
- :func:`score_responses` scores prompt‖response texts with a reward model, reading the
  score at the last non-pad token;
- :func:`evaluate` scores a JSONL of generations with a reward model and/or the VADER
  gold reward;
- :func:`push_pairs` samples two responses per prompt and queues them in a
  PreferenceStore as text pairs for people to label.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prefrl.lm.data import load_completions, load_prompts, write_jsonl
from prefrl.lm.encoding import collate_prompt_completion
from prefrl.lm.generate_config import EvaluateConfig, GenerateConfig, PairsConfig, SamplingArgs
from prefrl.lm.models import load_causal_lm

__all__ = [
    "SamplingArgs",
    "GenerateConfig",
    "EvaluateConfig",
    "PairsConfig",
    "sample_n",
    "generate_completions",
    "score_responses",
    "evaluate",
    "push_pairs",
]


def sample_n(
    model: Any, tokenizer: Any, prompts: list[str], n: int, cfg: SamplingArgs, generator: torch.Generator
) -> list[list[str]]:
    """n sampled responses for each prompt: ``out[i][j]`` is sample j of prompt i."""
    from prefrl.lm.rollout import sample_responses

    flat = [p for p in prompts for _ in range(n)]
    responses: list[str] = []
    model.eval()
    for i in range(0, len(flat), cfg.batch_size):
        batch = sample_responses(
            model,
            tokenizer,
            flat[i : i + cfg.batch_size],
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_k=cfg.top_k,
            max_prompt_length=cfg.max_prompt_length,
            generator=generator,
        )
        responses.extend(batch.responses)
    return [responses[i * n : (i + 1) * n] for i in range(len(prompts))]


def _prompts(cfg: SamplingArgs, tokenizer: Any) -> list[str]:
    prompts = [p.prompt for p in load_prompts(cfg.prompts, tokenizer)]
    return prompts[: cfg.max_prompts] if cfg.max_prompts else prompts


def generate_completions(cfg: GenerateConfig) -> Path:
    """Write ``{"prompt", "completion", "sample"}`` rows, ``cfg.n`` per prompt; returns the path."""
    model, tokenizer = load_causal_lm(cfg.model, padding_side="left", merge_adapter=True)
    prompts = _prompts(cfg, tokenizer)
    g = torch.Generator().manual_seed(cfg.seed)
    with torch.no_grad():
        samples = sample_n(model, tokenizer, prompts, cfg.n, cfg, g)
    rows = [
        {"prompt": p, "completion": c, "sample": j}
        for p, cs in zip(prompts, samples)
        for j, c in enumerate(cs)
    ]
    return write_jsonl(cfg.output, rows)


@torch.no_grad()
def score_responses(
    reward_model: Any,
    tokenizer: Any,
    prompts: list[str],
    responses: list[str],
    batch_size: int = 16,
    max_length: int = 512,
    members: bool = False,
) -> torch.Tensor:
    """(N,) reward-model scores of prompt‖response (EOS appended); (M, N) with ``members``."""
    reward_model.eval()
    device = next(reward_model.parameters()).device
    out = []
    for i in range(0, len(prompts), batch_size):
        b = collate_prompt_completion(
            tokenizer, prompts[i : i + batch_size], responses[i : i + batch_size], max_length
        )
        s = reward_model(b["input_ids"].to(device), b["attention_mask"].to(device), return_members=members)
        out.append(s.cpu())
    return torch.cat(out, dim=-1)


def evaluate(cfg: EvaluateConfig) -> dict[str, float]:
    """Mean/std of reward-model and/or gold scores of the generations in ``cfg.data``."""
    rows = load_completions(cfg.data).examples
    prompts, responses = [r.prompt for r in rows], [r.completion for r in rows]
    summary: dict[str, float] = {"n": float(len(rows))}
    per_row: dict[str, list[float]] = {}
    if cfg.reward_model is not None:
        from prefrl.lm.reward_model import RewardModel

        rm = RewardModel.from_pretrained(cfg.reward_model, trainable=False)
        tok = RewardModel.load_tokenizer(cfg.reward_model)
        s = score_responses(rm, tok, prompts, responses, cfg.batch_size, cfg.max_length).numpy()
        per_row["rm_score"] = s.tolist()
        summary.update({"objective/scores": float(s.mean()), "objective/scores_std": float(s.std())})
    if cfg.gold:
        from prefrl.lm.reward_functions import VaderScorer

        g = VaderScorer().score_texts(responses)
        per_row["gold_score"] = g.tolist()
        summary.update({"gold/scores": float(np.mean(g)), "gold/scores_std": float(np.std(g))})
    if cfg.output is not None:
        write_jsonl(
            cfg.output,
            [
                {"prompt": p, "completion": c, **{k: v[i] for k, v in per_row.items()}}
                for i, (p, c) in enumerate(zip(prompts, responses))
            ],
        )
    return summary


def push_pairs(cfg: PairsConfig) -> list[int]:
    """Sample two responses per prompt, store them as ``TextPair``s and queue a query for each.

    Returns the stored text-pair ids.
    """
    from prefrl.data.store import PreferenceStore
    from prefrl.data.types import TextPair

    model, tokenizer = load_causal_lm(cfg.model, padding_side="left", merge_adapter=True)
    prompts = _prompts(cfg, tokenizer)
    g = torch.Generator().manual_seed(cfg.seed)
    with torch.no_grad():
        samples = sample_n(model, tokenizer, prompts, 2, cfg, g)
    meta = {"model": cfg.model, "temperature": cfg.temperature, "seed": cfg.seed}
    pairs = [
        TextPair(prompt=p, response_a=a, response_b=b, meta=dict(meta)) for p, (a, b) in zip(prompts, samples)
    ]
    store = PreferenceStore(cfg.store)
    try:
        ids = store.add_text_pairs(pairs)
        for pair_id in ids:
            store.add_query(text_pair_id=pair_id, priority=cfg.priority)
    finally:
        close = getattr(store, "close", None)
        if close is not None:
            close()
    return ids


def summary_json(summary: dict[str, Any]) -> str:
    """Compact JSON for printing a summary dict."""
    return json.dumps({k: (round(v, 6) if isinstance(v, float) else v) for k, v in summary.items()})
