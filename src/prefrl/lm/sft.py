"""Supervised fine-tuning on demonstrations (Ouyang et al. 2022 §3.5, "SFT").

Next-token cross-entropy on the completion tokens only: prompt and padding positions
get label −100 and do not contribute to the loss.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from prefrl.lm.data import load_completions
from prefrl.lm.encoding import collate_prompt_completion, position_ids_from_mask
from prefrl.lm.logprobs import cross_entropy_on_completion
from prefrl.lm.models import load_causal_lm
from prefrl.lm.sft_config import SFTConfig
from prefrl.lm.training import run_training

__all__ = ["SFTConfig", "train_sft", "sft_labels"]


def sft_labels(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_mask: torch.Tensor
) -> torch.Tensor:
    """(B, T) labels: the token id on completion tokens, −100 on prompt and padding."""
    keep = (completion_mask * attention_mask).bool()
    return torch.where(keep, input_ids, torch.full_like(input_ids, -100))


def train_sft(cfg: SFTConfig) -> dict[str, Any]:
    """Fine-tune ``cfg.model`` on ``cfg.data``; the checkpoint is written to ``cfg.output_dir``."""
    if cfg.resume:  # continue the run's own weights (a LoRA adapter stays trainable)
        model, tokenizer = load_causal_lm(cfg.resume)
    else:  # start from (and refer to) the given model: a LoRA checkpoint is merged first (#12)
        model, tokenizer = load_causal_lm(cfg.model, lora=cfg.lora, seed=cfg.seed, merge_adapter=True)
    examples = load_completions(cfg.data, tokenizer, cfg.skip_bad_rows)

    def loss_fn(m: Any, idx: list[int], device: Any) -> tuple[torch.Tensor, dict[str, float]]:
        rows = [examples[i] for i in idx]
        b = collate_prompt_completion(
            tokenizer, [r.prompt for r in rows], [r.completion for r in rows], cfg.max_length
        )
        ids, mask = b["input_ids"].to(device), b["attention_mask"].to(device)
        labels = sft_labels(ids, mask, b["completion_mask"].to(device))
        logits = m(
            input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask), use_cache=False
        ).logits
        loss = cross_entropy_on_completion(logits, labels)  # (B, T, V) → scalar
        return loss, {"loss/sft": loss.item()}

    def save_fn(m: Any, d: Path, final: bool) -> None:
        m.save_pretrained(d)
        tokenizer.save_pretrained(d)

    result = run_training(cfg, model, len(examples), loss_fn, save_fn, "sft")
    result["skipped_rows"] = examples.skipped
    return result
