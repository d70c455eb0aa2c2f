"""prefrl vs TRL on the same model, data and batch: RM and DPO speed, peak memory, DPO loss.

TRL lives in its own virtual environment so that prefrl's does not depend on it::

    python3 -m venv /work/trl-venv
    /work/trl-venv/bin/pip install -c constraints.txt -e . trl
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/lm_vs_trl.py --trl-python /work/trl-venv/bin/python

Every measurement runs in a fresh subprocess (so peak RSS is that run's alone), on one
CPU thread; the two systems alternate stage by stage and repeat by repeat, so a change in
machine load hits both. Steps/s is 1 / median step time over the measured steps of all
repeats (after ``--warmup`` steps of each run). Step times come from each trainer's own
clock around the optimisation steps; neither includes model loading or checkpoint
writing (TRL runs with ``save_strategy="no"``; prefrl writes its final checkpoint after
the timed steps, which does not raise its peak RSS: see docs/benchmarks_lm.md). Peak
memory is the run's peak RSS, model loading included.

The DPO loss check uses two tiny random Llamas (policy seed 0, reference seed 1, so the
loss is not the trivial log 2) and the byte-level tiny tokenizer, for which TRL's joint
prompt+response tokenisation and ours agree token for token; both sides run in fp32
(TRL's configs default to bf16 autocast). Results go to docs/benchmarks_lm.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _workers import peak_rss_mb, run_worker  # benchmarks/ is sys.path[0] when run as a script

ROOT = Path(__file__).resolve().parents[1]

GOOD = [
    "a wonderful, moving film",
    "great acting and a lovely score",
    "I loved every minute of it",
    "a joyful delight",
]
BAD = [
    "a dull, tedious mess",
    "terrible pacing and wooden acting",
    "I hated every minute of it",
    "a boring failure",
]


def make_rows(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        g, b = GOOD[i % len(GOOD)], BAD[(i * 3) % len(BAD)]
        prompt = f"Write a short review of movie number {i}. Review:"
        rows.append(
            {
                "prompt": prompt,
                "chosen": f" {g}, truly {i % 7 + 1} stars.",
                "rejected": f" {b}, {i % 3} stars.",
            }
        )
    return rows


def measured(step_times: list[float], warmup: int) -> list[float]:
    return step_times[warmup:] or step_times


# ---------------------------------------------------------------- workers (run in a subprocess)


def worker_prefrl(
    stage: str, model: str, data: str, steps: int, batch: int, max_length: int, warmup: int
) -> dict:
    import torch

    torch.set_num_threads(1)
    out = tempfile.mkdtemp(prefix=f"bench-prefrl-{stage}-")
    t0 = time.perf_counter()
    common = dict(
        model=model,
        data=data,
        output_dir=out,
        max_steps=steps,
        batch_size=batch,
        max_length=max_length,
        learning_rate=1e-6,
        log_every=1,
    )
    if stage == "rm":
        from prefrl.lm.reward_model_config import RMConfig
        from prefrl.lm.reward_model_trainer import train_reward_model

        res = train_reward_model(RMConfig(normalize=False, **common))
        losses = [h["loss/bt"] for h in res["history"]]
    else:
        from prefrl.lm.dpo import train_dpo
        from prefrl.lm.dpo_config import DPOConfig

        res = train_dpo(DPOConfig(beta=0.1, **common))
        losses = [h["loss/dpo"] for h in res["history"]]
    step_times = [1.0 / h["charts/sps"] for h in res["history"]]
    return {
        "step_times": measured(step_times, warmup),
        "peak_rss_mb": peak_rss_mb(),
        "wall_s": time.perf_counter() - t0,
        "first_loss": losses[0],
        "last_loss": losses[-1],
    }


def worker_trl(
    stage: str, model: str, data: str, steps: int, batch: int, max_length: int, warmup: int
) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback

    torch.set_num_threads(1)
    rows = [json.loads(line) for line in Path(data).read_text().splitlines()]
    ds = Dataset.from_list(rows)
    tok = AutoTokenizer.from_pretrained(model)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    out = tempfile.mkdtemp(prefix=f"bench-trl-{stage}-")
    times: list[float] = []
    losses: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):  # noqa: ANN001, ANN003, ANN201
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001, ANN003, ANN201
            times.append(time.perf_counter() - self.t)

        def on_log(self, args, state, control, logs=None, **kw):  # noqa: ANN001, ANN003, ANN201
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    common = dict(
        output_dir=out,
        max_steps=steps,
        per_device_train_batch_size=batch,
        max_length=max_length,
        learning_rate=1e-6,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        dataloader_num_workers=0,
        lr_scheduler_type="linear",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        bf16=False,  # TRL defaults to bf16 autocast; compare fp32 with fp32
    )
    t0 = time.perf_counter()
    if stage == "rm":
        from trl import RewardConfig, RewardTrainer

        trainer = RewardTrainer(
            model=model,
            args=RewardConfig(**common),
            train_dataset=ds,
            processing_class=tok,
            callbacks=[Timer()],
        )
    else:
        from trl import DPOConfig, DPOTrainer

        trainer = DPOTrainer(
            model=model,
            args=DPOConfig(beta=0.1, precompute_ref_log_probs=True, **common),
            train_dataset=ds,
            processing_class=tok,
            callbacks=[Timer()],
        )
    trainer.train()
    return {
        "step_times": measured(times, warmup),
        "peak_rss_mb": peak_rss_mb(),
        "wall_s": time.perf_counter() - t0,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
    }


def worker_trl_dpo_loss(policy: str, ref: str, data: str, batch_file: str) -> dict:
    """TRL's DPO loss on one batch of all rows, its per-sequence log-probs, and the batch itself (saved)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    torch.set_num_threads(1)
    rows = [json.loads(line) for line in Path(data).read_text().splitlines()]
    tok = AutoTokenizer.from_pretrained(policy)
    args = DPOConfig(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=len(rows),
        max_length=512,
        beta=0.1,
        report_to=[],
        use_cpu=True,
        bf16=False,  # TRL defaults to bf16 autocast (accelerate wraps the reference's forward in it)
        precompute_ref_log_probs=False,
    )
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(policy),
        ref_model=AutoModelForCausalLM.from_pretrained(ref),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
    )
    # all rows in file order (the train dataloader would shuffle them), [chosen; rejected]
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    torch.save(dict(batch), batch_file)
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    n = batch["input_ids"].shape[1] - 1
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
        logps = {}
        for name, m in (("policy", trainer.model), ("ref", trainer.ref_model)):
            out = m(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                labels=labels,
                fused_lm_head=True,
                use_cache=False,
            )
            logps[name] = out.log_probs[:, -n:].sum(1).tolist()
    return {"loss": float(loss), "policy_logps": logps["policy"], "ref_logps": logps["ref"]}


