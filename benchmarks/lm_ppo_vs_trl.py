"""prefrl's LM PPO step vs TRL's own PPO-with-critic: seconds per 1,000 generated tokens, peak memory.

TRL dropped its PPO trainer in 1.13.0; 1.12.0 is the newest release that ships one
(``trl.experimental.ppo.PPOTrainer``: policy, reference, value model, reward model). It runs
in its own venv, pinned to prefrl's torch so that no CUDA build is pulled::

    python3 -m venv /work/trl-ppo-venv
    /work/trl-ppo-venv/bin/pip install trl==1.12.0 torch==2.13.0 -c constraints.txt
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/lm_ppo_vs_trl.py --trl-python /work/trl-ppo-venv/bin/python

Same model (SmolLM2-135M, fp32) for policy, reference, critic and reward model (the last
two: the backbone with a fresh scalar head, seeds 1 and 2 on both sides: the scores are
arbitrary, only the cost matters), same prompts, batch, ``max_new_tokens``, β, lr and epoch
count, one CPU thread, each run in a fresh subprocess (peak RSS is that run's alone), the
runs back to back in one invocation.

One step on both sides: sample B completions; score them (policy log-probs — TRL from the
generation's logits, prefrl from its sampler —, reference log-probs, critic values, reward);
k1 KL in the per-token reward; GAE; ``epochs`` passes of one clipped policy + value update on
the whole batch. Step time: prefrl's ``time/step_s``; TRL: the time between its
``on_step_end`` callbacks (its loop has no step-begin hook). Generated tokens: the
completions' lengths up to and including EOS on both sides (TRL's counted from its
``batch_generation``). Results go to docs/benchmarks_lm.md between this script's markers.
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
BEGIN, END = "<!-- lm_ppo_vs_trl:begin -->", "<!-- lm_ppo_vs_trl:end -->"


def make_prompts(n: int) -> list[str]:
    return [f"Write a short review of movie number {i}. Review:" for i in range(n)]


# ---------------------------------------------------------------- workers (run in a subprocess)


def worker_ppo(
    model: str, steps: int, batch: int, max_new: int, warmup: int, epochs: int, lora_r: int = 0
) -> dict:
    import torch

    from prefrl.lm.models import LoraSpec, load_causal_lm, load_tokenizer
    from prefrl.lm.ppo import LMPPOConfig, LMPPOTrainer
    from prefrl.lm.reward_functions import RewardModelScorer
    from prefrl.lm.reward_model import RewardModel

    torch.set_num_threads(1)
    lora = LoraSpec(lora_r, 2.0 * lora_r, 0.0) if lora_r else None
    # with LoRA the reference is the policy with its adapter disabled, and the critic is LoRA too
    policy, tok = load_causal_lm(model, padding_side="left", lora=lora)
    critic = RewardModel.from_pretrained_lm(model, seed=1, lora=lora)
    scorer = RewardModelScorer(
        RewardModel.from_pretrained_lm(model, seed=2), load_tokenizer(model), batch_size=batch
    )
    cfg = LMPPOConfig(
        batch_size=batch,
        minibatch_size=batch,
        forward_batch_size=batch,
        update_epochs=epochs,
        max_new_tokens=max_new,
        temperature=1.0,
        kl_coef=0.05,
        learning_rate=1e-6,
        max_prompt_length=64,
        seed=0,
    )
    trainer = LMPPOTrainer(policy, None, critic, scorer, tok, cfg)  # reference: a frozen copy, or no adapter
    prompts = make_prompts(batch * steps)
    return time_prefrl_steps(trainer, prompts, batch, batch, steps, warmup)


def worker_trl_ppo(
    model: str, steps: int, batch: int, max_new: int, warmup: int, epochs: int, checkpointing: int = 1
) -> dict:
    """TRL's own PPO-with-critic (``trl.experimental.ppo.PPOTrainer``, TRL ≤ 1.12) on the same work;
    ``checkpointing`` 1 is its default (``gradient_checkpointing=True``), 0 turns it off, as prefrl runs."""
    import torch
    from datasets import Dataset
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        TrainerCallback,
    )
    from trl.experimental.ppo import PPOConfig, PPOTrainer
    from trl.experimental.ppo import ppo_trainer as ppo_module

    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(model, padding_side="left")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token

    def seq_model(seed: int):  # noqa: ANN202 - the backbone with a fresh scalar head, like prefrl's
        torch.manual_seed(seed)
        m = AutoModelForSequenceClassification.from_pretrained(model, num_labels=1)
        m.config.pad_token_id = tok.pad_token_id
        return m

    value_model, reward_model = seq_model(1), seq_model(2)
    policy = AutoModelForCausalLM.from_pretrained(model)
    prompts = make_prompts(batch * steps)
    ds = Dataset.from_list([{"input_ids": tok(p, truncation=True, max_length=64)["input_ids"]} for p in prompts])

    tokens: list[float] = []
    generate = ppo_module.batch_generation

    def counting_generation(model_, queries, *a, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        query_responses, logits = generate(model_, queries, *a, **kw)
        resp = query_responses[:, queries.shape[1] :]
        # generated tokens up to and including the first EOS (as prefrl counts them)
        first_eos = ppo_module.first_true_indices(resp == tok.eos_token_id)  # R where there is none
        tokens.append(float((first_eos + 1).clamp(max=resp.shape[1]).sum()))
        return query_responses, logits

    ppo_module.batch_generation = counting_generation
    ends: list[tuple[float, float]] = []
    clock, cpu_phases = PhaseClock(), []
    # CPU time per phase, as prefrl's: generation, the no-grad reference and value passes, the reward model
    clock.wrap(ppo_module, "batch_generation", "sampling")
    clock.wrap(ppo_module, "forward", "scoring", when=lambda: not torch.is_grad_enabled())
    clock.wrap(
        ppo_module,
        "get_reward",
        lambda m, *a, **kw: "reward" if m is reward_model else "scoring",
        when=lambda: not torch.is_grad_enabled(),
    )

    class Timer(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):  # noqa: ANN001, ANN003, ANN201
            ends.append((time.perf_counter(), time.process_time()))
            clock.split(0.0)

        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001, ANN003, ANN201
            ends.append((time.perf_counter(), time.process_time()))
            cpu_phases.append(clock.split(ends[-1][1] - ends[-2][1]))

    cfg = PPOConfig(
        output_dir=tempfile.mkdtemp(prefix="bench-trl-ppo-"),
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=1,
        num_mini_batches=1,  # one minibatch of the whole batch, as prefrl's minibatch_size = batch
        local_rollout_forward_batch_size=batch,
        total_episodes=batch * steps,
        num_ppo_epochs=epochs,
        response_length=max_new,
        stop_token="eos",
        temperature=1.0,
        kl_coef=0.05,
        kl_estimator="k1",
        learning_rate=1e-6,
        lr_scheduler_type="constant",
        num_sample_generations=0,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        bf16=False,  # compare fp32 with fp32
        dataloader_num_workers=0,
        seed=0,
        gradient_checkpointing=bool(checkpointing),
    )
    trainer = PPOTrainer(
        args=cfg,
        processing_class=tok,
        model=policy,
        ref_model=None,  # a frozen copy, as prefrl's
        reward_model=reward_model,
        value_model=value_model,
        train_dataset=ds,
        callbacks=[Timer()],
    )
    trainer.train()
    times = [b[0] - a[0] for a, b in zip(ends, ends[1:])]
    cpu = [b[1] - a[1] for a, b in zip(ends, ends[1:])]
    return {**summarise(times, tokens[: len(times)], warmup, cpu), "cpu_phases_s": median_phases(cpu_phases, warmup)}


# ---------------------------------------------------------------- driver


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--trl-python", default="/work/trl-ppo-venv/bin/python", help="a venv with TRL ≤ 1.12 (trl.experimental.ppo)"
    )
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=8, help="prompts = completions per step")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--ppo-epochs", default="1", help="comma-separated epoch counts; each runs on both sides")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks_lm.md"))
    ap.add_argument("--results-file", help="JSONL of finished runs: reused by a rerun with the same settings (resume)")
    ap.add_argument(
        "--trl-checkpointing",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time TRL with its default gradient_checkpointing=True (the like-for-like TRL run has it off)",
    )
    ap.add_argument(
        "--sides",
        help="run only these sides (comma-separated from prefrl, TRL, TRL-gc) into --results-file and write no "
        "table: e.g. the TRL runs first, prefrl's after a change",
    )
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.worker:
        kind, rest = a.worker[0], a.worker[1:]
        fn = worker_ppo if kind == "ppo" else worker_trl_ppo
        print(json.dumps(fn(rest[0], *map(int, rest[1:]))))
        return

    from prefrl.lm.models import resolve_model_path

    model = resolve_model_path(a.model)
    shared = [model, str(a.steps), str(a.batch_size), str(a.max_new_tokens), str(a.warmup)]
    results = []
    for e in (int(x) for x in a.ppo_epochs.split(",") if x):
        runs = [("prefrl", sys.executable, "ppo", []), ("TRL", a.trl_python, "trl_ppo", ["0"])]
        if a.trl_checkpointing:
            runs.append(("TRL-gc", a.trl_python, "trl_ppo", ["1"]))
        for side, python, kind, extra in runs:
            if a.sides and side not in a.sides.split(","):
                continue
            argv = ["--worker", kind, *shared, str(e), *extra]
            res = cached_run(a.results_file, " ".join([side, *argv]), lambda p=python, v=argv: run_worker(p, __file__, v))
            print(side, e, res, flush=True)
            results.append((side, e, res))
    if a.sides:
        return

    trl_version = subprocess.run(
        [a.trl_python, "-c", "import trl; print(trl.__version__)"], capture_output=True, text=True
    ).stdout.strip()
    lines = [
        "## PPO vs TRL's PPOTrainer",
        "",
        f"Produced by `benchmarks/lm_ppo_vs_trl.py` on {time.strftime('%Y-%m-%d')}: prefrl `LMPPOTrainer` against TRL "
        f"{trl_version}'s `trl.experimental.ppo.PPOTrainer` (the newest TRL on PyPI that still ships a PPO trainer "
        "with a critic: 1.13.0 removed it), in its own venv (`/work/trl-ppo-venv`: trl 1.12.0, transformers and "
        "torch as prefrl's). One thread per run, each run a fresh process, one at a time (rows of earlier invocations come from `--results-file`), all nice'd alike. Model "
        f"`{a.model}` (fp32) as policy, reference (a frozen copy), critic and reward-model backbones (fresh scalar "
        f"heads); {a.batch_size} prompts = completions per step, at most {a.max_new_tokens} new tokens, temperature "
        "1, k1 KL in the per-token reward with β = 0.05, lr 1e-6, GAE, whitened advantages, one minibatch of the "
        f"whole batch per epoch; {a.steps} steps of which the first {a.warmup} is warm-up (s / 1k tokens = Σ step "
        "time / Σ generated tokens over the measured steps).",
        "",
        "CPU s = the process's CPU time (one thread: what the wall clock reads on an idle core; on this shared "
        "machine the wall clock also counts the time other jobs held the core), with the range of the measured "
        "steps' own CPU s / 1k tokens in brackets. Ratio = TRL's s / 1k tokens over prefrl's (> 1: prefrl "
        "faster). TRL's PPOConfig defaults to `gradient_checkpointing=True` (activations recomputed in the "
        "backward pass: less memory, one more forward per update); prefrl does not checkpoint, so the "
        "like-for-like TRL run turns it off, and the rows marked *TRL default* keep it on. CPU s per step by phase "
        "(medians over the measured steps): sampling (prefrl's KV-cached sampler, TRL's `batch_generation`), "
        "scoring (the no-grad passes: reference log-probs and the critic's values; prefrl's one-epoch update reuses "
        "that critic pass's graph), reward (the reward model), update (the rest of the step: GAE, the policy's and "
        "critic's forward, backward and optimiser steps).",
        "",
        "| epochs | TRL run | prefrl CPU s / 1k tokens [steps] | TRL CPU s / 1k tokens [steps] | ratio by CPU time "
        "(target ≥ 1.3) | prefrl wall s / 1k | TRL wall s / 1k | ratio by wall clock | prefrl peak RSS (MB) | TRL "
        "peak RSS (MB) | prefrl CPU s per step: sampling / scoring / reward / update | TRL CPU s per step: sampling / "
        "scoring / reward / update |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    by_epochs: dict[int, dict] = {}
    for side, e, r in results:
        by_epochs.setdefault(e, {})[side] = r
    for e, pair in by_epochs.items():
        ours = pair["prefrl"]
        for side, label in (("TRL", "checkpointing off, as prefrl"), ("TRL-gc", "*TRL default* (checkpointing on)")):
            if side not in pair:
                continue
            theirs = pair[side]
            lines.append(
                f"| {e} | {label} | {ours['cpu_s_per_1k_tokens']:.1f} [{spread(ours)}] | "
                f"{theirs['cpu_s_per_1k_tokens']:.1f} [{spread(theirs)}] | "
                f"{theirs['cpu_s_per_1k_tokens'] / ours['cpu_s_per_1k_tokens']:.2f}x | {ours['s_per_1k_tokens']:.1f} | "
                f"{theirs['s_per_1k_tokens']:.1f} | {theirs['s_per_1k_tokens'] / ours['s_per_1k_tokens']:.2f}x | "
                f"{ours['peak_rss_mb']:.0f} | {theirs['peak_rss_mb']:.0f} | {phase_cell(ours)} | {phase_cell(theirs)} |"
            )
    lines.append("")
    block = "\n".join(lines)
    write_section(Path(a.out), BEGIN, END, block, heading="")
    print(block)


if __name__ == "__main__":
    main()
