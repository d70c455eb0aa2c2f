"""Positive reviews, issue #15: GRPO, RLOO and online DPO on the same frontier as PPO, DPO and best-of-n.

Reuses ``run.py``'s stages 1–2 (the pairs and the reward model, cached under ``--out``) and its
evaluation, and adds three policies trained against the same frozen reward model:

- ``grpo`` / ``rloo`` — ``prefrl.lm.critic_free.CriticFreeTrainer``: ``batch`` prompts × k = 4
  completions per step (16 rollouts, as PPO's 16 prompts × 1), PPO's learning rate, epochs,
  minibatch, trained layers and KL (k1 in the reward, β = 0.05), no critic; the same KL stop;
- ``online-dpo`` — ``prefrl.lm.online_dpo.OnlineDPOTrainer`` with the reward model as teacher
  (``RewardTeacher``, through the store's queue): 8 prompts × 2 responses per round (16 samples),
  DPO β = 0.1 against the starting policy, DPO's learning rate.

Each method's run is resumable (its checkpoint under ``--out``) and each is evaluated as soon as
it ends, one JSON line per method in ``new_methods.jsonl``; ``--deadline HH:MM`` (UTC) stops
training early so the evaluations still fit. ``--docs docs`` writes
its section of ``docs/positive_reviews.md`` (after run.py's, which keeps it when it rewrites its own).

    python examples/positive_reviews/online_methods.py --steps 12 --deadline 13:00 --docs docs
    python examples/positive_reviews/online_methods.py --model tiny --quick --out runs/pr_quick --steps 2   # smoke
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run as pr  # noqa: E402  (the positive-reviews pipeline: budget, pairs, RM, evaluation)

METHODS = ("online-dpo", "grpo", "rloo")
#: Methods that need stage 2's reward model (``online-dpo-gold`` asks stage 1's teacher instead).
NEEDS_RM = ("online-dpo", "grpo", "rloo")


class GoldTeacher:
    """Stage 1's teacher for text pairs: the stochastic B-Pref teacher over VADER gold (σ(β·Δgold),
    "can't tell" below ``teacher_equal``), i.e. the teacher offline DPO's pairs came from, asked online."""

    compares = "text"
    name = lease_as = "stochastic-gold"

    def __init__(self, b: pr.Budget, seed: int) -> None:
        from prefrl.lm.reward_functions import VaderScorer
        from prefrl.teachers.synthetic import make_teacher

        self.vader = VaderScorer()
        self.teacher = make_teacher("stochastic", np.random.default_rng(seed), beta=pr.TEACHER_BETA,
                                    equal_threshold=b.teacher_equal)  # fmt: skip

    def answer(self, pairs):  # noqa: ANN001, ANN201
        ga = self.vader.score_texts([p.response_a for p in pairs])
        gb = self.vader.score_texts([p.response_b for p in pairs])
        return self.teacher.answer_returns(ga, gb)
NUM_GENERATIONS = 4
ODPO_PROMPTS = 8
ODPO_BETA = 0.1


def _deadline_passed(deadline: float | None) -> bool:
    return deadline is not None and time.time() >= deadline


def _policy(model_name: str, b: pr.Budget):  # noqa: ANN202
    from prefrl.lm.models import freeze_all_but_top_layers, load_causal_lm

    policy, tok = load_causal_lm(model_name, padding_side="left")
    ref, _ = load_causal_lm(model_name)
    freeze_all_but_top_layers(policy, b.ppo_top_layers)
    return policy, ref, tok


def _reward(rm_dir: Path):  # noqa: ANN202
    from prefrl.lm.reward_functions import RewardModelScorer
    from prefrl.lm.reward_model import RewardModel

    rm = RewardModel.from_pretrained(rm_dir, trainable=False)
    return RewardModelScorer(rm, RewardModel.load_tokenizer(rm_dir), max_length=128)


