"""Fewer labels (#16): PPO vs SAC, PEBBLE (SAC + state-entropy pre-training + relabelling) and SURF
(+ pseudo-labels and temporal crops) at small label budgets, each beside true-reward RL with the same
optimiser.

Resumable: every finished run appends one JSON line to ``--results`` (committed, so the table
fills up over several days) and is skipped on a restart; the table is rewritten between the
``few_labels`` markers of ``docs/benchmarks_control.md`` after each run.

    nice nohup .venv/bin/python benchmarks/few_labels.py --env HalfCheetah-v5 --steps 1000000 \\
        --configs ppo pebble pebble+surf --labels 50 100 200 350 --seeds 0 1 2 > few_labels.log 2>&1 &

Reduced (what 2 shared cores do in an hour or so):

    nice .venv/bin/python benchmarks/few_labels.py --steps 20000 --labels 100 --configs ppo pebble \\
        --seeds 0 --sac-hidden 64 64
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np
from _docs import write_section  # benchmarks/ is sys.path[0] when run as a script

from prefrl.control import label_defaults
from prefrl.control.baseline import train_true_reward_ppo
from prefrl.control.config import ControlConfig
from prefrl.control.label_defaults import (
    MEASURED_STEPS,
    RECIPES,
    SURF_CROP_FRACTION,
    SURF_THRESHOLD,
    best_by_budget,
)
from prefrl.control.loop import PreferenceLoop
from prefrl.rl.sac_config import SACConfig

#: name → (optimizer, PEBBLE pre-training on, SURF on): the recipes `control train` chooses among
CONFIGS = {name: (r.optimizer, r.pebble, r.surf) for name, r in RECIPES.items()}
#: The paper-scale table of the issue: 4 envs × 350/700/1,400 labels × 3 seeds at 1M steps, + true-reward runs.
PAPER_RUNS_PER_CONFIG = 4 * 3 * 3 + 4 * 3
#: The noisy-teacher table: 5 B-Pref teachers × HalfCheetah, Walker2d × 700 labels × 3 seeds at 1M steps.
NOISY_RUNS = 5 * 2 * 3
PAPER_STEPS = 1_000_000
MARK_START, MARK_END = "<!-- few_labels:start -->", "<!-- few_labels:end -->"


def make_config(args: argparse.Namespace, name: str, labels: int, seed: int, run_dir: Path) -> ControlConfig:
    optimizer, pebble, surf = CONFIGS[name]
    return ControlConfig(
        env_id=args.env, labels=max(labels, 1), steps=args.steps, optimizer=optimizer, seed=seed, run_dir=str(run_dir),
        sac=SACConfig(hidden=tuple(args.sac_hidden), learning_starts=args.sac_learning_starts,
                      buffer_size=min(args.steps, 1_000_000)),
        pretrain_steps=args.pretrain_steps if pebble and labels else 0,
        pseudo_label_threshold=args.pseudo_label_threshold if surf else 0.0,
        crop_fraction=args.crop_fraction if surf else 0.0,
        checkpoint_minutes=10.0, progress=False,
    )  # fmt: skip


def run_one(args: argparse.Namespace, name: str, labels: int, seed: int) -> dict:
    """labels = 0: the config's optimiser on the true reward."""
    run_dir = Path(args.runs_dir) / f"{args.env}-{name}-{labels or 'true'}-s{seed}-{args.steps}"
    cfg = make_config(args, name, labels, seed, run_dir)
    start = time.monotonic()
    if labels == 0:
        agent, episodes = train_true_reward_ppo(cfg)
    else:
        loop = PreferenceLoop.resume(run_dir) if (run_dir / "checkpoint.pt").exists() else PreferenceLoop(cfg)
        loop.run()
        agent, episodes = loop.agent, loop.history.episodes
    minutes = (time.monotonic() - start) / 60
    eval_returns = agent.evaluate(args.env, args.eval_episodes, seed=10_000 + seed)
    return {
        "env": args.env, "config": name, "labels": labels, "seed": seed, "steps": args.steps,
        "final_return": float(np.mean([r for _, r in episodes[-10:]])) if episodes else float("nan"),
        "eval_return": float(np.mean(eval_returns)), "minutes": round(minutes, 1), "load": os.getloadavg()[0],
        "settings": {k: v for k, v in dataclasses.asdict(cfg).items()
                     if k in ("optimizer", "pretrain_steps", "pseudo_label_threshold", "crop_fraction", "sac")},
    }  # fmt: skip


