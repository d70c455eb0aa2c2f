"""Direct preference optimisation (Rafailov et al. 2023), with IPO and conservative DPO.

The loss is :func:`prefrl.losses.dpo_loss`. Reference log-probabilities are computed
ONCE before training and cached in ``output_dir/ref_logps.pt`` (reused on resume):
the reference never changes, so recomputing it every step would double the cost.
With LoRA the reference is the starting model with the adapter disabled
(``with model.disable_adapter():``), so no second copy of the weights is held: the adapter is
fresh, on top of ``--model`` (a LoRA checkpoint there is merged into the weights first), so the
policy equals the reference before the first update (loss ln 2, implicit rewards 0).

Logged: ``loss/dpo``, ``rewards/chosen`` = β·(log π(y_c) − log π_ref(y_c)),
``rewards/rejected``, ``reward/accuracy`` (implicit reward of chosen > rejected) and
``reward/margin``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from prefrl.lm.data import PreferenceExample, load_preferences
from prefrl.lm.dpo_config import DPOConfig
from prefrl.lm.encoding import collate_prompt_completion, pack_preference_pairs
from prefrl.lm.launch import make_accelerator
from prefrl.lm.logprobs import completion_logprobs, packed_pair_logprobs
from prefrl.lm.models import load_causal_lm
from prefrl.lm.training import run_training
from prefrl.losses import dpo_loss
from prefrl.utils.files import atomic_write

__all__ = ["DPOConfig", "train_dpo", "reference_logprobs", "cached_reference_logprobs", "reference_save_fn", "pair_logprobs", "dpo_batch_metrics"]


def _pair_batch(
    tokenizer: Any, rows: list[PreferenceExample], max_length: int, device: Any
) -> dict[str, torch.Tensor]:
    """Chosen rows then rejected rows, (2B, T), for one concatenated forward pass."""
    b = collate_prompt_completion(
        tokenizer,
        [r.prompt for r in rows] * 2,
        [r.chosen for r in rows] + [r.rejected for r in rows],
        max_length,
    )
    return {k: v.to(device) for k, v in b.items()}


def pair_logprobs(
    model: Any, tokenizer: Any, rows: list[PreferenceExample], max_length: int, device: Any
) -> torch.Tensor:
    """(2B,) summed log π of the chosen then the rejected responses of ``rows``.

    One packed row per pair (:func:`~prefrl.lm.encoding.pack_preference_pairs`: the prompt
    is computed once for both responses); two rows per pair when truncation cut the
    prompt differently for the two responses. Same values either way.
    """
    packed = pack_preference_pairs(
        tokenizer, [r.prompt for r in rows], [r.chosen for r in rows], [r.rejected for r in rows], max_length
    )
    if packed is not None:
        return packed_pair_logprobs(model, {k: v.to(device) for k, v in packed.items()})
    b = _pair_batch(tokenizer, rows, max_length, device)
    return completion_logprobs(model, b["input_ids"], b["attention_mask"], b["completion_mask"])


@torch.no_grad()
def reference_logprobs(
    ref: Any, tokenizer: Any, examples: list[PreferenceExample], max_length: int, batch_size: int = 8
) -> torch.Tensor:
    """(N, 2) summed reference log-probs of (chosen, rejected) for every example.

    ``ref`` is a model, or a peft model whose adapter is disabled for the pass.
    """
    was_training = ref.training
    ref.eval()
    device = next(ref.parameters()).device
    out = []
    ctx = ref.disable_adapter() if hasattr(ref, "disable_adapter") else _null()
    with ctx:
        for i in range(0, len(examples), batch_size):
            rows = examples[i : i + batch_size]
            lp = pair_logprobs(ref, tokenizer, rows, max_length, device)  # (2B,)
            out.append(torch.stack([lp[: len(rows)], lp[len(rows) :]], dim=1).cpu())
    ref.train(was_training)
    return torch.cat(out)


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


def dpo_batch_metrics(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> dict[str, float]:
    """Implicit rewards β·log(π/π_ref) of chosen and rejected, their accuracy and margin."""
    r_c = beta * (policy_chosen - ref_chosen).detach()
    r_r = beta * (policy_rejected - ref_rejected).detach()
    return {
        "rewards/chosen": float(r_c.mean()),
        "rewards/rejected": float(r_r.mean()),
        "reward/accuracy": float((r_c > r_r).float().mean()),
        "reward/margin": float((r_c - r_r).mean()),
    }


def cached_reference_logprobs(
    cfg: Any, policy: Any, tokenizer: Any, examples: list[PreferenceExample], key: dict[str, Any], acc: Any
) -> torch.Tensor:
    """(N, 2) :func:`reference_logprobs` of ``examples``, from ``output_dir/ref_logps.pt`` (or the
    resumed checkpoint's) when its ``key`` matches, else computed once and cached atomically.

    The reference is ``cfg.ref_model``, else the starting model: a LoRA policy with its adapter
    disabled, ``cfg.model`` reloaded when resuming, or ``policy`` itself before any update.
    """
    cache = Path(cfg.output_dir) / "ref_logps.pt"
    for candidate in (cache, Path(cfg.resume) / "ref_logps.pt" if cfg.resume else None):
        if candidate is not None and candidate.exists():
            saved = torch.load(candidate, weights_only=False)
            if saved.get("key") == key:
                return saved["logps"]
    if cfg.ref_model is not None:
        ref, _ = load_causal_lm(cfg.ref_model, merge_adapter=True)
        ref.to(acc.device)
    elif hasattr(policy, "disable_adapter"):
        ref = policy  # the adapter is disabled inside reference_logprobs
    elif cfg.resume is not None:
        ref, _ = load_causal_lm(cfg.model, merge_adapter=True)
        ref.to(acc.device)
    else:
        ref = policy
    ref_logps = reference_logprobs(ref, tokenizer, examples, cfg.max_length, cfg.batch_size)
    del ref
    if acc.is_main_process:  # every process computed the same values
        atomic_write(cache, lambda tmp: torch.save({"key": key, "logps": ref_logps}, tmp))
    return ref_logps


def reference_save_fn(tokenizer: Any, key: dict[str, Any], ref_logps: torch.Tensor) -> Any:
    """``save_fn(model, directory, final)`` of :func:`prefrl.lm.training.run_training`: HF model and
    tokenizer, and in step checkpoints the reference cache (the final save's directory holds it)."""

    def save_fn(m: Any, d: Path, final: bool) -> None:
        m.save_pretrained(d)
        tokenizer.save_pretrained(d)
        if not final:
            atomic_write(Path(d) / "ref_logps.pt", lambda tmp: torch.save({"key": key, "logps": ref_logps}, tmp))

    return save_fn


def train_dpo(cfg: DPOConfig) -> dict[str, Any]:
    """Run DPO from ``cfg.model`` (or ``cfg.resume``); the checkpoint goes to ``cfg.output_dir``."""
    acc = make_accelerator()
    if cfg.resume:  # continue the run's own weights (a LoRA adapter stays trainable)
        policy, tokenizer = load_causal_lm(cfg.resume)
    else:  # start from (and refer to) the given model: a LoRA checkpoint is merged first (#12)
        policy, tokenizer = load_causal_lm(cfg.model, lora=cfg.lora, seed=cfg.seed, merge_adapter=True)
    policy.to(acc.device)  # the reference pass below runs on the training device
    loaded = load_preferences(cfg.data, tokenizer, cfg.skip_bad_rows)
    examples = loaded.examples

    key = {
        "n": len(examples),
        "ref": cfg.ref_model or cfg.model,
        "max_length": cfg.max_length,
        "data": cfg.data,
    }
    ref_logps = cached_reference_logprobs(cfg, policy, tokenizer, examples, key, acc)

    def loss_fn(m: Any, idx: list[int], device: Any) -> tuple[torch.Tensor, dict[str, float]]:
        rows = [examples[i] for i in idx]
        lp = pair_logprobs(m, tokenizer, rows, cfg.max_length, device)  # (2B,)
        pc, pr = lp[: len(rows)], lp[len(rows) :]
        ref = ref_logps[idx].to(device)  # (B, 2)
        losses = dpo_loss(pc, pr, ref[:, 0], ref[:, 1], cfg.beta, cfg.label_smoothing, cfg.loss_type)  # (B,)
        loss = losses.mean()
        return loss, {"loss/dpo": loss.item(), **dpo_batch_metrics(pc, pr, ref[:, 0], ref[:, 1], cfg.beta)}

    save_fn = reference_save_fn(tokenizer, key, ref_logps)
    result = run_training(cfg, policy, len(examples), loss_fn, save_fn, "dpo", accelerator=acc)
    result["skipped_rows"] = loaded.skipped
    return result
