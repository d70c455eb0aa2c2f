"""prefrl's LM PPO step vs TRL's GRPO and RLOO steps: seconds per 1,000 generated tokens, peak memory.

Same model (SmolLM2-135M, fp32), same prompts, same number of completions per step and
the same ``max_new_tokens``, one CPU thread, each run in a fresh subprocess (peak RSS is
that run's alone), the runs back to back in one invocation::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/lm_ppo_vs_trl.py --trl-python /work/trl-venv/bin/python

What one step includes (the algorithms differ, so the work differs; that is the point
of the comparison):

- prefrl PPO (``LMPPOTrainer.step``): sample B completions (the sampler records the
  policy's log-probs and entropy); score them with three more networks (reference
  log-probs, critic values, reward model); GAE; ``update_epochs`` passes of clipped policy + value updates (one minibatch
  of B each, so ``update_epochs`` gradient steps of policy and critic).
- TRL GRPO / RLOO (``trainer.train`` steps): sample B completions (B / G prompts × G
  generations); reward model; reference log-probs (β > 0); one gradient step of the
  policy (``num_iterations=1``, no critic).

The reward model is the same on both sides: SmolLM2's backbone with a fresh scalar head
(untrained, so scores are arbitrary; only the cost matters). PPO's critic starts from
the same backbone. Step time comes from the trainers' own clocks (prefrl's
``time/step_s``; a callback around TRL's ``training_step``); generated tokens per step
are the completions' lengths (up to and including EOS). Results go to
docs/benchmarks_lm.md (section "PPO vs GRPO / RLOO"), which this script rewrites between
its markers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _workers import peak_rss_mb, run_worker  # benchmarks/ is sys.path[0] when run as a script

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- lm_ppo_vs_trl:begin -->", "<!-- lm_ppo_vs_trl:end -->"


def make_prompts(n: int) -> list[str]:
    return [f"Write a short review of movie number {i}. Review:" for i in range(n)]


def summarise(step_s: list[float], tokens: list[float], warmup: int) -> dict:
    s, t = step_s[warmup:] or step_s, tokens[warmup:] or tokens
    return {
        "step_s": statistics.median(s),
        "tokens_per_step": statistics.mean(t),
        "s_per_1k_tokens": 1000.0 * sum(s) / max(sum(t), 1.0),
        "peak_rss_mb": peak_rss_mb(),
        "steps": len(step_s),
    }


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
    times, tokens, phases = [], [], []
    for k in range(steps):
        m = trainer.step(prompts[k * batch : (k + 1) * batch])
        times.append(m["time/step_s"])
        tokens.append(m["response/length"] * batch)
        phases.append([m["time/rollout_s"], m["time/score_s"], m["time/update_s"]])
    res = summarise(times, tokens, warmup)
    # where a step's time goes: sampling (with the policy's log-probs), scoring, updates
    measured = phases[warmup:] or phases
    res["phases_s"] = [statistics.median(col) for col in zip(*measured, strict=True)]
    return res


def worker_trl(
    algo: str, model: str, steps: int, batch: int, max_new: int, warmup: int, gens: int, lora_r: int = 0
) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback

    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(model)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    rm = AutoModelForSequenceClassification.from_pretrained(model, num_labels=1)
    rm.config.pad_token_id = tok.pad_token_id
    rm_tok = AutoTokenizer.from_pretrained(model)
    rm_tok.pad_token = tok.pad_token
    ds = Dataset.from_list([{"prompt": p} for p in make_prompts(batch * steps)])
    times: list[float] = []
    tokens: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):  # noqa: ANN001, ANN003, ANN201
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001, ANN003, ANN201
            times.append(time.perf_counter() - self.t)

        def on_log(self, args, state, control, logs=None, **kw):  # noqa: ANN001, ANN003, ANN201
            if logs and "completions/mean_length" in logs:
                tokens.append(float(logs["completions/mean_length"]) * batch)

    common = dict(
        output_dir=tempfile.mkdtemp(prefix=f"bench-trl-{algo}-"),
        max_steps=steps,
        per_device_train_batch_size=batch,
        num_generations=gens,
        max_completion_length=max_new,
        temperature=1.0,
        beta=0.05,
        num_iterations=1,
        learning_rate=1e-6,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        bf16=False,  # compare fp32 with fp32
        dataloader_num_workers=0,
        seed=0,
    )
    if algo == "grpo":
        from trl import GRPOConfig as Config
        from trl import GRPOTrainer as Trainer
    else:
        from trl import RLOOConfig as Config
        from trl import RLOOTrainer as Trainer
    peft_config = None
    if lora_r:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=lora_r,
            lora_alpha=2 * lora_r,
            lora_dropout=0.0,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
            task_type="CAUSAL_LM",
        )
    trainer = Trainer(
        model=model,
        peft_config=peft_config,
        reward_funcs=rm,
        args=Config(**common),
        train_dataset=ds,
        processing_class=tok,
        reward_processing_classes=rm_tok,
        callbacks=[Timer()],
    )
    trainer.train()
    return summarise(times, tokens, warmup)


# ---------------------------------------------------------------- driver


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trl-python", default="/work/trl-venv/bin/python")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=8, help="completions per step")
    ap.add_argument("--num-generations", type=int, default=4, help="GRPO/RLOO group size G")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--ppo-epochs", default="1,4", help="comma-separated PPO epoch counts to run")
    ap.add_argument(
        "--lora-r",
        type=int,
        default=16,
        help="also run PPO (1 epoch) and GRPO with LoRA of this rank on q/k/v/o (0: full fine-tuning only)",
    )
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks_lm.md"))
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.worker:
        kind, rest = a.worker[0], a.worker[1:]
        if kind == "ppo":
            res = worker_ppo(rest[0], *map(int, rest[1:]))
        else:
            res = worker_trl(kind, rest[0], *map(int, rest[1:]))
        print(json.dumps(res))
        return

    from prefrl.lm.models import resolve_model_path

    model = resolve_model_path(a.model)
    shared = [model, str(a.steps), str(a.batch_size), str(a.max_new_tokens), str(a.warmup)]
    epochs = [int(e) for e in a.ppo_epochs.split(",") if e]
    plan = [
        (
            f"prefrl PPO, {epochs[0]} epoch{'s' if epochs[0] > 1 else ''}",
            sys.executable,
            ["ppo", *shared, str(epochs[0])],
        )
    ]
    plan += [
        (f"TRL {algo.upper()}", a.trl_python, [algo, *shared, str(a.num_generations)])
        for algo in ("grpo", "rloo")
    ]
    plan += [(f"prefrl PPO, {e} epochs", sys.executable, ["ppo", *shared, str(e)]) for e in epochs[1:]]
    if a.lora_r:
        r = str(a.lora_r)
        plan += [
            (f"prefrl PPO, 1 epoch, LoRA r={r}", sys.executable, ["ppo", *shared, "1", r]),
            (f"TRL GRPO, LoRA r={r}", a.trl_python, ["grpo", *shared, str(a.num_generations), r]),
        ]
    results = []
    for name, python, argv in plan:
        res = run_worker(python, __file__, ["--worker", *argv])
        print(name, res, flush=True)
        results.append((name, res))

    trl_version = subprocess.run(
        [a.trl_python, "-c", "import trl; print(trl.__version__)"], capture_output=True, text=True
    ).stdout.strip()
    lines = [
        BEGIN,
        "## PPO vs GRPO / RLOO",
        "",
        f"Produced by `benchmarks/lm_ppo_vs_trl.py` on {time.strftime('%Y-%m-%d')}, same machine and conditions as "
        f"above, TRL {trl_version}. Model `{a.model}` (fp32) as policy, reference and reward-model backbone; "
        f"{a.batch_size} completions per step (prefrl: {a.batch_size} prompts × 1; TRL: "
        f"{a.batch_size // a.num_generations} prompts × G = {a.num_generations}), at most {a.max_new_tokens} new "
        f"tokens, temperature 1, KL coefficient β = 0.05, lr 1e-6, {a.steps} steps of which the first "
        f"{a.warmup} is warm-up (median step time; s / 1k tokens = Σ step time / Σ generated tokens "
        "over the measured steps).",
        "",
        "- prefrl PPO step: generation (which records the policy's log-probs and entropy) + scoring with 3 networks "
        "(reference, critic, reward model) + GAE + `ppo_epochs` × (policy and critic update on the whole batch).",
        "- TRL GRPO / RLOO step: generation + reward model + reference log-probs + one policy update "
        "(`num_iterations=1`, no critic).",
        f"- LoRA rows: rank {a.lora_r}, α = {2 * a.lora_r}, on q/k/v/o projections; the reference is the policy "
        "with its adapter disabled on both sides; prefrl's critic is LoRA on its own backbone too.",
        "",
        "| run | s / step | generated tokens / step | s / 1k generated tokens | peak RSS (MB) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, r in results:
        lines.append(
            f"| {name} | {r['step_s']:.1f} | {r['tokens_per_step']:.0f} | {r['s_per_1k_tokens']:.1f} | "
            f"{r['peak_rss_mb']:.0f} |"
        )
    lines += ["", "Where a prefrl PPO step's time goes (median seconds per phase):", ""]
    lines += ["| run | sampling (+ policy log-probs) | scoring (reference, critic, RM) + GAE | updates |"]
    lines += ["| --- | ---: | ---: | ---: |"]
    for name, r in results:
        if "phases_s" in r:
            lines.append(f"| {name} | " + " | ".join(f"{x:.1f}" for x in r["phases_s"]) + " |")
    lines += ["", END]
    block = "\n".join(lines)
    out = Path(a.out)
    text = out.read_text() if out.exists() else ""
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    out.write_text(text)
    print(block)


if __name__ == "__main__":
    main()