def prefrl_dpo_check(policy: str, ref: str, data: str, batch_file: str, trl: dict) -> dict:
    """Our log-probs and loss on the same pairs: from TRL's collated batch, and from the text the way
    ``train_dpo`` computes them (packed pairs); plus our loss on TRL's own log-probs."""
    import torch

    from prefrl.lm.data import PreferenceExample
    from prefrl.lm.dpo import pair_logprobs
    from prefrl.lm.logprobs import completion_logprobs
    from prefrl.lm.models import load_causal_lm
    from prefrl.losses import dpo_loss

    b = torch.load(batch_file)
    rows = [PreferenceExample(**json.loads(line)) for line in Path(data).read_text().splitlines()]
    on_batch, on_text = {}, {}
    for name, path in (("policy", policy), ("ref", ref)):
        model, tok = load_causal_lm(path)
        model.eval()
        with torch.no_grad():
            on_batch[name] = completion_logprobs(
                model, b["input_ids"], b["attention_mask"], b["completion_mask"]
            )
            on_text[name] = pair_logprobs(model, tok, rows, 512, "cpu")

    def loss(pol: torch.Tensor, rf: torch.Tensor) -> float:
        pc, pr = pol.chunk(2)
        rc, rr = rf.chunk(2)
        return float(dpo_loss(pc, pr, rc, rr, beta=0.1).mean())

    t_pol, t_ref = torch.tensor(trl["policy_logps"]), torch.tensor(trl["ref_logps"])
    return {
        "loss_ours": loss(on_text["policy"], on_text["ref"]),
        "loss_ours_on_trl_batch": loss(on_batch["policy"], on_batch["ref"]),
        "loss_ours_on_trl_logps": loss(t_pol, t_ref),
        "policy_logp_maxdiff": float((on_text["policy"] - t_pol).abs().max()),
        "ref_logp_maxdiff": float((on_text["ref"] - t_ref).abs().max()),
        "batch_vs_text_maxdiff": float(
            max((on_batch[k] - on_text[k]).abs().max() for k in ("policy", "ref"))
        ),
    }


