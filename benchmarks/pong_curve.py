"""Pong from synthetic preferences, one resumable background run (issue #13 item 5), and its learning curve.

``run`` starts (or, when its checkpoint exists, continues with ``--resume``) the README's Pong command
in ``--run-dir`` (default ``runs/pong-curve``; put a long run outside any worktree)::

    prefrl control train --env ALE/Pong-v5 --labels 500 --steps 200000 --run-dir RUN_DIR --checkpoint-minutes 5

(``--labels`` / ``--steps`` change the budget of a fresh run.)

``record`` reads the run's ``metrics.jsonl`` (one row per PPO iteration, written as it goes, so a
killed run still has its curve), rewrites ``--results`` (default ``benchmarks/results/pong_curve.jsonl``: env steps, labels,
wall-clock minutes, mean true return of the last 10 episodes, deterministic evaluations), plots
``docs/<results name>.png`` (``docs/pong_curve.png`` by default) and replaces the "Pong learning curve" table in docs/benchmarks_control.md.

    nice -n 10 .venv/bin/python benchmarks/pong_curve.py run      # hours; kill it any time, rerun to continue
    .venv/bin/python benchmarks/pong_curve.py record

Either command answers a missing or unreadable run with one line naming the file, not a traceback.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from _docs import write_section  # benchmarks/ is sys.path[0] when run as a script

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "runs" / "pong-curve"
RESULTS = ROOT / "benchmarks" / "results" / "pong_curve.jsonl"
DOC = ROOT / "docs" / "benchmarks_control.md"
LABELS, STEPS = 500, 200_000  # the README's command


def command(labels: int, steps: int) -> list[str]:
    return ["control", "train", "--env", "ALE/Pong-v5", "--labels", str(labels), "--steps", str(steps), "--checkpoint-minutes",
            "5", "--no-progress"]  # fmt: skip
MARK_BEGIN, MARK_END = "<!-- pong_curve:begin -->", "<!-- pong_curve:end -->"


def run(run_dir: Path, labels: int = LABELS, steps: int = STEPS) -> None:
    """Start the run (``labels``, ``steps``), or continue it from its checkpoint with the budget it started with."""
    fresh = [*command(labels, steps), "--run-dir", str(run_dir)]
    args = ["control", "train", "--resume", str(run_dir)] if (run_dir / "checkpoint.pt").is_file() else fresh
    code = subprocess.run([sys.executable, "-m", "prefrl", *args]).returncode  # prefrl prints its own one-line error
    if code:
        raise SystemExit(code)


def rows(run_dir: Path) -> list[dict]:
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        raise SystemExit(f"pong_curve.py record: {metrics} does not exist; start the run with `pong_curve.py run --run-dir {run_dir}`")
    out = []
    lines = metrics.read_text().splitlines()
    for i, line in enumerate(lines, 1):
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines):  # a run killed mid-write leaves half a last line
                break
            raise SystemExit(f"pong_curve.py record: {metrics}:{i} is not JSON ({e})") from None
        if "charts/true_return" in r:
            out.append({"step": r["step"], "labels": r.get("labels/answered"), "minutes": r.get("charts/elapsed_seconds", 0) / 60,
                        "true_return": r["charts/true_return"], "sps": r.get("charts/sps")})  # fmt: skip
    return out


def evaluations(run_dir: Path) -> list:
    """The run's deterministic evaluations: history.json at the end, the checkpoint while it runs (none before one)."""
    from prefrl.control.checkpoint import CheckpointError, load_checkpoint

    history = run_dir / "history.json"
    try:
        if history.is_file():
            return json.loads(history.read_text()).get("evaluations", [])
        if not (run_dir / "checkpoint.pt").is_file():
            return []
        return list(getattr(load_checkpoint(run_dir)["history"], "evaluations", []))
    except (json.JSONDecodeError, CheckpointError) as e:
        raise SystemExit(f"pong_curve.py record: {e}") from None


def record(run_dir: Path, results: Path) -> None:
    curve = rows(run_dir)
    if not curve:
        raise SystemExit(f"pong_curve.py record: {run_dir / 'metrics.jsonl'} has no training episode yet")
    evals = evaluations(run_dir)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text("".join(json.dumps(r) + "\n" for r in curve) + "".join(
        json.dumps({"evaluation_step": s, "mean": m, "std": sd}) + "\n" for s, m, sd in evals))  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.plot([r["step"] for r in curve], [r["true_return"] for r in curve], label="training episodes (mean of last 10)")
    ax.axhline(-21, color="gray", linestyle=":", linewidth=1, label="−21: loses every point")
    ax.set_xlabel("env steps")
    ax.set_ylabel("Pong score (true return)")
    ax.set_ylim(-21.5, max([-15.0] + [r["true_return"] + 1 for r in curve]))  # the whole scale, not a zoom on noise
    try:
        cfg = json.loads((run_dir / "config.json").read_text())
        title = f"Pong from {cfg['labels']:,} synthetic labels, {cfg['steps']:,}-step budget"
    except (OSError, ValueError, KeyError):
        title = "Pong from synthetic labels"
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / f"{results.stem}.png", dpi=100)
    picks = curve[:: max(1, len(curve) // 12)]
    picks += curve[-1:] if picks[-1] is not curve[-1] else []
    table = "| env steps | labels answered | wall clock | score (last 10 episodes) |\n|---|---|---|---|\n" + "\n".join(
        f"| {int(r['step']):,} | {int(r['labels'] or 0)} | {r['minutes']:.0f} min | {r['true_return']:.1f} |" for r in picks)  # fmt: skip
    if evals:
        table += "\n\nDeterministic evaluations (3 episodes each): " + ", ".join(
            f"{int(s):,} steps: {m:.1f} ± {sd:.1f}" for s, m, sd in evals) + "."  # fmt: skip
    write_section(DOC, MARK_BEGIN, MARK_END, table)
    print(table)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["run", "record"])
    p.add_argument("--run-dir", type=Path, default=RUN, help="the run's directory (default: runs/pong-curve in the repo)")
    p.add_argument("--results", type=Path, default=RESULTS, help="record: the jsonl file the curve is written to")
    p.add_argument("--labels", type=int, default=LABELS, help="run: the label budget of a fresh run (a resumed run keeps its own)")
    p.add_argument("--steps", type=int, default=STEPS, help="run: the env-step budget of a fresh run (a resumed run keeps its own)")
    a = p.parse_args()
    if a.what == "run":
        run(a.run_dir, a.labels, a.steps)
    else:
        record(a.run_dir, a.results)


if __name__ == "__main__":
    main()
