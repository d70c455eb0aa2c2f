"""Training a reward model from text comparisons (Ouyang et al. 2022 §3.5; Stiennon et al. 2020).

loss = BT(r(x, y_c) − m, r(x, y_r), μ) + c·mean[(r_c + r_r)²]

- BT is :func:`prefrl.losses.bradley_terry_loss` with ``random_response=0``; μ = 1 for
  a strict preference, 0.5 for a tie (pairs people marked "equally good");
- m is an optional margin (Touvron et al. 2023, Llama 2 §3.2.2);
- the centring term (Eisenstein et al. 2023; TRL's ``center_rewards_coefficient``) keeps
  scores near 0 so they stay comparable across runs.

After training the scores are normalised so that reference responses (the training
responses, chosen and rejected) score mean 0, std 1 per head.
Comparisons come from a file or from a :class:`~prefrl.data.store.PreferenceStore`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from prefrl.lm.data import PreferenceExample, load_preferences
from prefrl.lm.encoding import collate_prompt_completion, pack_preference_pairs
from prefrl.lm.models import load_tokenizer
from prefrl.lm.reward_model import RewardModel
from prefrl.lm.reward_model_config import RMConfig
from prefrl.lm.training import run_training
from prefrl.losses import bradley_terry_loss

__all__ = ["RMConfig", "train_reward_model", "preferences_from_store", "reward_metrics"]


def preferences_from_store(url_or_path: str) -> list[PreferenceExample]:
    """Answered text pairs of a store as examples; μ = 0.5 pairs are kept as ties."""
    from prefrl.data.store import PreferenceStore

    store = PreferenceStore(url_or_path)
    try:
        rows = store.text_preferences()
    finally:
        close = getattr(store, "close", None)
        if close is not None:
            close()
    out = []
    for pair, mu in rows:
        if mu == 0.0:  # right response preferred: swap so `chosen` carries the mass
            out.append(PreferenceExample(pair.prompt, pair.response_b, pair.response_a, 1.0))
        else:
            out.append(PreferenceExample(pair.prompt, pair.response_a, pair.response_b, float(mu)))
    if not out:
        raise ValueError(f"store {url_or_path}: no answered text comparisons to train on")
    return out


def reward_metrics(
    rewards_chosen: torch.Tensor, rewards_rejected: torch.Tensor, mu: torch.Tensor
) -> dict[str, float]:
    """``reward/accuracy`` (strict pairs only) and ``reward/margin`` = mean(r_c − r_r)."""
    strict = mu != 0.5
    diff = (rewards_chosen - rewards_rejected).detach()
    acc = float((diff[strict] > 0).float().mean()) if strict.any() else float("nan")
    return {
        "reward/accuracy": acc,
        "reward/margin": float(diff.mean()),
        "rewards/chosen": float(rewards_chosen.detach().mean()),
        "rewards/rejected": float(rewards_rejected.detach().mean()),
    }


def train_reward_model(cfg: RMConfig) -> dict[str, Any]:
    """Train a reward model; the checkpoint (``RewardModel.save_pretrained``) goes to ``cfg.output_dir``."""
    if cfg.resume is not None:
        rm = RewardModel.from_pretrained(cfg.resume)
        tokenizer = load_tokenizer(cfg.resume)
    else:
        rm = RewardModel.from_pretrained_lm(cfg.model, n_heads=cfg.n_heads, lora=cfg.lora, seed=cfg.seed)
        tokenizer = load_tokenizer(cfg.model)
    skipped = 0
    if cfg.store is not None:
        examples: list[PreferenceExample] = preferences_from_store(cfg.store)
    else:
        loaded = load_preferences(str(cfg.data), tokenizer, cfg.skip_bad_rows)
        examples, skipped = loaded.examples, loaded.skipped

    def encode(rows: list[PreferenceExample], device: Any) -> tuple[torch.Tensor, torch.Tensor]:
        # chosen and rejected in one forward pass (one DDP call per step)
        b = collate_prompt_completion(
            tokenizer,
            [r.prompt for r in rows] * 2,
            [r.chosen for r in rows] + [r.rejected for r in rows],
            cfg.max_length,
        )
        return b["input_ids"].to(device), b["attention_mask"].to(device)

    def loss_fn(m: Any, idx: list[int], device: Any) -> tuple[torch.Tensor, dict[str, float]]:
        rows = [examples[i] for i in idx]
        # one row per pair, the prompt computed once; two rows per pair if truncation split a prompt
        packed = pack_preference_pairs(
            tokenizer,
            [r.prompt for r in rows],
            [r.chosen for r in rows],
            [r.rejected for r in rows],
            cfg.max_length,
        )
        if packed is not None:
            packed = {k: v.to(device) for k, v in packed.items()}
            scores = m(packed=packed, return_members=True, normalize=False)  # (M, 2B)
        else:
            ids, mask = encode(rows, device)
            scores = m(ids, mask, return_members=True, normalize=False)  # (M, 2B)
        r_c, r_r = scores[:, : len(rows)], scores[:, len(rows) :]  # (M, B) each
        mu = torch.tensor([r.mu for r in rows], device=device).expand_as(r_c)
        loss = bradley_terry_loss(r_c - cfg.margin, r_r, mu, random_response=0.0)
        metrics = {"loss/bt": loss.item()}
        if cfg.center_rewards_coef > 0:
            center = cfg.center_rewards_coef * ((r_c + r_r) ** 2).mean()
            loss = loss + center
            metrics["loss/center"] = center.item()
        metrics["loss/total"] = loss.item()
        metrics.update(reward_metrics(r_c.mean(0), r_r.mean(0), mu[0]))
        if r_c.shape[0] > 1:
            metrics["reward/member_std"] = float(r_c.detach().std(0).mean())
        return loss, metrics

    def save_fn(m: Any, d: Path, final: bool) -> None:
        # step checkpoints keep raw scores (training continues from them); the final one is normalised
        if final and cfg.normalize:
            g = torch.Generator().manual_seed(cfg.seed)
            pick = torch.randperm(len(examples), generator=g)[: max(1, cfg.norm_samples // 2)].tolist()
            rows = [examples[i] for i in pick]
            was_training = m.training
            m.eval()
            device = next(m.parameters()).device
            ids, mask = encode(rows, device)
            m.fit_normalisation(ids, mask, batch_size=cfg.batch_size)
            m.train(was_training)
        m.save_pretrained(d, tokenizer=tokenizer)

    result = run_training(cfg, rm, len(examples), loss_fn, save_fn, "rm")
    result["skipped_rows"] = skipped
    result["n_pairs"] = len(examples)
    return result
