"""One-GPU check of every LM stage: SFT, RM, DPO, PPO and GRPO steps on SmolLM2 (issue #15 item 5).

Runs each stage's real code path (the library's losses, log-prob functions, PPO and GRPO
trainers) for ``--steps`` optimiser steps on ``--device`` with bf16 autocast (default on CUDA),
and prints per stage: seconds, tokens/s (tokens through the model in training steps; for PPO and
GRPO the generated tokens) and peak GPU memory. Meant to finish in well under 10 minutes on one
GPU; ``--device cpu --steps 1`` is the same path on a CPU (a few minutes with SmolLM2, seconds
with ``--model tiny``).

    PYTHONPATH=src .venv/bin/python benchmarks/gpu_check.py                    # cuda, bf16, smollm2
    PYTHONPATH=src .venv/bin/python benchmarks/gpu_check.py --device cpu --steps 1 --model tiny
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from prefrl.lm.critic_free import CriticFreeConfig, CriticFreeTrainer
from prefrl.lm.data import PreferenceExample
from prefrl.lm.dpo import pair_logprobs
from prefrl.lm.encoding import collate_prompt_completion, pack_preference_pairs, position_ids_from_mask
from prefrl.lm.logprobs import cross_entropy_on_completion
from prefrl.lm.models import load_causal_lm
from prefrl.lm.ppo import LMPPOConfig, LMPPOTrainer
from prefrl.lm.reward_functions import RewardModelScorer
from prefrl.lm.reward_model import RewardModel
from prefrl.lm.sft import sft_labels
from prefrl.losses import bradley_terry_loss, dpo_loss

PROMPTS = [f"Write a short review of film number {i}:" for i in range(16)]
GOOD, BAD = " A warm, funny and beautifully acted film.", " Dull, loud and far too long."


@contextlib.contextmanager
def measured(device: torch.device) -> Iterator[dict[str, float]]:
    """Wall time and peak GPU memory of the block (memory None off CUDA)."""
    out: dict[str, Any] = {}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    yield out
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        out["peak_gpu_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    else:
        out["peak_gpu_mem_gib"] = None
    out["seconds"] = time.perf_counter() - t0


def _optimise(model: torch.nn.Module, loss_fn: Callable[[], tuple[torch.Tensor, int]], steps: int, autocast: Any) -> int:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    tokens = 0
    for _ in range(steps):
        with autocast():
            loss, n = loss_fn()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += n
    return tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--bf16", choices=("auto", "on", "off"), default="auto", help="bf16 autocast (auto: on CUDA)")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device here; pass --device cpu")
    bf16 = args.bf16 == "on" or (args.bf16 == "auto" and device.type == "cuda")

    def autocast() -> Any:
        return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    b = args.batch_size
    prompts = (PROMPTS * (b // len(PROMPTS) + 1))[:b]
    results: dict[str, dict[str, float]] = {}
    policy, tok = load_causal_lm(args.model)
    policy.to(device).train()

    # SFT: cross-entropy on the completion tokens
    def sft_loss() -> tuple[torch.Tensor, int]:
        batch = collate_prompt_completion(tok, prompts, [GOOD] * b, 256)
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        labels = sft_labels(ids, mask, batch["completion_mask"].to(device))
        logits = policy(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
        return cross_entropy_on_completion(logits, labels), int(mask.sum())

    with measured(device) as m:
        n = _optimise(policy, sft_loss, args.steps, autocast)
    results["sft"] = {**m, "tokens_per_s": n / m["seconds"]}

    # RM: Bradley-Terry on packed pairs
    rm = RewardModel.from_causal_lm(load_causal_lm(args.model)[0]).to(device)
    packed = {k: v.to(device) for k, v in pack_preference_pairs(tok, prompts, [GOOD] * b, [BAD] * b, 256).items()}

    def rm_loss() -> tuple[torch.Tensor, int]:
        scores = rm(packed=packed)  # (2B,)
        return bradley_terry_loss(scores[:b], scores[b:], torch.ones(b, device=device)), int(packed["input_ids"].numel())

    with measured(device) as m:
        n = _optimise(rm, rm_loss, args.steps, autocast)
    results["rm"] = {**m, "tokens_per_s": n / m["seconds"]}

    # DPO: against the SFT'd policy's own log-probs as the reference
    rows = [PreferenceExample(p, GOOD, BAD) for p in prompts]
    with torch.no_grad(), autocast():
        ref = pair_logprobs(policy, tok, rows, 256, device).float()

    def dpo_step() -> tuple[torch.Tensor, int]:
        lp = pair_logprobs(policy, tok, rows, 256, device)
        return dpo_loss(lp[:b], lp[b:], ref[:b], ref[b:]).mean(), int(packed["input_ids"].numel())

    with measured(device) as m:
        n = _optimise(policy, dpo_step, args.steps, autocast)
    results["dpo"] = {**m, "tokens_per_s": n / m["seconds"]}

    # PPO (policy, reference, critic, reward model) and GRPO (policy, reference, reward model)
    policy.eval()
    rm.eval().requires_grad_(False)
    tok_left = load_causal_lm(args.model, padding_side="left")[1]
    scorer = RewardModelScorer(rm, tok)
    common = dict(batch_size=b, max_new_tokens=args.max_new_tokens, update_epochs=1, forward_batch_size=b)
    ppo = LMPPOTrainer(
        policy, None, RewardModel.from_causal_lm(load_causal_lm(args.model)[0]).to(device), scorer, tok_left,
        LMPPOConfig(minibatch_size=b // 2, **common),
    )  # fmt: skip
    grpo = CriticFreeTrainer(
        policy, None, scorer, tok_left, CriticFreeConfig(algo="grpo", num_generations=4, minibatch_size=b, **common)
    )
    for name, trainer in (("ppo", ppo), ("grpo", grpo)):
        generated = 0
        with measured(device) as m, autocast():
            for _ in range(args.steps):
                metrics = trainer.step(prompts)
                generated += metrics["response/length"] * trainer.cfg.rows_per_step
        results[name] = {**m, "tokens_per_s": generated / m["seconds"], "rollout_s_last": metrics["time/rollout_s"]}
        del trainer
    ppo = grpo = None

    print(f"device {device}  model {args.model}  bf16 autocast {'on' if bf16 else 'off'}  steps {args.steps}  batch {b}")
    print(f"{'stage':6s} {'seconds':>8s} {'tokens/s':>10s} {'peak GPU GiB':>13s}")
    for name, r in results.items():
        mem = "-" if r["peak_gpu_mem_gib"] is None else f"{r['peak_gpu_mem_gib']:.2f}"
        print(f"{name:6s} {r['seconds']:8.2f} {r['tokens_per_s']:10.1f} {mem:>13s}")
    print(json.dumps({"device": str(device), "model": args.model, "bf16": bf16, "stages": results}))


if __name__ == "__main__":
    main()
