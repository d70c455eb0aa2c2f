"""Positive reviews: RLHF end to end on CPU with SmolLM2-135M-Instruct and a gold sentiment reward.

Pipeline (each stage caches its output under --out, so a rerun resumes where it stopped):

1. pairs  — 2k samples per training prompt from SmolLM2, queried as k pairs; the gold
            reward (VADER compound sentiment, standing in for people) is hidden behind a
            stochastic B-Pref teacher that answers σ(β·Δgold) — noisy preference labels, as
            from people — and says "can't tell" on near-ties (those pairs are dropped);
2. rm     — a Bradley-Terry reward model on those pairs (``prefrl.lm.reward_model_trainer``);
3. ppo    — PPO with four roles (``prefrl.lm.ppo``): policy, frozen reference, critic
            initialised from the RM, frozen RM as reward; gold logged on every rollout;
4. dpo    — DPO on the same pairs (``prefrl.lm.dpo``), run in a second process alongside 2–3;
5. eval   — held-out prompts: mean gold sentiment and sequence KL(π‖π_ref) of the reference,
            PPO, DPO and best-of-n (n = 1…8, ranked by the RM; KL = log n − (n−1)/n);
6. report — frontier plot (gold vs KL; the DPO paper's Fig. 2 at our scale), training
            curves, samples before/after: ``report.html`` + PNGs + ``summary.json``.

    python examples/positive_reviews/run.py            # full budget (~1 h on 2 free cores)
    python examples/positive_reviews/run.py --quick    # smoke test (minutes)
    python examples/positive_reviews/run.py --model tiny --quick   # pipeline check, seconds
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


@dataclass
class Budget:
    n_train: int  # prompts for preference pairs and PPO
    n_eval: int  # held-out prompts
    pairs_per_prompt: int  # teacher queries per training prompt, each on two fresh samples
    teacher_equal: float  # the teacher says "can't tell" when the gold scores differ by less (dropped)
    eval_samples: int  # samples per held-out prompt and policy
    max_new_tokens: int
    rm_epochs: float
    rm_lr: float
    rm_top_layers: int  # train only the RM's top layers (0 = all)
    ppo_steps: int
    ppo_batch: int
    ppo_minibatch: int
    ppo_epochs: int
    ppo_lr: float
    ppo_top_layers: int
    dpo_epochs: float
    dpo_lr: float
    dpo_label_smoothing: float  # cDPO: the labels come from a noisy teacher
    bon_max_n: int
    ppo_kl_stop: float  # stop PPO early once its training-rollout KL (mean of the last 3 steps) reaches this


FULL = Budget(
    n_train=252,
    n_eval=48,
    pairs_per_prompt=6,
    teacher_equal=0.05,
    eval_samples=2,
    max_new_tokens=20,
    rm_epochs=1.0,  # one pass, as InstructGPT: reward models over-fit on a second
    rm_lr=5e-5,
    rm_top_layers=12,
    ppo_steps=40,
    ppo_batch=16,
    ppo_minibatch=4,
    ppo_epochs=2,
    ppo_lr=1e-4,
    ppo_top_layers=6,
    dpo_epochs=0.67,
    dpo_lr=5e-5,
    dpo_label_smoothing=0.0,
    bon_max_n=4,
    ppo_kl_stop=8.0,  # the final policy's held-out KL came out 0.95-1.4x this in our runs
)
QUICK = Budget(
    n_train=16,
    n_eval=8,
    pairs_per_prompt=1,
    teacher_equal=0.0,  # a smoke test (and the tiny model's text has no sentiment): coin-flip ties
    eval_samples=1,
    max_new_tokens=12,
    rm_epochs=0.25,
    rm_lr=3e-5,
    rm_top_layers=2,
    ppo_steps=2,
    ppo_batch=8,
    ppo_minibatch=4,
    ppo_epochs=1,
    ppo_lr=2e-5,
    ppo_top_layers=2,
    dpo_epochs=0.25,
    dpo_lr=1e-5,
    dpo_label_smoothing=0.0,
    bon_max_n=4,
    ppo_kl_stop=8.0,
)

TEACHER_BETA = 5.0  # σ(5·Δ): a compound-score gap of 0.5 is answered "right" 92 % of the time
KL_COEF = 0.05
TEMPERATURE = 1.0  # sample from π itself, so KL(π‖π_ref) is the models' KL, not a tempered one


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def load_prompt_texts() -> list[str]:
    return [json.loads(line)["prompt"] for line in (HERE / "prompts.jsonl").read_text().splitlines() if line]


# ------------------------------------------------------------------------------ 1. pairs


def make_pairs(model_name: str, prompts: list[str], b: Budget, out: Path, seed: int) -> Path:
    from prefrl.lm.models import load_causal_lm
    from prefrl.lm.reward_functions import VaderScorer
    from prefrl.lm.rollout import sample_responses
    from prefrl.teachers.synthetic import make_teacher

    path = out / "pairs.jsonl"
    if path.exists():
        return path
    policy, tok = load_causal_lm(model_name, padding_side="left")
    g = torch.Generator().manual_seed(seed)
    k = 2 * b.pairs_per_prompt  # samples per prompt; pairs (0, 1), (2, 3), … are queried
    flat = [p for p in prompts for _ in range(k)]
    responses: list[str] = []
    for i in range(0, len(flat), 16):
        batch = sample_responses(
            policy,
            tok,
            flat[i : i + 16],
            max_new_tokens=b.max_new_tokens,
            temperature=TEMPERATURE,
            generator=g,
        )
        responses += batch.responses
    gold = VaderScorer().score_texts(responses).reshape(-1, 2)  # (queries, 2)
    teacher = make_teacher(
        "stochastic", np.random.default_rng(seed), beta=TEACHER_BETA, equal_threshold=b.teacher_equal
    )
    mus = teacher.answer_returns(gold[:, 0], gold[:, 1])
    rows, agree, equal = [], [], 0
    for q, mu in enumerate(mus):
        if mu is None or mu == 0.5:
            equal += 1
            continue  # "can't tell": a tie carries no ranking for the prompt/chosen/rejected format
        c, r = (0, 1) if mu == 1.0 else (1, 0)
        prompt = prompts[q // b.pairs_per_prompt]
        rows.append({"prompt": prompt, "chosen": responses[2 * q + c], "rejected": responses[2 * q + r]})
        if gold[q, c] != gold[q, r]:
            agree.append(gold[q, c] > gold[q, r])
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))
    tmp.replace(path)
    stats = {
        "queries": len(mus),
        "equal": equal,
        "pairs": len(rows),
        "teacher_agreement_with_gold": float(np.mean(agree)) if agree else float("nan"),
        "gold_mean": float(gold.mean()),
    }
    (out / "pairs_stats.json").write_text(json.dumps(stats, indent=2))
    log(f"pairs: {stats}")
    return path


# ------------------------------------------------------------------------------ 2. reward model


def train_rm(model_name: str, pairs: Path, b: Budget, out: Path, seed: int) -> Path:
    from prefrl.lm.reward_model_config import RMConfig
    from prefrl.lm.reward_model_trainer import train_reward_model

    rm_dir = out / "rm"
    if (rm_dir / "reward_model.json").exists():
        return rm_dir
    cfg = RMConfig(
        model=model_name,
        data=str(pairs),
        output_dir=str(rm_dir),
        seed=seed,
        learning_rate=b.rm_lr,
        batch_size=8,
        epochs=b.rm_epochs,
        max_length=128,
        norm_samples=128,
        train_top_layers=b.rm_top_layers,
    )
    result = train_reward_model(cfg)
    final = result["history"][-1] if result.get("history") else {}
    log(f"rm: {json.dumps({k: round(v, 4) for k, v in final.items() if isinstance(v, float)})}")
    return rm_dir


# ------------------------------------------------------------------------------ 3. PPO


def train_ppo(model_name: str, rm_dir: Path, prompts: list[str], b: Budget, out: Path, seed: int) -> Path:
    from prefrl.lm.models import load_causal_lm
    from prefrl.lm.ppo import LMPPOConfig, LMPPOTrainer, freeze_all_but_top_layers
    from prefrl.lm.reward_functions import RewardModelScorer, VaderScorer
    from prefrl.lm.reward_model import RewardModel

    ppo_dir = out / "ppo"
    if (ppo_dir / "done").exists():
        return ppo_dir
    policy, tok = load_causal_lm(model_name, padding_side="left")
    ref, _ = load_causal_lm(model_name)
    critic = RewardModel.from_pretrained(rm_dir)
    rm = RewardModel.from_pretrained(rm_dir, trainable=False)
    freeze_all_but_top_layers(policy, b.ppo_top_layers)
    freeze_all_but_top_layers(critic, b.ppo_top_layers)
    reward = RewardModelScorer(rm, RewardModel.load_tokenizer(rm_dir), max_length=128)
    cfg = LMPPOConfig(
        batch_size=b.ppo_batch,
        minibatch_size=b.ppo_minibatch,
        update_epochs=b.ppo_epochs,
        max_new_tokens=b.max_new_tokens,
        temperature=TEMPERATURE,
        learning_rate=b.ppo_lr,
        critic_learning_rate=b.ppo_lr,
        kl_coef=KL_COEF,
        kl_estimator="k1",
        vf_coef=0.1,
        seed=seed,
    )
    trainer = LMPPOTrainer(policy, ref, critic, reward, tok, cfg, gold_fn=VaderScorer())
    if (ppo_dir / "trainer_state.pt").exists():
        trainer.load_checkpoint(ppo_dir)
        log(f"ppo: resumed at step {trainer.global_step}")

    metrics_path = ppo_dir / "metrics.jsonl"
    recent_kl = (
        [json.loads(line)["objective/kl"] for line in metrics_path.read_text().splitlines() if line][-2:]
        if metrics_path.exists()
        else []
    )

    def record(m: dict) -> None:
        m["gold/scores"] = m["objective/gold"]
        log(
            f"ppo step {int(m['step'])}: rm {m['objective/scores']:+.3f} gold {m['gold/scores']:+.3f} "
            f"kl {m['objective/kl']:.2f} len {m['response/length']:.1f} {m['time/step_s']:.0f}s"
        )
        recent_kl.append(m["objective/kl"])

    def kl_budget_reached(m: dict) -> bool:
        return len(recent_kl) >= 3 and float(np.mean(recent_kl[-3:])) >= b.ppo_kl_stop

    trainer.train(
        prompts,
        b.ppo_steps,
        log_path=metrics_path,
        checkpoint_dir=ppo_dir,
        save_every=4,
        callback=record,
        stop=kl_budget_reached,
    )
    if trainer.global_step < b.ppo_steps:
        log(f"ppo: stopped at step {trainer.global_step}: training KL reached {b.ppo_kl_stop} nats")
    (ppo_dir / "done").write_text("")
    return ppo_dir


# ------------------------------------------------------------------------------ 4. DPO (second process)


def start_dpo(model_name: str, pairs: Path, b: Budget, out: Path, seed: int) -> subprocess.Popen | None:
    dpo_dir = out / "dpo"
    if (dpo_dir / "config.json").exists() and (out / "dpo.done").exists():
        return None
    args = [
        sys.executable,
        "-c",
        "from prefrl.cli import main; main()",
        "lm",
        "dpo",
        "--model",
        model_name,
        "--data",
        str(pairs),
    ]
    args += [
        "--output-dir",
        str(dpo_dir),
        "--beta",
        "0.1",
        "--learning-rate",
        str(b.dpo_lr),
        "--batch-size",
        "8",
    ]
    args += ["--epochs", str(b.dpo_epochs), "--max-length", "128", "--seed", str(seed)]
    args += ["--label-smoothing", str(b.dpo_label_smoothing), "--overwrite"]  # a rerun restarts an unfinished DPO
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log("dpo: started in a second process (log: dpo.log)")
    return subprocess.Popen(args, stdout=open(out / "dpo.log", "w"), stderr=subprocess.STDOUT, env=env)


# ------------------------------------------------------------------------------ 5. evaluation


@torch.no_grad()
def sequence_kl(policy, ref, batch) -> torch.Tensor:  # noqa: ANN001
    """(B,) Σ_t KL(π(·|x, y<t) ‖ π_ref(·|x, y<t)) over the sampled response's valid tokens.

    The exact per-step KL summed along the sample: an unbiased, low-variance estimate of the
    sequence KL(π‖π_ref) (it is the k1 estimate with the per-step expectation taken exactly).
    """
    from prefrl.lm.encoding import position_ids_from_mask

    ids, mask, p = batch.input_ids, batch.attention_mask, batch.n_query
    r = ids.shape[1] - p
    kwargs = dict(
        attention_mask=mask, position_ids=position_ids_from_mask(mask), logits_to_keep=r + 1, use_cache=False
    )
    lp = torch.log_softmax(policy(input_ids=ids, **kwargs).logits[:, :-1].float() / TEMPERATURE, -1)
    lq = torch.log_softmax(ref(input_ids=ids, **kwargs).logits[:, :-1].float() / TEMPERATURE, -1)
    kl_t = (lp.exp() * (lp - lq)).sum(-1)  # (B, R)
    return (kl_t * batch.response_mask).sum(1)


def _prompt_se(values: list[float], per_prompt: int) -> float:
    """Standard error of the mean over prompts (samples of one prompt are averaged first)."""
    per = np.asarray(values).reshape(-1, per_prompt).mean(1)
    return float(per.std() / np.sqrt(len(per)))


def evaluate_policy(policy, ref, tok, prompts: list[str], b: Budget, seed: int) -> dict:  # noqa: ANN001
    from prefrl.lm.reward_functions import VaderScorer
    from prefrl.lm.rollout import sample_responses

    g = torch.Generator().manual_seed(seed)
    vader = VaderScorer()
    responses, gold, kl = [], [], []
    flat = [p for p in prompts for _ in range(b.eval_samples)]
    for i in range(0, len(flat), 16):
        batch = sample_responses(
            policy,
            tok,
            flat[i : i + 16],
            max_new_tokens=b.max_new_tokens,
            temperature=TEMPERATURE,
            generator=g,
        )
        responses += batch.responses
        gold += vader(batch).tolist()
        kl += sequence_kl(policy, ref, batch).tolist()
    return {
        "gold": float(np.mean(gold)),
        "gold_se": _prompt_se(gold, b.eval_samples),
        "kl": float(np.mean(kl)),
        "kl_se": _prompt_se(kl, b.eval_samples),
        "n": len(gold),
        "responses": responses[:: b.eval_samples],  # the first sample of each prompt
    }


def best_of_n_curve(ref, tok, rm_dir: Path, prompts: list[str], b: Budget, seed: int) -> list[dict]:  # noqa: ANN001
    from prefrl.lm.best_of_n import best_of_n_kl
    from prefrl.lm.reward_functions import RewardModelScorer, VaderScorer
    from prefrl.lm.reward_model import RewardModel
    from prefrl.lm.rollout import sample_responses

    rm = RewardModel.from_pretrained(rm_dir, trainable=False)
    scorer = RewardModelScorer(rm, RewardModel.load_tokenizer(rm_dir), max_length=128)
    vader = VaderScorer()
    g = torch.Generator().manual_seed(seed)
    n = b.bon_max_n
    flat = [p for p in prompts for _ in range(n)]
    rm_scores, gold = [], []
    for i in range(0, len(flat), 16):
        batch = sample_responses(
            ref, tok, flat[i : i + 16], max_new_tokens=b.max_new_tokens, temperature=TEMPERATURE, generator=g
        )
        rm_scores += scorer(batch).tolist()
        gold += vader(batch).tolist()
    rm_arr, gold_arr = np.array(rm_scores).reshape(-1, n), np.array(gold).reshape(-1, n)
    curve: list[dict] = []
    # How well the RM ranks held-out samples by gold: pairwise accuracy over same-prompt pairs
    # whose gold scores differ (0.5 = chance), recorded on the n = 1 point.
    i, j = np.triu_indices(n, 1)
    d_gold, d_rm = gold_arr[:, i] - gold_arr[:, j], rm_arr[:, i] - rm_arr[:, j]
    informative = d_gold != 0
    rm_acc = float(((d_gold > 0) == (d_rm > 0))[informative].mean()) if informative.any() else float("nan")
    k = 1
    while k <= n:  # best of the first k samples of each prompt
        best = rm_arr[:, :k].argmax(1)
        picked = gold_arr[np.arange(len(prompts)), best]
        curve.append(
            {
                "n": k,
                "gold": float(picked.mean()),
                "gold_se": float(picked.std() / np.sqrt(len(picked))),
                "kl": best_of_n_kl(k),
            }
        )
        k *= 2
    curve[0]["rm_gold_pairwise_acc"] = rm_acc
    curve[0]["rm_gold_pairs"] = int(informative.sum())
    return curve


# ------------------------------------------------------------------------------ 6. report


def plot(summary: dict, ppo_log: list[dict], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.6, 4.4))
    bon = summary["best_of_n"]
    ax.plot(
        [c["kl"] for c in bon],
        [c["gold"] for c in bon],
        "o-",
        color="tab:green",
        label="best-of-n (RM-ranked)",
    )
    for c in bon:
        ax.annotate(
            f"n={c['n']}", (c["kl"], c["gold"]), textcoords="offset points", xytext=(4, -10), fontsize=7
        )
    if ppo_log:
        kl = np.array([m["objective/kl"] for m in ppo_log])
        gold = np.array([m["gold/scores"] for m in ppo_log])
        ax.plot(kl, gold, ".", color="tab:blue", alpha=0.35, label="PPO rollouts (per step, train prompts)")
    for name, color, marker in (
        ("reference", "black", "s"),
        ("ppo", "tab:blue", "D"),
        ("dpo", "tab:red", "^"),
    ):
        e = summary["eval"].get(name)
        if e:
            ax.errorbar(
                e["kl"],
                e["gold"],
                xerr=e["kl_se"],
                yerr=e["gold_se"],
                fmt=marker,
                color=color,
                label=f"{name} (held out)",
            )
    ax.set_xlabel("sequence KL(π ‖ π_ref) [nats]")
    ax.set_ylabel("mean gold sentiment (VADER compound)")
    ax.set_title("Gold reward vs KL: PPO, DPO, best-of-n")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    frontier = out / "frontier.png"
    fig.savefig(frontier, dpi=110)
    plt.close(fig)
    paths = [frontier]
    if ppo_log:
        fig, axes = plt.subplots(1, 3, figsize=(10, 3))
        steps = [m["step"] for m in ppo_log]
        for ax, key, title in zip(
            axes,
            ("objective/scores", "gold/scores", "objective/kl"),
            ("RM score (proxy)", "gold sentiment", "sequence KL [nats]"),
            strict=True,
        ):
            ax.plot(steps, [m[key] for m in ppo_log], "-o", ms=3)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("PPO step")
            ax.grid(alpha=0.3)
        fig.tight_layout()
        curves = out / "ppo_curves.png"
        fig.savefig(curves, dpi=110)
        plt.close(fig)
        paths.append(curves)
    return paths


def write_html(summary: dict, pngs: list[Path], samples: dict, out: Path) -> Path:
    rows = "".join(
        f"<tr><td>{name}</td><td>{e['gold']:+.3f} ± {e['gold_se']:.3f}</td><td>{e['kl']:.2f} ± {e['kl_se']:.2f}</td></tr>"
        for name, e in summary["eval"].items()
    )
    rows += "".join(
        f"<tr><td>best-of-{c['n']}</td><td>{c['gold']:+.3f} ± {c['gold_se']:.3f}</td><td>{c['kl']:.2f} (analytic)</td></tr>"
        for c in summary["best_of_n"]
    )
    imgs = "".join(
        f'<img alt="{p.stem}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}"><br>'
        for p in pngs
    )
    names = list(samples)
    head = "".join(f"<th>{html.escape(n)}</th>" for n in ["prompt", *names])
    body = ""
    for i, prompt in enumerate(summary["sample_prompts"]):
        cells = "".join(f"<td>{html.escape(samples[n][i])}</td>" for n in names)
        body += f"<tr><td><b>{html.escape(prompt)}</b></td>{cells}</tr>"
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Positive reviews — prefrl</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px;vertical-align:top;font-size:13px}}</style></head><body>
<h1>Positive reviews: PPO vs DPO vs best-of-n</h1>
<p>Model {html.escape(summary["model"])}; gold reward = VADER compound sentiment of the response; labels from a
stochastic teacher (β = {TEACHER_BETA}); budget {html.escape(summary["budget_name"])}; wall time {summary["wall_s"] / 60:.1f} min.</p>
<table><tr><th>policy</th><th>gold (held out)</th><th>sequence KL [nats]</th></tr>{rows}</table>
{imgs}<h2>Samples (held-out prompts)</h2><table><tr>{head}</tr>{body}</table></body></html>"""
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------ main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny budget: a smoke test that runs in minutes")
    ap.add_argument(
        "--model", default="smollm2", help="policy/RM starting point ('smollm2', 'tiny' or a directory)"
    )
    ap.add_argument(
        "--out", default="runs/positive_reviews", help="working directory (stages are cached here)"
    )
    ap.add_argument("--docs", default=None, help="also copy the PNGs and a markdown summary here (e.g. docs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--report-only", action="store_true", help="redraw the report from a finished run's summary.json"
    )
    args = ap.parse_args()
    if args.report_only:
        redraw(Path(args.out) / ("quick" if args.quick else "full"), args.docs)
        return

    torch.set_num_threads(1)  # the machine is shared; DPO runs on the other core
    t0 = time.time()
    b = QUICK if args.quick else FULL
    out = Path(args.out) / ("quick" if args.quick else "full")
    out.mkdir(parents=True, exist_ok=True)
    stamp = out / "budget.json"
    if stamp.exists() and json.loads(stamp.read_text()) != {
        **vars(b),
        "model": args.model,
        "seed": args.seed,
    }:
        raise SystemExit(f"{out} holds a run with another budget, model or seed; pass a fresh --out")
    stamp.write_text(json.dumps({**vars(b), "model": args.model, "seed": args.seed}))
    prompts = load_prompt_texts()
    train_prompts, eval_prompts = prompts[: b.n_train], prompts[-b.n_eval :]

    # Wall time of each stage, kept across resumed runs: a stage found cached keeps the time
    # recorded by the run that computed it, so the reported total covers the whole pipeline.
    timings_path = out / "timings.json"
    timings: dict = json.loads(timings_path.read_text()) if timings_path.exists() else {}

    def timed(name: str, cached: bool, fn):  # noqa: ANN001, ANN202
        t = time.time()
        result = fn()
        if not cached:
            timings[name] = time.time() - t
            timings_path.write_text(json.dumps(timings, indent=2))
        return result

    pairs = timed(
        "pairs",
        (out / "pairs.jsonl").exists(),
        lambda: make_pairs(args.model, train_prompts, b, out, args.seed),
    )
    dpo_proc = start_dpo(args.model, pairs, b, out, args.seed)
    rm_dir = timed(
        "rm",
        (out / "rm" / "reward_model.json").exists(),
        lambda: train_rm(args.model, pairs, b, out, args.seed),
    )
    ppo_dir = timed(
        "ppo",
        (out / "ppo" / "done").exists(),
        lambda: train_ppo(args.model, rm_dir, train_prompts, b, out, args.seed),
    )
    if dpo_proc is not None:

        def wait_dpo() -> None:
            if dpo_proc.wait() != 0:
                raise SystemExit(f"DPO failed; see {out / 'dpo.log'}")
            (out / "dpo.done").write_text("")

        timed("dpo_wait", False, wait_dpo)  # time the main process waited for DPO after PPO
    log("dpo: done")
    t_eval = time.time()

    from prefrl.lm.models import load_causal_lm

    ref, tok = load_causal_lm(args.model, padding_side="left")
    ref.eval()
    summary: dict = {
        "model": args.model,
        "budget_name": "quick" if args.quick else "full",
        "budget": vars(b),
        "eval": {},
    }
    samples = {}
    for name, path in (("reference", None), ("ppo", ppo_dir / "policy"), ("dpo", out / "dpo")):
        model = ref if path is None else load_causal_lm(path)[0].eval()
        e = evaluate_policy(model, ref, tok, eval_prompts, b, args.seed + 1)
        samples[name] = e.pop("responses")
        summary["eval"][name] = e
        log(f"eval {name}: gold {e['gold']:+.3f} ± {e['gold_se']:.3f}, KL {e['kl']:.2f} ± {e['kl_se']:.2f}")
    summary["best_of_n"] = best_of_n_curve(ref, tok, rm_dir, eval_prompts, b, args.seed + 2)
    log(f"best-of-n: {summary['best_of_n']}")
    for name in ("ppo", "dpo"):
        summary[f"{name}_gold_gain"] = summary["eval"][name]["gold"] - summary["eval"]["reference"]["gold"]
    n_show = min(8, len(eval_prompts))
    summary["sample_prompts"] = eval_prompts[:n_show]
    samples = {k: v[:n_show] for k, v in samples.items()}
    ppo_log = [json.loads(line) for line in (ppo_dir / "metrics.jsonl").read_text().splitlines() if line]
    summary["ppo_steps_per_s"] = 1.0 / float(np.mean([m["time/step_s"] for m in ppo_log]))
    summary["ppo_steps_run"] = len(ppo_log)
    summary["pairs"] = json.loads((out / "pairs_stats.json").read_text())
    timings["eval"] = time.time() - t_eval
    timings_path.write_text(json.dumps(timings, indent=2))
    summary["stage_s"] = dict(timings)
    summary["wall_s"] = float(sum(timings.values()))  # the whole pipeline, cached stages included
    summary["invocation_s"] = time.time() - t0  # this invocation alone
    pngs = plot(summary, ppo_log, out)
    report = write_html(summary, pngs, samples, out)
    (out / "summary.json").write_text(json.dumps({**summary, "samples": samples}, indent=2))
    log(f"report: {report}")
    log(
        f"PPO gold gain {summary['ppo_gold_gain']:+.3f} at KL {summary['eval']['ppo']['kl']:.2f}; "
        f"DPO gold gain {summary['dpo_gold_gain']:+.3f} at KL {summary['eval']['dpo']['kl']:.2f}"
    )
    if args.docs:
        write_docs(summary, samples, pngs, Path(args.docs))


