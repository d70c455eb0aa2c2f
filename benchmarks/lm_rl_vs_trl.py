"""prefrl GRPO and RLOO vs TRL's GRPOTrainer and RLOOTrainer, like for like; and their losses on identical inputs.

Speed: same model (SmolLM2-135M, fp32) as policy, reference and reward-model backbone, same
prompts, same prompts × k completions per step, same ``max_new_tokens``, temperature, β and
learning rate, one update per batch (``update_epochs=1`` / ``num_iterations=1``), one CPU
thread, each run in a fresh subprocess (peak RSS is that run's alone), all runs back to back
in one invocation::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/lm_rl_vs_trl.py --trl-python /work/trl-venv/bin/python

The two sides are configured to compute the same objective where TRL allows it:

- GRPO: group-relative advantages scaled by the group's std; KL to the reference as a loss
  term with the k3 estimator (TRL's only choice when β > 0); per-token PPO-clip reduced over
  all the batch's tokens (prefrl ``loss_aggregation="token-mean"``, TRL ``loss_type="dapo"``,
  its default; the same thing with one process and no gradient accumulation).
- RLOO: leave-one-out advantages on the KL-shaped sequence reward score − β·Σ_t k1_t (both).
  The loss differs by design: prefrl clips the per-token ratio (PPO-clip, token-mean), TRL's
  RLOOTrainer clips one sequence-level ratio exp(Σ_t log π − Σ_t log π_old) and averages over
  sequences. With one update per batch both start at ratio 1.

Step time comes from each trainer's own clock (prefrl's ``time/step_s``; a callback around
TRL's ``training_step``, which includes its generation); generated tokens per step are the
completions' lengths (up to and including EOS).

Loss check (``--skip-speed`` runs it alone): on one fixed batch (a tiny random Llama, fixed
prompt and completion ids and masks, fixed old and reference log-probs, fixed rewards), TRL's
``GRPOTrainer._compute_loss`` and prefrl's ``CriticFreeTrainer`` loss for each TRL loss type
with a prefrl counterpart (``dapo``/``bnpo`` ↔ token-mean, ``grpo`` ↔ sequence-mean,
``dr_grpo`` ↔ constant), once on log-probs that each side computes with its own forward pass
and once on log-probs fixed for both (TRL's forward patched out). Results go to
docs/benchmarks_lm.md between this script's markers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _docs import write_section
from _workers import (  # benchmarks/ is sys.path[0] when run as a script
    PhaseClock,
    cached_run,
    median_phases,
    phase_cell,
    run_worker,
    spread,
    summarise,
    time_prefrl_steps,
)

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- lm_rl_vs_trl:begin -->", "<!-- lm_rl_vs_trl:end -->"
BETA, LR, CLIP = 0.05, 1e-6, 0.2
#: TRL GRPO loss type → prefrl loss_aggregation (one process, no gradient accumulation)
LOSS_TYPES = {"dapo": "token-mean", "bnpo": "token-mean", "grpo": "sequence-mean", "dr_grpo": "constant"}


def make_prompts(n: int) -> list[str]:
    return [f"Write a short review of movie number {i}. Review:" for i in range(n)]




# ---------------------------------------------------------------- speed workers (each in a subprocess)


def worker_prefrl(algo: str, model: str, steps: int, prompts_per_step: int, k: int, max_new: int, warmup: int) -> dict:
    import torch

    from prefrl.lm.critic_free import CriticFreeConfig, CriticFreeTrainer
    from prefrl.lm.models import load_causal_lm, load_tokenizer
    from prefrl.lm.reward_functions import RewardModelScorer
    from prefrl.lm.reward_model import RewardModel

    torch.set_num_threads(1)
    rows = prompts_per_step * k
    policy, tok = load_causal_lm(model, padding_side="left")
    scorer = RewardModelScorer(RewardModel.from_pretrained_lm(model, seed=2), load_tokenizer(model), batch_size=rows)
    kl = {"kl_penalty": "loss", "kl_estimator": "k3"} if algo == "grpo" else {"kl_penalty": "reward", "kl_estimator": "k1"}
    cfg = CriticFreeConfig(
        algo=algo,
        batch_size=prompts_per_step,
        num_generations=k,
        minibatch_size=rows,
        forward_batch_size=rows,
        update_epochs=1,
        max_new_tokens=max_new,
        temperature=1.0,
        kl_coef=BETA,
        learning_rate=LR,
        clip_coef=CLIP,
        max_prompt_length=64,
        loss_aggregation="token-mean",
        seed=0,
        **kl,
    )
    trainer = CriticFreeTrainer(policy, None, scorer, tok, cfg)  # reference: a frozen copy
    prompts = make_prompts(prompts_per_step * steps)
    return time_prefrl_steps(trainer, prompts, prompts_per_step, rows, steps, warmup)


def worker_trl(
    algo: str, model: str, steps: int, prompts_per_step: int, k: int, max_new: int, warmup: int, checkpointing: int = 1
) -> dict:
    """TRL's trainer on the same work; ``checkpointing`` 1 is TRL's default (``gradient_checkpointing=True``
    in GRPOConfig and RLOOConfig: activations recomputed in the backward pass), 0 turns it off, as prefrl runs."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback

    torch.set_num_threads(1)
    rows = prompts_per_step * k
    tok = AutoTokenizer.from_pretrained(model)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    rm = AutoModelForSequenceClassification.from_pretrained(model, num_labels=1)
    rm.config.pad_token_id = tok.pad_token_id
    rm_tok = AutoTokenizer.from_pretrained(model)
    rm_tok.pad_token = tok.pad_token
    ds = Dataset.from_list([{"prompt": p} for p in make_prompts(prompts_per_step * steps)])
    times: list[float] = []
    cpu: list[float] = []
    tokens: list[float] = []
    clock, cpu_phases = PhaseClock(), []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):  # noqa: ANN001, ANN003, ANN201
            self.t, self.c = time.perf_counter(), time.process_time()
            clock.split(0.0)  # what ran between steps is no step's

        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001, ANN003, ANN201
            times.append(time.perf_counter() - self.t)
            cpu.append(time.process_time() - self.c)
            cpu_phases.append(clock.split(cpu[-1]))

        def on_log(self, args, state, control, logs=None, **kw):  # noqa: ANN001, ANN003, ANN201
            if logs and "completions/mean_length" in logs:
                tokens.append(float(logs["completions/mean_length"]) * rows)

    common = dict(
        output_dir=tempfile.mkdtemp(prefix=f"bench-trl-{algo}-"),
        max_steps=steps,
        per_device_train_batch_size=rows,  # completions per step in TRL ≥ 1.0
        num_generations=k,
        max_completion_length=max_new,
        temperature=1.0,
        beta=BETA,
        epsilon=CLIP,
        num_iterations=1,
        learning_rate=LR,
        lr_scheduler_type="constant",
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        bf16=False,  # compare fp32 with fp32
        dataloader_num_workers=0,
        seed=0,
        gradient_checkpointing=bool(checkpointing),
    )
    if algo == "grpo":
        from trl import GRPOConfig as Config
        from trl import GRPOTrainer as Trainer

        common["loss_type"] = "dapo"
        common["use_bias_correction_kl"] = False  # GRPO's KL term, as prefrl's (TRL's default multiplies it by ρ)
    else:
        from trl import RLOOConfig as Config
        from trl import RLOOTrainer as Trainer
    trainer = Trainer(
        model=model,
        reward_funcs=rm,
        args=Config(**common),
        train_dataset=ds,
        processing_class=tok,
        reward_processing_classes=rm_tok,
        callbacks=[Timer()],
    )
    # CPU time per phase, as prefrl's: generation, the no-grad log-prob passes (reference), the reward model
    clock.wrap(trainer, "_generate", "sampling")
    clock.wrap(trainer, "_get_per_token_logps_and_entropies", "scoring", when=lambda: not torch.is_grad_enabled())
    clock.wrap(trainer, "_calculate_rewards", "reward")
    trainer.train()
    return {**summarise(times, tokens, warmup, cpu), "cpu_phases_s": median_phases(cpu_phases, warmup)}