def train_method(method: str, model_name: str, rm_dir: Path | None, prompts: list[str], b: pr.Budget, out: Path,
                 seed: int, steps: int, deadline: float | None) -> tuple[Path, list[dict]]:  # fmt: skip
    """Train (or resume) one method into ``out/<method>``; returns its directory and metrics log."""
    from prefrl.lm.reward_functions import VaderScorer

    run_dir = out / method
    metrics_path = run_dir / "metrics.jsonl"
    policy, ref, tok = _policy(model_name, b)
    common = dict(max_new_tokens=b.max_new_tokens, temperature=pr.TEMPERATURE, minibatch_size=b.ppo_minibatch,
                  update_epochs=b.ppo_epochs, seed=seed)  # fmt: skip
    if method in ("online-dpo", "online-dpo-gold"):
        from prefrl.data.store import PreferenceStore
        from prefrl.lm.online_dpo import OnlineDPOConfig, OnlineDPOTrainer
        from prefrl.lm.reward_teacher import RewardTeacher

        run_dir.mkdir(parents=True, exist_ok=True)
        store = PreferenceStore(run_dir / "prefs.db")
        cfg = OnlineDPOConfig(batch_size=ODPO_PROMPTS, learning_rate=b.dpo_lr, beta=ODPO_BETA, **common)
        teacher = GoldTeacher(b, seed) if method == "online-dpo-gold" else RewardTeacher(_reward(rm_dir))
        trainer = OnlineDPOTrainer(policy, ref, teacher, store, tok, cfg, gold_fn=VaderScorer())
    else:
        from prefrl.lm.critic_free import CriticFreeConfig, CriticFreeTrainer

        cfg = CriticFreeConfig(algo=method, batch_size=b.ppo_batch // NUM_GENERATIONS, num_generations=NUM_GENERATIONS,
                               learning_rate=b.ppo_lr, kl_coef=pr.KL_COEF, kl_estimator="k1", **common)  # fmt: skip
        trainer = CriticFreeTrainer(policy, ref, _reward(rm_dir), tok, cfg, gold_fn=VaderScorer())
    if (run_dir / "trainer_state.pt").exists():
        trainer.load_checkpoint(run_dir)
        pr.log(f"{method}: resumed at step {trainer.global_step}")
    recent_kl = [json.loads(x).get("objective/kl", 0.0) for x in metrics_path.read_text().splitlines() if x][-2:] \
        if metrics_path.exists() else []  # fmt: skip

    def record(m: dict) -> None:
        pr.log(f"{method} step {int(m['step'])}: gold {m.get('objective/gold', float('nan')):+.3f} "
               f"kl {m.get('objective/kl', float('nan')):.2f} {m['time/step_s']:.0f}s")  # fmt: skip
        recent_kl.append(m.get("objective/kl", 0.0))

    def stop(m: dict) -> bool:  # PPO's KL stop, and the wall-clock deadline
        return (len(recent_kl) >= 3 and float(np.mean(recent_kl[-3:])) >= b.ppo_kl_stop) or _deadline_passed(deadline)

    if not (run_dir / "done").exists() and not _deadline_passed(deadline):
        trainer.train(prompts, steps, log_path=metrics_path, checkpoint_dir=run_dir, save_every=2, callback=record,
                      stop=stop, progress=False)  # fmt: skip
    log = [json.loads(x) for x in metrics_path.read_text().splitlines() if x] if metrics_path.exists() else []
    if trainer.global_step >= steps or (log and stop(log[-1])):
        (run_dir / "done").write_text("")
    return run_dir, log


MARKER = "<!-- online_methods.py: GRPO, RLOO and online DPO (issue #15) -->"
KL_BUDGET = 10.0


def _table_rows(text: str) -> list[tuple[str, float, float]]:
    """(policy, gold, KL) of the rows of run.py's table in ``text``."""
    return [(name, gold, kl) for name, gold, _, kl, _ in _table_rows_se(text)]


def _table_rows_se(text: str) -> list[tuple[str, float, float, float, float]]:
    """(policy, gold, gold s.e., KL, KL s.e.) of the rows of run.py's table in ``text`` (s.e. 0 where none)."""
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and "±" in cells[1]:
            gold, gold_se = (float(x) for x in cells[1].split("±"))
            kl = cells[2].split()
            rows.append((cells[0], gold, gold_se, float(kl[0]), float(kl[2]) if len(kl) > 2 and kl[1] == "±" else 0.0))
    return rows


def _section_rows(text: str) -> list[dict]:
    """The rows of this script's table (five columns) in ``text``, as result dicts."""
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and "±" in cells[1] and "±" in cells[2]:
            (gold, gold_se), (kl, kl_se) = ((float(x) for x in cells[i].split("±")) for i in (1, 2))
            rows.append({"name": cells[0], "gold": gold, "gold_se": gold_se, "kl": kl, "kl_se": kl_se,
                         "steps": int(cells[3]), "step_s": float(cells[4])})  # fmt: skip
    return rows


