"""Kahneman–Tversky optimisation (Ethayarajh et al. 2024) from unpaired feedback.

Each example is one response with a binary label (TRL's unpaired format: ``prompt``,
``completion``, ``label``), e.g. the app's thumbs up/down or logs of accepted/rejected answers;
no pairs are needed. The loss is :func:`prefrl.losses.kto_loss` with the reference point
:func:`prefrl.losses.kto_reference_point` estimated, as in the paper and TRL, on mismatched
pairs: example i's prompt with example (i + 1) mod N's completion. That pairing is fixed, so the
reference log-probs of both the matched and the mismatched response are computed once and cached
with DPO's machinery (:func:`prefrl.lm.dpo.cached_reference_logprobs`): example i is passed as a
"pair" whose two responses share prompt i.

Logged: ``loss/kto``, ``kto/reference_point`` (z_ref), ``rewards/desirable`` and
``rewards/undesirable`` (mean β·log π/π_ref of each kind in the batch; NaN when absent).
"""

from __future__ import annotations

from typing import Any

import torch

from prefrl.lm.data import PreferenceExample, load_unpaired
from prefrl.lm.dpo import cached_reference_logprobs, pair_logprobs, reference_save_fn
from prefrl.lm.kto_config import KTOConfig
from prefrl.lm.launch import make_accelerator
from prefrl.lm.models import load_causal_lm
from prefrl.lm.training import run_training
from prefrl.losses import kto_loss, kto_reference_point

__all__ = ["KTOConfig", "train_kto", "kto_rows"]


def kto_rows(examples: list[Any]) -> list[PreferenceExample]:
    """Example i as (prompt_i, its completion, completion of example (i + 1) mod N) for one packed pass."""
    n = len(examples)
    return [
        PreferenceExample(ex.prompt, ex.completion, examples[(i + 1) % n].completion) for i, ex in enumerate(examples)
    ]


def train_kto(cfg: KTOConfig) -> dict[str, Any]:
    """Run KTO from ``cfg.model`` (or ``cfg.resume``); the checkpoint goes to ``cfg.output_dir``."""
    acc = make_accelerator()
    if cfg.resume:  # continue the run's own weights (a LoRA adapter stays trainable)
        policy, tokenizer = load_causal_lm(cfg.resume)
    else:  # start from (and refer to) the given model: a LoRA checkpoint is merged first (#12)
        policy, tokenizer = load_causal_lm(cfg.model, lora=cfg.lora, seed=cfg.seed, merge_adapter=True)
    policy.to(acc.device)
    loaded = load_unpaired(cfg.data, tokenizer, cfg.skip_bad_rows)
    examples = loaded.examples
    rows = kto_rows(examples)
    labels = torch.tensor([ex.label for ex in examples])
    key = {"n": len(rows), "ref": cfg.ref_model or cfg.model, "max_length": cfg.max_length, "data": cfg.data, "kto": 1}
    ref_logps = cached_reference_logprobs(cfg, policy, tokenizer, rows, key, acc)  # (N, 2): matched, mismatched

    def loss_fn(m: Any, idx: list[int], device: Any) -> tuple[torch.Tensor, dict[str, float]]:
        lp = pair_logprobs(m, tokenizer, [rows[i] for i in idx], cfg.max_length, device)  # (2B,)
        b = len(idx)
        ref = ref_logps[idx].to(device)  # (B, 2)
        desirable = labels[idx].to(device)
        z = kto_reference_point(lp[b:], ref[:, 1])
        losses = kto_loss(
            lp[:b], ref[:, 0], desirable, z, cfg.beta, cfg.desirable_weight, cfg.undesirable_weight
        )  # (B,)
        loss = losses.mean()
        rewards = cfg.beta * (lp[:b] - ref[:, 0]).detach()
        return loss, {
            "loss/kto": loss.item(),
            "kto/reference_point": float(z),
            "rewards/desirable": float(rewards[desirable].mean()) if desirable.any() else float("nan"),
            "rewards/undesirable": float(rewards[~desirable].mean()) if (~desirable).any() else float("nan"),
        }

    save_fn = reference_save_fn(tokenizer, key, ref_logps)
    result = run_training(cfg, policy, len(examples), loss_fn, save_fn, "kto", accelerator=acc)
    result["skipped_rows"] = loaded.skipped
    return result
