"""The run report: PNG charts (matplotlib, Agg) and one self-contained ``report.html``.

Charts: true episode return vs env steps and wall-clock time (the training episodes, the
deterministic policy's evaluations, the random policy's level and the true-reward PPO baseline
when it ran), labels over time (asked, answered, equal, skipped), reward-model validation
accuracy, predicted vs true segment returns, and gold vs proxy on the policy's own steps; then a
clip of the final policy (``final_policy.mp4``) and a strip of its frames. The PNGs and the clip are written next to the
HTML and also embedded in it (base64), so the page opens anywhere without a CDN or the run directory.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPORT_NAME = "report.html"
PLOTS = {
    "true_return": "true_return.png",
    "labels": "labels.png",
    "reward_accuracy": "reward_accuracy.png",
    "segment_returns": "segment_returns.png",
    "gold_vs_proxy": "gold_vs_proxy.png",
}


def smooth(values: Sequence[float], window: int = 10) -> np.ndarray:
    """Trailing moving average (the first points average over what exists)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return x
    c = np.cumsum(np.insert(x, 0, 0.0))
    idx = np.arange(1, x.size + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def summary(history: Any, counters: Any, n_last: int = 10, answers: dict[str, int] | None = None) -> dict[str, float | int | None]:
    """Headline numbers: true return at the start and the end, baseline, labels, accuracy, correlation.

    ``answers``: the store's answer counts (``run_state.answer_counts``); without them, the last logged row's.
    """

    def mean_of(pairs: Sequence[tuple[int, float]], first: bool) -> float | None:
        if not pairs:
            return None
        chosen = pairs[:n_last] if first else pairs[-n_last:]
        return float(np.mean([r for _, r in chosen]))

    iterations = history.iterations
    evaluations = getattr(history, "evaluations", [])
    last = iterations[-1] if iterations else {}
    corr = None
    if len(history.segment_returns) >= 3:
        pred, true = np.asarray(history.segment_returns, dtype=np.float64).T
        if pred.std() > 0 and true.std() > 0:
            corr = float(np.corrcoef(pred, true)[0, 1])
    return {
        "env_steps": int(counters.global_step),
        "ppo_iterations": int(counters.iteration),
        "labels_asked": int(counters.queries_posted),
        "labels_answered": answers["answered"] if answers else (int(last.get("labels/answered", 0)) if last else None),
        "labels_equal": answers["equal"] if answers else (int(last.get("labels/equal", 0)) if last else None),
        "labels_incomparable": answers["incomparable"] if answers else (int(last.get("labels/incomparable", 0)) if last else None),
        "reward_rounds": int(counters.reward_rounds),
        "episodes": len(history.episodes),
        "true_return_first": mean_of(history.episodes, first=True),
        "true_return_last": mean_of(history.episodes, first=False),
        "baseline_return_last": mean_of(history.baseline_episodes, first=False),
        "eval_return_first": evaluations[0][1] if evaluations else None,
        "eval_return_last": evaluations[-1][1] if evaluations else None,
        "reward_accuracy_last": _last_value(iterations, "reward/accuracy"),
        "segment_return_correlation": corr,
        "wall_clock_minutes": round(float(counters.elapsed_seconds) / 60.0, 2),
    }


def _last_value(rows: Sequence[dict[str, float]], key: str) -> float | None:
    for row in reversed(rows):
        if key in row and np.isfinite(row[key]):
            return float(row[key])
    return None


def _series(rows: Sequence[dict[str, float]], key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(r["step"], r[key]) for r in rows if key in r and np.isfinite(r[key])]
    if not pts:
        return np.zeros(0), np.zeros(0)
    a = np.asarray(pts, dtype=np.float64)
    return a[:, 0], a[:, 1]


def plot_all(run_dir: Path, history: Any, title: str) -> dict[str, Path]:
    """Write the four PNGs into ``run_dir``; returns name → path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = {name: run_dir / fname for name, fname in PLOTS.items()}

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for pairs, label, color in (
        (history.episodes, "preferences (learned reward)", "tab:blue"),
        (history.baseline_episodes, "PPO on the true reward", "tab:gray"),
    ):
        if pairs:
            steps, rets = np.asarray(pairs, dtype=np.float64).T
            ax.plot(steps, rets, ".", color=color, alpha=0.25, markersize=3)
            ax.plot(steps, smooth(rets), color=color, label=label)
    evaluations = getattr(history, "evaluations", [])
    if evaluations:
        steps, means, stds = np.asarray(evaluations, dtype=np.float64).T
        ax.errorbar(steps, means, yerr=stds, fmt="o-", color="tab:green", markersize=4, capsize=3,
                    label="deterministic policy (evaluation)")  # fmt: skip
    if history.episodes:  # the run's first episodes are the untrained (random) policy's
        ax.axhline(float(np.mean([r for _, r in history.episodes[:10]])), color="tab:red", linestyle=":",
                   linewidth=1, label="random policy (first 10 episodes)")  # fmt: skip
    ax.set_xlabel("env steps")
    ax.set_ylabel("true episode return")
    ax.set_title(f"{title}: true return")
    steps, minutes = _series(history.iterations, "charts/elapsed_seconds")
    if steps.size >= 2 and np.all(np.diff(steps) > 0):  # a wall-clock axis on top
        top = ax.secondary_xaxis("top", functions=(lambda x: np.interp(x, steps, minutes / 60.0),
                                                   lambda m: np.interp(m, minutes / 60.0, steps)))  # fmt: skip
        top.set_xlabel("wall-clock minutes", fontsize=8)
    if history.episodes or history.baseline_episodes or evaluations:
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(paths["true_return"], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for key, label in (("labels/total", "asked"), ("labels/answered", "answered"), ("labels/equal", "answered equal"),
                       ("labels/incomparable", "skipped / can't tell")):  # fmt: skip
        steps, values = _series(history.iterations, key)
        if steps.size:
            ax.step(steps, values, where="post", label=label)
    ax.set_xlabel("env steps")
    ax.set_ylabel("labels")
    ax.set_title("labels over time")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(paths["labels"], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.6))
    steps, acc = _series(history.iterations, "reward/accuracy")
    if steps.size:
        ax.plot(steps, acc, color="tab:green")
    ax.axhline(0.5, color="gray", linestyle=":", linewidth=1)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("env steps")
    ax.set_ylabel("validation accuracy")
    ax.set_title("reward model: held-out comparison accuracy")
    fig.tight_layout()
    fig.savefig(paths["reward_accuracy"], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    if history.segment_returns:
        pred, true = np.asarray(history.segment_returns, dtype=np.float64).T
        ax.scatter(true, pred, s=8, alpha=0.6)
    ax.set_xlabel("true segment return")
    ax.set_ylabel("predicted segment return (normalised)")
    ax.set_title("learned vs true reward on recent segments")
    fig.tight_layout()
    fig.savefig(paths["segment_returns"], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for key, label, color in (("reward/proxy_true_corr", "corr(learned, true reward) per step", "tab:purple"),
                              ("reward/ensemble_std", "ensemble disagreement (std)", "tab:orange")):  # fmt: skip
        steps, values = _series(history.iterations, key)
        if steps.size:
            ax.plot(steps, values, color=color, label=label)
    ax.set_xlabel("env steps")
    ax.set_title("gold vs proxy on the policy's own steps")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(paths["gold_vs_proxy"], dpi=100)
    plt.close(fig)
    return paths


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
    return str(v)


#: Said in the report, the CLI and a warning when a run ends without a single reward round.
NO_REWARD_MODEL = (
    "no reward model was trained: the teacher gave no comparable answer (all skipped, can't tell or unanswered), "
    "so the policy optimised an untrained reward"
)


#: Larger clips are linked, not embedded (the page stays a few MB).
MAX_EMBEDDED_CLIP_BYTES = 8_000_000


def _clip_html(run_dir: Path, clip: dict[str, Any]) -> str:
    """The final policy's one recording (:func:`prefrl.control.evaluation.record_final_clip`): its video and strip of frames."""
    if not clip:
        return "<p>No clip was recorded.</p>"
    path = run_dir / Path(str(clip.get("path", ""))).name
    if "reason" in clip or not path.is_file():
        return f"<p>No clip of the final policy: {html.escape(str(clip.get('reason', 'file missing')))}.</p>"
    caption = (f'<a href="{path.name}">{path.name}</a>: the deterministic policy, first {clip.get("steps")} steps of '
               f'the first evaluation episode, true return {_fmt(clip.get("return"))}')  # fmt: skip
    size = path.stat().st_size
    src = path.name if size > MAX_EMBEDDED_CLIP_BYTES else "data:video/mp4;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    out = f'<figure><video controls muted loop autoplay playsinline width="480" src="{src}"></video><figcaption>{caption}</figcaption></figure>'
    strip = run_dir / Path(str(clip.get("strip", ""))).name if clip.get("strip") else None
    if strip is not None and strip.is_file():
        data = base64.b64encode(strip.read_bytes()).decode("ascii")
        out += (f'\n<p><img alt="frames of the episode" style="max-width:100%" src="data:image/png;base64,{data}"></p>'
                f'<p>The same episode, left to right: <a href="{strip.name}">{strip.name}</a>.</p>')  # fmt: skip
    return out


def write_report(run_dir: str | Path, cfg: Any, history: Any, counters: Any, answers: dict[str, int] | None = None) -> Path:
    """Write the PNGs, ``summary.json`` and ``report.html`` into ``run_dir``; returns the HTML path."""
    run_dir = Path(run_dir)
    title = f"{cfg.env_id} · {cfg.teacher} teacher · {cfg.labels} labels"
    paths = plot_all(run_dir, history, cfg.env_id)
    numbers = summary(history, counters, answers=answers)
    warning = f'<p style="color:#b00;font-weight:bold">Warning: {NO_REWARD_MODEL}.</p>' if not counters.reward_rounds else ""
    (run_dir / "summary.json").write_text(json.dumps(numbers, indent=2))
    rows = "\n".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in numbers.items())
    figures = []
    for name, path in paths.items():
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        figures.append(
            f'<figure><img alt="{name}" src="data:image/png;base64,{data}">'
            f'<figcaption><a href="{path.name}">{path.name}</a></figcaption></figure>'
        )
    clip = _clip_html(run_dir, getattr(history, "clip", {}))
    config = html.escape(cfg.to_json() if hasattr(cfg, "to_json") else json.dumps(cfg, default=str))
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>prefrl report — {html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; }} th, td {{ padding: 2px 10px; border-bottom: 1px solid #ddd; text-align: left; }}
figure {{ display: inline-block; margin: 8px; }} img {{ max-width: 520px; }}
pre {{ background: #f6f6f6; padding: 8px; overflow-x: auto; font-size: 12px; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Learning from comparisons alone (Christiano et al. 2017): the agent never sees the env reward;
the teacher compares pairs of segments, a reward ensemble is fitted to the comparisons, and PPO
optimises the learned reward. The true return below is measured with the hidden env reward.</p>
<h2>Summary</h2>
{warning}<table>{rows}</table>
<h2>Final policy</h2>
{clip}
<h2>Charts</h2>
{"".join(figures)}
<h2>Configuration</h2>
<pre>{config}</pre>
</body></html>
"""
    out = run_dir / REPORT_NAME
    out.write_text(page, encoding="utf-8")
    return out