def plot_frontier(head: str, rows: list[dict], logs: dict[str, list[dict]], path: Path) -> None:
    """Gold vs sequence KL of every policy: run.py's (parsed from its table in ``head``) and this script's
    held-out rows, with their training rollouts per step (``logs``) and the KL budget line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.6, 4.6))
    old = _table_rows_se(head)
    bon = [r for r in old if r[0].startswith("best-of-")]
    if bon:
        ax.plot([r[3] for r in bon], [r[1] for r in bon], "o-", color="tab:green", label="best-of-n (RM-ranked)")
    styles = {"reference": ("black", "s"), "ppo": ("tab:blue", "D"), "dpo": ("tab:red", "^"),
              "grpo": ("tab:purple", "v"), "rloo": ("tab:orange", "P"), "online-dpo": ("tab:brown", "X"),
              "online-dpo-gold": ("tab:pink", "X")}  # fmt: skip
    for name, gold, gold_se, kl, kl_se in old:
        if name in ("ppo", "dpo", "reference"):
            color, marker = styles[name]
            ax.errorbar(kl, gold, xerr=kl_se, yerr=gold_se, fmt=marker, color=color, label=f"{name} (held out, run.py)")
    for r in rows:
        if r["name"].startswith("reference"):  # the same model and prompts, sampled by today's sampler
            ax.errorbar(r["kl"], r["gold"], xerr=r["kl_se"], yerr=r["gold_se"], fmt="s", color="black", mfc="white",
                        label="reference (held out, re-evaluated)")  # fmt: skip
            continue
        color, marker = styles.get(r["name"], ("tab:gray", "o"))
        ax.errorbar(r["kl"], r["gold"], xerr=r["kl_se"], yerr=r["gold_se"], fmt=marker, color=color, markersize=9,
                    label=f"{r['name']} (held out, {r['steps']} steps)")  # fmt: skip
        log = [m for m in logs.get(r["name"], []) if "objective/gold" in m and "objective/kl" in m]
        if log:
            ax.plot([m["objective/kl"] for m in log], [m["objective/gold"] for m in log], ".", color=color, alpha=0.3)
    ax.axvline(KL_BUDGET, color="gray", ls="--", lw=1)
    ax.text(KL_BUDGET, ax.get_ylim()[0], f" KL = {KL_BUDGET:g}", color="gray", fontsize=7, va="bottom")
    ax.set_xlabel("sequence KL(π ‖ π_ref) [nats]")
    ax.set_ylabel("mean gold sentiment (VADER compound)")
    ax.set_title("Gold reward vs KL: PPO, DPO, best-of-n, GRPO, RLOO, online DPO (dots: training rollouts)")
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_docs(rows: list[dict], docs: Path, steps: int, deadline: str | None, pairs: dict,
               logs: dict[str, list[dict]] | None = None) -> None:  # fmt: skip
    """Replace this script's section of ``docs/positive_reviews.md`` (after :data:`MARKER`) and draw
    ``docs/positive_reviews/frontier_online.png``."""
    path = docs / "positive_reviews.md"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    head = text.split(MARKER)[0].rstrip() + "\n\n"
    new = [r for r in rows if r["name"] != "reference"]
    # rows of the section's earlier version that this run did not redo are kept, and say so
    earlier = _section_rows(text.split(MARKER)[1]) if MARKER in text else []
    redone = {x["name"] for x in rows}
    kept = [r for r in earlier if r["name"].split(" (")[0] not in redone]  # "reference (re-evaluated)" is "reference"
    lines = [
        MARKER,
        "## GRPO, RLOO and online DPO (issue #15)",
        "",
        ("Generated by `python examples/positive_reviews/online_methods.py "
         f"--steps {steps}{f' --deadline {deadline}' if deadline else ''} --methods {','.join(r['name'] for r in new)}`, "
         if new else "No method finished in the latest run of `python examples/positive_reviews/online_methods.py`; the "
         "rows below are kept from earlier runs, ")
        + "evaluated on the same held-out prompts and samples per prompt as the table above. "
        + (f"The reward model is stages 1–2's, re-run with the same seed ({pairs.get('queries')} queries, "
           f"{pairs.get('equal')} \"can't tell\", {pairs.get('pairs')} pairs). " if pairs and new else "")
        + "`online-dpo` asks stage 2's reward model (`RewardTeacher`); `online-dpo-gold` asks stage 1's teacher "
        "(σ(β·Δgold) over VADER, \"can't tell\" on near-ties: the teacher offline DPO's pairs came from), online, "
        "through the store's queue."
        + (f" Kept from this section's earlier version (not re-run): {', '.join(r['name'] for r in kept)}." if kept else ""),
        "",
        "| policy | gold (held out) | sequence KL(π‖π_ref) [nats] | steps run | s / step |",
        "|---|---|---|---|---|",
    ]
    for r in [*rows, *kept]:
        lines.append(f"| {r['name']} | {r['gold']:+.3f} ± {r['gold_se']:.3f} | {r['kl']:.2f} ± {r['kl_se']:.2f} | "
                     f"{r['steps']} | {r['step_s']:.0f} |")  # fmt: skip
    candidates = _table_rows(head)  # run.py's policies: reference, PPO, DPO, best-of-n
    candidates += [(r["name"], r["gold"], r["kl"]) for r in [*new, *kept]]
    within = [c for c in candidates if c[2] <= KL_BUDGET]
    if within:
        best = max(within, key=lambda c: c[1])
        lines += ["", f"**Highest held-out gold at sequence KL ≤ {KL_BUDGET:g} nats: {best[0]}** ({best[1]:+.3f} at "
                  f"{best[2]:.2f} nats), over the rows of both tables."]  # fmt: skip
    plot_frontier(head, [*rows, *kept], logs or {}, docs / "positive_reviews" / "frontier_online.png")
    lines += ["", "![frontier with GRPO, RLOO and online DPO](positive_reviews/frontier_online.png)"]
    path.write_text(head + "\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--out", default="runs/positive_reviews/full", help="run.py's full-budget directory")
    ap.add_argument("--steps", type=int, default=pr.FULL.ppo_steps, help="steps (rounds) per method; PPO's budget is 40")
    ap.add_argument("--deadline", default=None, help="HH:MM UTC: stop training then, so that evaluation still fits")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--eval-s", type=float, default=180.0, help="wall seconds kept for each evaluation under --deadline")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--docs", default=None, help="write this script's section of DOCS/positive_reviews.md")
    ap.add_argument("--quick", action="store_true", help="run.py's quick budget (a smoke test; --out …/quick)")
    ap.add_argument("--table-only", action="store_true",
                    help="with --docs: rewrite the docs section and plot from OUT's results; train and evaluate nothing")
    ap.add_argument("--no-reference", action="store_true",
                    help="do not re-evaluate the reference (run.py's table has it; saves one evaluation)")  # fmt: skip
    args = ap.parse_args()
    torch.set_num_threads(1)
    b, out = (pr.QUICK if args.quick else pr.FULL), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    deadline = None
    if args.deadline:
        hh, mm = map(int, args.deadline.split(":"))
        now = dt.datetime.now(dt.timezone.utc)
        deadline = now.replace(hour=hh, minute=mm, second=0, microsecond=0).timestamp()
    prompts = pr.load_prompt_texts()
    train_prompts, eval_prompts = prompts[: b.n_train], prompts[-b.n_eval :]
    rm_dir = None
    if args.table_only:
        args.methods, args.no_reference = "", True
    if any(m in NEEDS_RM for m in args.methods.split(",")):
        pairs = pr.make_pairs(args.model, train_prompts, b, out, args.seed)
        rm_dir = pr.train_rm(args.model, pairs, b, out, args.seed)
    from prefrl.lm.models import load_causal_lm

    results_path = out / "new_methods.jsonl"
    done = {json.loads(x)["name"] for x in results_path.read_text().splitlines() if x} if results_path.exists() else set()
    methods = [m for m in args.methods.split(",") if m]
    names = [n for n in [*methods, *([] if args.no_reference else ["reference"])] if n not in done]
    if names:
        ref, tok = load_causal_lm(args.model, padding_side="left")
        ref.eval()
    for i, name in enumerate(names):
        t0 = time.time()
        if name == "reference":
            model, log = ref, []
        else:
            # an equal share of the time left to each method still to train, less the evaluations still to run
            to_train = sum(n != "reference" for n in names[i:])
            until = None if deadline is None else t0 + (deadline - t0 - (len(names) - i) * args.eval_s) / to_train
            run_dir, log = train_method(name, args.model, rm_dir, train_prompts, b, out, args.seed, args.steps, until)
            if not (run_dir / "policy").is_dir():  # the deadline left no time for a single step: no row
                pr.log(f"{name}: not trained (no time left before --deadline); no row")
                continue
            model = load_causal_lm(run_dir / "policy")[0].eval()
        e = pr.evaluate_policy(model, ref, tok, eval_prompts, b, args.seed + 1)
        row = {"name": name, **{k: v for k, v in e.items() if k != "responses"}, "samples": e["responses"][:4],
               "steps": len(log), "step_s": float(np.mean([m["time/step_s"] for m in log])) if log else 0.0,
               "wall_s": time.time() - t0}  # fmt: skip
        with open(results_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        pr.log(f"eval {name}: gold {e['gold']:+.3f} ± {e['gold_se']:.3f}, KL {e['kl']:.2f} ± {e['kl_se']:.2f} "
               f"after {len(log)} steps")  # fmt: skip
    rows = [json.loads(x) for x in results_path.read_text().splitlines() if x] if results_path.exists() else []
    print(json.dumps(rows, indent=1))
    if args.docs:
        stats = out / "pairs_stats.json"
        logs = {r["name"]: [json.loads(x) for x in (out / r["name"] / "metrics.jsonl").read_text().splitlines() if x]
                for r in rows if (out / r["name"] / "metrics.jsonl").exists()}  # fmt: skip
        write_docs(rows, Path(args.docs), args.steps, args.deadline, json.loads(stats.read_text()) if stats.exists() else {},
                   logs)  # fmt: skip


if __name__ == "__main__":
    main()