# ---------------------------------------------------------------- loss on identical inputs


def fixed_batch(seed: int = 0) -> dict:
    """One batch of 2 prompts × 4 completions: ids, masks (ragged completions), log-probs, rewards."""
    import torch

    g = torch.Generator().manual_seed(seed)
    b, p, r, vocab = 8, 5, 7, 64
    prompt_ids = torch.randint(3, vocab, (b // 4, p), generator=g).repeat_interleave(4, 0)
    prompt_mask = torch.ones(b, p, dtype=torch.long)
    prompt_mask[4:, 0] = 0  # the second prompt is one token shorter (left padding)
    completion_ids = torch.randint(3, vocab, (b, r), generator=g)
    lengths = torch.tensor([7, 3, 5, 1, 6, 7, 2, 4])
    completion_mask = (torch.arange(r)[None, :] < lengths[:, None]).long()
    return {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
        "logps": -2.0 + 0.5 * torch.randn(b, r, generator=g),  # log π_θ
        "old_logps": -2.0 + 0.5 * torch.randn(b, r, generator=g),  # log π_old (ratios far from 1: clipping acts)
        "ref_logps": -2.0 + 0.5 * torch.randn(b, r, generator=g),  # log π_ref
        "rewards": torch.tensor([1.0, 0.5, -0.3, 2.0, 0.1, 0.1, 0.1, 0.1]),  # the second group: all equal
    }


def worker_trl_loss(model_dir: str, batch_file: str) -> dict:
    """TRL GRPOTrainer._compute_loss on the fixed batch, per loss type; its advantages from the rewards."""
    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    torch.set_num_threads(1)
    fb = torch.load(batch_file)
    b, r = fb["completion_ids"].shape
    out: dict = {}
    for loss_type in LOSS_TYPES:
        args = GRPOConfig(
            output_dir=tempfile.mkdtemp(),
            per_device_train_batch_size=b,
            num_generations=4,
            max_completion_length=r,
            beta=BETA,
            epsilon=CLIP,
            loss_type=loss_type,
            use_bias_correction_kl=False,  # TRL ≥ 1.x default True: KL × ratio (DeepSeek-V3.2), not GRPO's eq. 3
            report_to=[],
            use_cpu=True,
            bf16=False,
        )
        trainer = GRPOTrainer(
            model=model_dir,
            reward_funcs=lambda completions, **kw: [0.0] * len(completions),
            args=args,
            train_dataset=Dataset.from_list([{"prompt": "x"}] * b),
        )
        trainer.model.eval()
        # TRL's advantages (group mean, group std) from the same rewards
        grouped = fb["rewards"].view(-1, 4)
        mean, std = grouped.mean(1).repeat_interleave(4), grouped.std(1).repeat_interleave(4)
        advantages = (fb["rewards"] - mean) / (std + 1e-4)
        inputs = {
            k: fb[k] for k in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")
        } | {
            "advantages": advantages,
            "old_per_token_logps": fb["old_logps"],
            "ref_per_token_logps": fb["ref_logps"],
            "num_items_in_batch": fb["completion_mask"].sum(),
        }
        with torch.no_grad():
            own = float(trainer._compute_loss(trainer.model, inputs))
            own_logps = trainer._get_per_token_logps_and_entropies(
                trainer.model,
                torch.cat([fb["prompt_ids"], fb["completion_ids"]], 1),
                torch.cat([fb["prompt_mask"], fb["completion_mask"]], 1),
                r,
            )[0]
            trainer._get_per_token_logps_and_entropies = lambda *a, **kw: (fb["logps"], torch.zeros_like(fb["logps"]), None)
            fixed = float(trainer._compute_loss(trainer.model, inputs))
        out[loss_type] = {"own_forward": own, "fixed_logps": fixed}
        out["logps"] = own_logps.tolist()
        out["advantages"] = advantages.tolist()
    return out


def prefrl_loss(model_dir: str, batch_file: str) -> dict:
    """Our GRPO loss on the same batch: advantages from the rewards, loss from log-probs (ours or fixed)."""
    import torch

    from prefrl.lm.critic_free import CriticFreeConfig, CriticFreeTrainer
    from prefrl.lm.logprobs import response_logprobs
    from prefrl.lm.models import load_causal_lm

    fb = torch.load(batch_file)
    b, r = fb["completion_ids"].shape
    policy, tok = load_causal_lm(model_dir, padding_side="left")
    ids = torch.cat([fb["prompt_ids"], fb["completion_ids"]], 1)
    attn = torch.cat([fb["prompt_mask"], fb["completion_mask"]], 1)
    mask = fb["completion_mask"].float()
    with torch.no_grad():
        logps = response_logprobs(policy, ids, attn, fb["prompt_ids"].shape[1])[0]
    out: dict = {"logps": logps.tolist()}
    for loss_type, aggregation in LOSS_TYPES.items():
        cfg = CriticFreeConfig(
            algo="grpo",
            batch_size=2,
            num_generations=4,
            minibatch_size=b,
            max_new_tokens=r,
            kl_penalty="loss",
            kl_estimator="k3",
            kl_coef=BETA,
            clip_coef=CLIP,
            loss_aggregation=aggregation,
        )
        trainer = CriticFreeTrainer(policy, None, lambda batch: None, tok, cfg)
        score_rewards = torch.zeros(b, r)
        score_rewards[torch.arange(b), mask.sum(1).long() - 1] = fb["rewards"]  # the score sits on the last token
        beta, _, _, advantages = trainer.shaped_advantages(score_rewards, fb["old_logps"], fb["ref_logps"], mask)
        values = {}
        for name, lp in (("own_forward", logps), ("fixed_logps", fb["logps"])):
            pg, kl = trainer.minibatch_loss(lp, fb["old_logps"], fb["ref_logps"], advantages, mask, beta)
            values[name] = float(pg + kl)
        out[loss_type] = values
        out["advantages"] = (advantages.sum(1) / mask.sum(1)).tolist()
    return out


def loss_check(trl_python: str) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from prefrl.lm.models import tiny_tokenizer

    tmp = Path(tempfile.mkdtemp(prefix="bench-rl-loss-"))
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                    pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    )
    model.save_pretrained(tmp / "model")
    tiny_tokenizer().save_pretrained(tmp / "model")
    torch.save(fixed_batch(), tmp / "batch.pt")
    trl = run_worker(trl_python, __file__, ["--worker", "trl_loss", str(tmp / "model"), str(tmp / "batch.pt")])
    ours = prefrl_loss(str(tmp / "model"), str(tmp / "batch.pt"))
    return {"trl": trl, "ours": ours, "batch_file": str(tmp / "batch.pt")}


# ---------------------------------------------------------------- driver


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trl-python", default="/work/trl-venv/bin/python")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--prompts-per-step", type=int, default=2)
    ap.add_argument("--num-generations", type=int, default=4, help="completions k per prompt (GRPO/RLOO group)")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--skip-speed", action="store_true", help="only the loss check")
    ap.add_argument("--algos", default="grpo,rloo", help="the methods timed (comma-separated)")
    ap.add_argument(
        "--before-src",
        help="also time prefrl from this src/ directory (an older revision, e.g. `git archive REV src`) "
        "after each pair of runs: the before/after column",
    )
    ap.add_argument("--before-algos", default="grpo,rloo", help="the methods --before-src is timed for")
    ap.add_argument(
        "--trl-checkpointing-algos",
        default="grpo,rloo",
        help="also time TRL with its default gradient_checkpointing=True for these methods (the like-for-like "
        "TRL run has it off, as prefrl)",
    )
    ap.add_argument("--before-label", default="before", help="how the --before-src revision is named in the table")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks_lm.md"))
    ap.add_argument("--results-file", help="JSONL of finished runs: reused by a rerun with the same settings (resume)")
    ap.add_argument(
        "--sides",
        help="run only these sides (comma-separated from prefrl, trl, trl-gc, before) into --results-file and "
        "write no table: e.g. the TRL runs first, prefrl's after a change",
    )
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.worker:
        kind, rest = a.worker[0], a.worker[1:]
        if kind == "trl_loss":
            res = worker_trl_loss(*rest)
        else:
            side, algo = kind.split("_")
            fn = worker_prefrl if side == "prefrl" else worker_trl
            res = fn(algo, rest[0], *map(int, rest[1:]))
        print(json.dumps(res))
        return

    from prefrl.lm.models import resolve_model_path

    model = resolve_model_path(a.model)
    shared = [model, str(a.steps), str(a.prompts_per_step), str(a.num_generations), str(a.max_new_tokens), str(a.warmup)]
    results = {}
    if not a.skip_speed:
        for algo in a.algos.split(","):
            runs = [("prefrl", sys.executable, None), ("trl", a.trl_python, None)]
            if algo in a.trl_checkpointing_algos.split(","):
                runs.append(("trl-gc", a.trl_python, None))
            if a.before_src and algo in a.before_algos.split(","):
                runs.append(("before", sys.executable, a.before_src))
            for side, python, src in runs:
                if a.sides and side not in a.sides.split(","):
                    continue
                kind = f"{'prefrl' if side in ('prefrl', 'before') else 'trl'}_{algo}"
                extra = [str(int(side == "trl-gc"))] if kind.startswith("trl") else []
                argv = ["--worker", kind, *shared, *extra]
                res = cached_run(
                    a.results_file, " ".join([side, *argv]), lambda p=python, v=argv, s=src: run_worker(p, __file__, v, src=s)
                )
                print(side, algo, res, flush=True)
                results[(side, algo)] = res
    if a.sides:
        return
    check = loss_check(a.trl_python)
    print(json.dumps(check), flush=True)

    trl_version = subprocess.run(
        [a.trl_python, "-c", "import trl; print(trl.__version__)"], capture_output=True, text=True
    ).stdout.strip()
    rows = a.prompts_per_step * a.num_generations
    lines = ["## GRPO and RLOO vs TRL's GRPOTrainer and RLOOTrainer", ""]
    if results:
        lines += [
            f"Produced by `benchmarks/lm_rl_vs_trl.py` on {time.strftime('%Y-%m-%d')}, TRL {trl_version}, one thread "
            "per run, each run a fresh process, one at a time (rows of earlier invocations come from `--results-file`), all nice'd alike. Model "
            f"`{a.model}` (fp32) as policy, reference (a frozen copy) and reward-model backbone (a fresh scalar "
            f"head); {a.prompts_per_step} prompts × k = {a.num_generations} completions = {rows} per step, at most "
            f"{a.max_new_tokens} new tokens, temperature 1, β = {BETA}, clip ε = {CLIP}, lr {LR}, one update per "
            f"batch; {a.steps} steps of which the first {a.warmup} is warm-up (s / 1k tokens = Σ step time / Σ "
            "generated tokens over the measured steps). GRPO: KL k3 as a loss, token-mean (TRL `loss_type='dapo'`, "
            "`use_bias_correction_kl=False`: TRL's default multiplies the KL term by the ratio, which GRPO's paper "
            "does not). "
            "RLOO: k1 in the sequence reward, leave-one-out advantages.",
            "",
            "CPU s = the process's CPU time (one thread: what the wall clock reads on an idle core; on this shared "
            "machine the wall clock also counts the time other jobs held the core), with the range of the measured "
            "steps' own CPU s / 1k tokens in brackets. Ratio = TRL's s / 1k tokens over prefrl's (> 1: prefrl "
            "faster). TRL's GRPOConfig and RLOOConfig default to `gradient_checkpointing=True` (activations "
            "recomputed in the backward pass: less memory, one more forward per update); prefrl does not checkpoint, "
            "so the like-for-like TRL run turns it off, and the rows marked *TRL default* keep it on. CPU s per step "
            "by phase (medians over the measured steps): sampling (prefrl's KV-cached sampler, TRL's `_generate`), "
            "scoring (the no-grad log-prob passes: the reference), reward (the reward model), update (the rest of the "
            "step: the policy's forward, backward and optimiser step, and the advantages).",
            "",
            "| method | prefrl CPU s / 1k tokens [steps] | TRL CPU s / 1k tokens [steps] | ratio by CPU time (target ≥ "
            "1.3) | prefrl wall s / 1k | TRL wall s / 1k | ratio by wall clock | prefrl peak RSS (MB) | TRL peak RSS "
            "(MB) | prefrl CPU s per step: sampling / scoring / reward / update | TRL CPU s per step: sampling / "
            "scoring / reward / update |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
        ]
        for algo in a.algos.split(","):
            name = algo.upper()
            rows_ = [(f"{name} vs TRL, checkpointing off on both sides", results[("prefrl", algo)], results[("trl", algo)])]
            if ("trl-gc", algo) in results:
                rows_.append(
                    (f"{name} vs *TRL default* (its gradient checkpointing on)", results[("prefrl", algo)],
                     results[("trl-gc", algo)])
                )
            if ("before", algo) in results:
                rows_.append(
                    (f"{name}, prefrl before this change ({a.before_label}), vs TRL checkpointing off",
                     results[("before", algo)], results[("trl", algo)])
                )
            for label, ours, theirs in rows_:
                lines.append(
                    f"| {label} | {ours['cpu_s_per_1k_tokens']:.1f} [{spread(ours)}] | "
                    f"{theirs['cpu_s_per_1k_tokens']:.1f} [{spread(theirs)}] | "
                    f"{theirs['cpu_s_per_1k_tokens'] / ours['cpu_s_per_1k_tokens']:.2f}x | "
                    f"{ours['s_per_1k_tokens']:.1f} | {theirs['s_per_1k_tokens']:.1f} | "
                    f"{theirs['s_per_1k_tokens'] / ours['s_per_1k_tokens']:.2f}x | {ours['peak_rss_mb']:.0f} | "
                    f"{theirs['peak_rss_mb']:.0f} | {phase_cell(ours)} | {phase_cell(theirs)} |"
                )
        lines.append("")
    lines += [
        "### GRPO loss on identical inputs",
        "",
        "One fixed batch (tiny random Llama; 2 prompts × 4 completions of lengths 1–7, the second group's rewards "
        "all equal; old and reference log-probs fixed, ratios far from 1 so that clipping acts), β = "
        f"{BETA}, ε = {CLIP}, fp32. TRL: `GRPOTrainer._compute_loss` with `use_bias_correction_kl=False`; prefrl: `CriticFreeTrainer.shaped_advantages` "
        "then `minibatch_loss` (what its update minimises).",
        "",
        "| TRL loss_type | prefrl loss_aggregation | TRL, own forward | prefrl, own forward | abs. diff. | TRL, fixed "
        "log-probs | prefrl, fixed log-probs | abs. diff. |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    trl, ours = check["trl"], check["ours"]
    for loss_type, aggregation in LOSS_TYPES.items():
        t, o = trl[loss_type], ours[loss_type]
        lines.append(
            f"| {loss_type} | {aggregation} | {t['own_forward']:.8f} | {o['own_forward']:.8f} | "
            f"{abs(t['own_forward'] - o['own_forward']):.1e} | {t['fixed_logps']:.8f} | {o['fixed_logps']:.8f} | "
            f"{abs(t['fixed_logps'] - o['fixed_logps']):.1e} |"
        )
    import torch

    valid = torch.load(check["batch_file"])["completion_mask"].bool()
    lp_diff = float((torch.tensor(trl["logps"]) - torch.tensor(ours["logps"]))[valid].abs().max())
    adv_diff = float((torch.tensor(trl["advantages"]) - torch.tensor(ours["advantages"])).abs().max())
    lines += [
        "",
        f"Max |Δ| of the per-token log-probs of the two forward passes: {lp_diff:.1e}; of the group-relative "
        f"advantages: {adv_diff:.1e}. `tests/lm/test_critic_free_loss.py` checks the same losses, and RLOO's, "
        "against the papers' formulas written out in the test.",
        "",
    ]
    block = "\n".join(lines)
    if a.skip_speed:  # the docs' block holds the speed table too: print only
        print(block)
        return
    write_section(Path(a.out), BEGIN, END, block, heading="")
    print(block)


if __name__ == "__main__":
    main()