def load_results(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _mean_std(xs: list[float]) -> str:
    return f"{np.mean(xs):.0f} ± {np.std(xs):.0f}" if xs else "—"


def markdown(results: list[dict]) -> str:
    """One table per (env, steps): each config and label budget, % of true-reward RL with the same optimiser."""
    lines = []
    for env, steps in sorted({(r["env"], r["steps"]) for r in results}):
        rows = [r for r in results if r["env"] == env and r["steps"] == steps]
        true_eval = {opt: [r["eval_return"] for r in rows if r["labels"] == 0 and CONFIGS[r["config"]][0] == opt]
                     for opt in ("ppo", "sac")}  # fmt: skip
        lines += [f"### {env}, {steps:,} env steps", "",
                  "| config | labels | seeds | final return (last 10 episodes) | deterministic eval | % of true-reward eval "
                  "| minutes per run |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for name, labels in sorted({(r["config"], r["labels"]) for r in rows}, key=lambda k: (k[0], k[1] == 0, k[1])):
            group = [r for r in rows if r["config"] == name and r["labels"] == labels]
            evals = [r["eval_return"] for r in group]
            ref = true_eval[CONFIGS[name][0]]
            pct = f"{100 * np.mean(evals) / np.mean(ref):.0f} %" if ref and labels and np.mean(ref) > 0 else "—"
            lines.append(f"| {name} | {labels or 'true reward'} | {len(group)} | {_mean_std([r['final_return'] for r in group])} "
                         f"| {_mean_std(evals)} | {pct} | {', '.join(str(r['minutes']) for r in group)} |")  # fmt: skip
        lines.append("")
    lines += defaults_section(results)
    return "\n".join(lines)


def defaults_section(results: list[dict]) -> list[str]:
    """What `control train` defaults to per budget (recomputed here, as the test does) and what more would cost."""
    best = best_by_budget(results)
    lines = [f"### Measured best per label budget ({MEASURED_STEPS:,}-step rows: `prefrl control train`'s defaults)", "",
             "| labels | best recipe | measured (env: recipes) | in `label_defaults.MEASURED_BEST` |", "|---|---|---|---|"]  # fmt: skip
    for budget, name in best.items():
        at = [r for r in results if r["labels"] == budget and r["steps"] == MEASURED_STEPS]
        measured = "; ".join(f"{e}: {', '.join(sorted({r['config'] for r in at if r['env'] == e}))}"
                             for e in sorted({r["env"] for r in at}))  # fmt: skip
        ok = "yes" if label_defaults.MEASURED_BEST.get(budget) == name else "NO: update it"
        lines.append(f"| {budget} | {name} | {measured} | {ok} |")
    # CPU cost of the paper-scale table, from the measured minutes per env step of each config
    per_step = {}
    for name in CONFIGS:
        runs = [r for r in results if r["config"] == name and r["labels"] > 0]
        if runs:
            per_step[name] = float(np.mean([r["minutes"] / r["steps"] for r in runs]))
    if per_step:
        lines += ["", f"Cost of the tables not filled yet, linear in steps from the minutes per env step measured above "
                  f"(hours of one process on this shared 2-core machine, an upper bound on its CPU-hours): the paper-scale table is "
                  f"{PAPER_RUNS_PER_CONFIG} runs of {PAPER_STEPS:,} steps per config (4 envs × 350/700/1,400 labels × "
                  f"3 seeds + 4 × 3 true-reward runs), the noisy-teacher table {NOISY_RUNS} (5 teachers × HalfCheetah, "
                  "Walker2d × 700 labels × 3 seeds).", "",
                  "| config | minutes per 1M steps | paper-scale table, hours | noisy-teacher table, hours |",
                  "|---|---|---|---|"]  # fmt: skip
        for name, m in per_step.items():
            lines.append(f"| {name} | {m * PAPER_STEPS:,.0f} | {m * PAPER_STEPS * PAPER_RUNS_PER_CONFIG / 60:,.0f} "
                         f"| {m * PAPER_STEPS * NOISY_RUNS / 60:,.0f} |")
    return lines + [""]


def write_table(doc: Path, table: str) -> None:
    write_section(doc, MARK_START, MARK_END, table,
                  heading="## Fewer labels (#16): PPO, SAC, PEBBLE, SURF\n\nWritten by `benchmarks/few_labels.py`.")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="HalfCheetah-v5")
    p.add_argument("--configs", nargs="+", default=["ppo", "pebble"], choices=sorted(CONFIGS))
    p.add_argument("--labels", type=int, nargs="+", default=[50, 100, 200, 350])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=1_000_000)
    p.add_argument("--no-true-reward", action="store_true", help="skip the true-reward runs")
    p.add_argument("--pretrain-steps", type=int, default=10_000, help="PEBBLE's unsupervised steps")
    p.add_argument("--pseudo-label-threshold", type=float, default=SURF_THRESHOLD)
    p.add_argument("--crop-fraction", type=float, default=SURF_CROP_FRACTION)
    p.add_argument("--sac-hidden", type=int, nargs="+", default=[256, 256])
    p.add_argument("--sac-learning-starts", type=int, default=5000)
    p.add_argument("--eval-episodes", type=int, default=5)
    p.add_argument("--runs-dir", default="runs/bench_few_labels")
    p.add_argument("--results", default="benchmarks/results/few_labels.jsonl")
    p.add_argument("--doc", default="docs/benchmarks_control.md")
    p.add_argument("--table-only", action="store_true", help="rewrite the tables from the results file and exit")
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    results_path = Path(args.results)
    results_path.parent.mkdir(parents=True, exist_ok=True)
    if args.table_only:
        write_table(Path(args.doc), markdown(load_results(results_path)))
        return
    true_runs = {"ppo" if CONFIGS[c][0] == "ppo" else "sac" for c in args.configs}
    todo = [(c, 0, s) for s in args.seeds for c in sorted(true_runs) if not args.no_true_reward]
    todo += [(c, n, s) for s in args.seeds for n in args.labels for c in args.configs]
    for name, labels, seed in todo:
        if any(r["env"] == args.env and r["steps"] == args.steps and r["config"] == name and r["labels"] == labels
               and r["seed"] == seed for r in load_results(results_path)):  # fmt: skip
            continue
        print(f"[{time.strftime('%H:%M:%S')}] {args.env} {name} labels={labels or 'true reward'} seed={seed}", flush=True)
        row = run_one(args, name, labels, seed)
        with results_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"  final {row['final_return']:.1f}, eval {row['eval_return']:.1f}, {row['minutes']} min", flush=True)
        write_table(Path(args.doc), markdown(load_results(results_path)))


if __name__ == "__main__":
    main()