def redraw(out: Path, docs: str | None) -> None:
    """Plots, HTML and docs again from ``summary.json`` and the PPO metrics (no model runs)."""
    summary = json.loads((out / "summary.json").read_text())
    samples = summary.pop("samples")
    ppo_log = [json.loads(line) for line in (out / "ppo" / "metrics.jsonl").read_text().splitlines() if line]
    pngs = plot(summary, ppo_log, out)
    log(f"report: {write_html(summary, pngs, samples, out)}")
    if docs:
        write_docs(summary, samples, pngs, Path(docs))


def write_docs(summary: dict, samples: dict, pngs: list[Path], docs: Path) -> None:
    """PNGs under docs/positive_reviews/ and the numbers in docs/positive_reviews.md."""
    img_dir = docs / "positive_reviews"
    img_dir.mkdir(parents=True, exist_ok=True)
    for p in pngs:
        (img_dir / p.name).write_bytes(p.read_bytes())
    lines = [
        "# Positive reviews: PPO vs DPO vs best-of-n (measured)",
        "",
        f"Generated by `python examples/positive_reviews/run.py{' --quick' if summary['budget_name'] == 'quick' else ''} --docs docs` "
        f"({summary['model']}, budget `{summary['budget_name']}`, wall time {summary['wall_s'] / 60:.1f} min on a shared 2-core CPU).",
        "Gold reward = VADER compound sentiment of the response; preference labels from a stochastic teacher "
        f"(β = {TEACHER_BETA}, \"can't tell\" below a gap of {summary['budget'].get('teacher_equal', 0)}) over the gold reward: "
        f"{summary['pairs'].get('queries', summary['pairs']['pairs'])} queries, "
        f"{summary['pairs'].get('equal', 0)} answered \"can't tell\", {summary['pairs']['pairs']} pairs kept; "
        f"the teacher agrees with gold on {100 * summary['pairs']['teacher_agreement_with_gold']:.0f} % of them. "
        f"Held-out numbers: {summary['budget']['n_eval']} prompts × {summary['budget'].get('eval_samples', 1)} samples "
        "(± = standard error over prompts).",
        "",
        "| policy | gold (held out) | sequence KL(π‖π_ref) [nats] |",
        "|---|---|---|",
    ]
    for name, e in summary["eval"].items():
        lines.append(f"| {name} | {e['gold']:+.3f} ± {e['gold_se']:.3f} | {e['kl']:.2f} ± {e['kl_se']:.2f} |")
    for c in summary["best_of_n"]:
        lines.append(
            f"| best-of-{c['n']} | {c['gold']:+.3f} ± {c['gold_se']:.3f} | {c['kl']:.2f} (analytic) |"
        )
    lines += [
        "",
        f"PPO raises mean gold sentiment by {summary['ppo_gold_gain']:+.3f}, DPO by {summary['dpo_gold_gain']:+.3f} "
        f"(target: ≥ +0.3 at KL ≤ 10 nats). PPO ran at {summary['ppo_steps_per_s']:.4f} steps/s "
        f"(batch {summary['budget']['ppo_batch']}) for {summary.get('ppo_steps_run', '?')} steps.",
        "",
        "Stage wall times: "
        + ", ".join(f"{k} {v / 60:.1f} min" for k, v in summary.get("stage_s", {}).items())
        + ". On held-out reference samples the reward model orders "
        f"{100 * summary['best_of_n'][0].get('rm_gold_pairwise_acc', float('nan')):.0f} % of same-prompt pairs "
        f"with different gold scores ({summary['best_of_n'][0].get('rm_gold_pairs', 0)} pairs) as the gold does.",
        "",
        *[f"![{p.stem}](positive_reviews/{p.name})" for p in pngs],
        "",
        "## Samples (held-out prompts)",
        "",
    ]
    for i, prompt in enumerate(summary["sample_prompts"][:4]):
        lines.append(f"**{prompt}**")
        for name, texts in samples.items():
            lines.append(f"- *{name}*: {texts[i].strip()!r}")
        lines.append("")
    path = docs / "positive_reviews.md"
    marker = "<!-- online_methods.py"  # the section online_methods.py writes (GRPO, RLOO, online DPO) is kept
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    kept = old[old.index(marker) :] if marker in old else ""
    path.write_text("\n".join(lines) + "\n" + ("\n" + kept if kept else ""), encoding="utf-8")


if __name__ == "__main__":
    main()