# ---------------------------------------------------------------- driver


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trl-python", default="/work/trl-venv/bin/python")
    ap.add_argument("--model", default="smollm2", help="model for the speed runs ('smollm2' or a directory)")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2, help="runs per system and stage, alternating order")
    ap.add_argument("--skip-speed", action="store_true", help="only the DPO loss check")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks_lm.md"))
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.worker:
        kind = a.worker[0]
        if kind == "prefrl":
            res = worker_prefrl(*a.worker[1:4], *map(int, a.worker[4:]))
        elif kind == "trl":
            res = worker_trl(*a.worker[1:4], *map(int, a.worker[4:]))
        else:
            res = worker_trl_dpo_loss(*a.worker[1:5])
        print(json.dumps(res))
        return

    from prefrl.lm.models import resolve_model_path, tiny_causal_lm

    work = Path(tempfile.mkdtemp(prefix="lm-vs-trl-"))
    data = work / "prefs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in make_rows(a.rows)))
    model = resolve_model_path(a.model)

    # 1. DPO loss on identical inputs
    dirs = []
    for seed in (0, 1):
        m, t = tiny_causal_lm(seed=seed)
        d = work / f"tiny{seed}"
        m.save_pretrained(d)
        t.save_pretrained(d)
        dirs.append(str(d))
    small = work / "small.jsonl"
    small.write_text("".join(json.dumps(r) + "\n" for r in make_rows(8)))
    batch_file = str(work / "trl_batch.pt")
    trl_res = run_worker(a.trl_python, __file__, ["--worker", "trl_dpo_loss", dirs[0], dirs[1], str(small), batch_file])
    check = prefrl_dpo_check(dirs[0], dirs[1], str(small), batch_file, trl_res)
    theirs = trl_res["loss"]
    print("dpo loss check", check, theirs, flush=True)

    # 2. speed and memory: stage by stage, the two systems alternating (and swapping order each repeat)
    times: dict[tuple[str, str], list[float]] = {}
    peaks: dict[tuple[str, str], list[float]] = {}
    pythons = {"prefrl": sys.executable, "trl": a.trl_python}
    for stage in () if a.skip_speed else ("rm", "dpo"):
        for rep in range(a.repeats):
            for impl in ("prefrl", "trl") if rep % 2 == 0 else ("trl", "prefrl"):
                argv = ["--worker", impl, stage, model, str(data)]
                argv += [str(a.steps), str(a.batch_size), str(a.max_length), str(a.warmup)]
                res = run_worker(pythons[impl], __file__, argv)
                times.setdefault((impl, stage), []).extend(res["step_times"])
                peaks.setdefault((impl, stage), []).append(res["peak_rss_mb"])
                print(impl, stage, rep, res, flush=True)

    trl_version = subprocess.run(
        [a.trl_python, "-c", "import trl; print(trl.__version__)"], capture_output=True, text=True
    ).stdout.strip()
    lines = [
        "# prefrl vs TRL: reward model, DPO, PPO vs GRPO/RLOO",
        "",
        f"Produced by `benchmarks/lm_vs_trl.py` on {time.strftime('%Y-%m-%d')}: {platform.processor() or platform.machine()}, "
        f"CPU only, one thread per run (the machine has {os.cpu_count()} cores shared with other work, so absolute "
        "timings are noisy; the two systems ran alternately in the same invocation, so compare the columns). "
        f"TRL {trl_version}, torch {torch_version()}.",
        "",
        f"Model `{a.model}` (fp32), {a.rows} synthetic preference pairs (prompt ≈ 15 tokens, responses ≈ 10), "
        f"batch {a.batch_size} pairs, max length {a.max_length}, AdamW lr 1e-6, {a.repeats} runs × {a.steps} steps "
        f"per system and stage, the first {a.warmup} steps of each run being warm-up. Steps/s = 1 / median measured "
        "step time. Peak memory = the run's peak RSS (model loading included; the larger of the runs). TRL's DPO "
        "uses `precompute_ref_log_probs=True`, as prefrl always does; both run fp32 (`bf16=False` for TRL).",
        "",
        "| stage | prefrl steps/s | TRL steps/s | speed-up (target ≥ 1.3) | prefrl peak RSS (MB) | TRL peak RSS (MB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for stage in () if a.skip_speed else ("rm", "dpo"):
        sp = {impl: 1.0 / statistics.median(times[(impl, stage)]) for impl in ("prefrl", "trl")}
        pk = {impl: max(peaks[(impl, stage)]) for impl in ("prefrl", "trl")}
        lines.append(
            f"| {stage.upper()} | {sp['prefrl']:.3f} | {sp['trl']:.3f} | {sp['prefrl'] / sp['trl']:.2f}x | "
            f"{pk['prefrl']:.0f} | {pk['trl']:.0f} |"
        )
    d_ours = abs(check["loss_ours"] - theirs)
    lines += [
        "",
        "## DPO loss on identical inputs",
        "",
        "Two tiny random Llamas (policy seed 0, reference seed 1), 8 pairs in one batch, β = 0.1, sigmoid loss,",
        "fp32 on both sides:",
        "",
        f"- TRL `DPOTrainer.compute_loss` (its collated batch, its fused LM head): {theirs:.8f}",
        f"- prefrl end to end, as `train_dpo` computes it (text → packed pairs → log-probs → `dpo_loss`): "
        f"{check['loss_ours']:.8f} (|Δ| = {d_ours:.1e}, {'within' if d_ours <= 1e-5 else 'OUTSIDE'} 1e-5)",
        f"- prefrl on TRL's collated batch (`completion_logprobs` + `dpo_loss`): {check['loss_ours_on_trl_batch']:.8f} "
        f"(|Δ| = {abs(check['loss_ours_on_trl_batch'] - theirs):.1e})",
        f"- prefrl `dpo_loss` on TRL's own per-sequence log-probs: {check['loss_ours_on_trl_logps']:.8f} "
        f"(|Δ| = {abs(check['loss_ours_on_trl_logps'] - theirs):.1e})",
        f"- max |Δ log π| per sequence vs TRL, policy: {check['policy_logp_maxdiff']:.1e}; reference: "
        f"{check['ref_logp_maxdiff']:.1e}; packed vs unpacked (ours): {check['batch_vs_text_maxdiff']:.1e}",
        "",
        "An earlier version of this check left TRL's config at its bf16 default: accelerate then wraps the reference",
        "model's forward in bf16 autocast, which put its log-probabilities 1e-2 off and the loss 1e-4 off. In fp32",
        "TRL's fused, tiled LM head and our plain one agree to float rounding.",
        "",
        "Note: TRL ≥ 1.0 normalises the IPO loss by completion length; prefrl's `ipo` follows the paper (summed",
        "log-probabilities), so the two IPO losses differ by design.",
        "",
    ]
    out = Path(a.out)
    old = out.read_text() if out.exists() else ""
    keep = ""  # the PPO section written by lm_ppo_vs_trl.py survives a re-run of this script
    if "<!-- lm_ppo_vs_trl:begin -->" in old and "<!-- lm_ppo_vs_trl:end -->" in old:
        i, j = old.index("<!-- lm_ppo_vs_trl:begin -->"), old.index("<!-- lm_ppo_vs_trl:end -->")
        keep = old[i : j + len("<!-- lm_ppo_vs_trl:end -->")] + "\n"
    notes = ""  # hand-written notes after the generated part
    if "<!-- notes -->" in old:
        notes = old[old.index("<!-- notes -->") :]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + ("\n" + keep if keep else "") + ("\n" + notes if notes else ""))
    print("\n".join(lines))


def torch_version() -> str:
    import torch

    return torch.__version__


if __name__ == "__main__":
    main()
