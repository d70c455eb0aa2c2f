"""The measured-best optimiser, PEBBLE and SURF settings for a label budget: the one place that sets them.

Issue #16, item 4: what ``prefrl control train`` does when ``--optimizer`` is not given. A *recipe*
names the optimiser and whether PEBBLE's unsupervised pre-training and SURF's pseudo-labels and
temporal crops are on; :data:`MEASURED_BEST` maps each label budget measured by
``benchmarks/few_labels.py`` (rows in ``benchmarks/results/few_labels.jsonl``, tables in
docs/benchmarks_control.md, "Fewer labels") to the recipe with the best deterministic evaluation
return there; ``tests/control/test_label_defaults.py`` recomputes it from the results file, so this
table cannot drift from the measurements. :func:`recipe_for` picks the nearest measured budget (in
log scale, within a factor √2); other budgets, and environments outside the family the measurements
were made on (Gymnasium's MuJoCo tasks), keep ``ppo``, the long-standing default (700 labels reach
94 % of true-reward PPO on HalfCheetah at 150k steps, ``benchmarks/label_efficiency.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Recipe", "RECIPES", "MEASURED_BEST", "MEASURED_ON", "SURF_THRESHOLD", "SURF_CROP_FRACTION",
           "MEASURED_STEPS", "best_by_budget", "pebble_steps", "recipe_for", "describe"]  # fmt: skip


@dataclass(frozen=True)
class Recipe:
    """An optimiser and the PEBBLE / SURF switches that go with it."""

    optimizer: str
    pebble: bool
    surf: bool


#: The configurations ``benchmarks/few_labels.py`` compares, by name.
RECIPES: dict[str, Recipe] = {"ppo": Recipe("ppo", False, False), "sac": Recipe("sac", False, False),
                              "pebble": Recipe("sac", True, False), "pebble+surf": Recipe("sac", True, True)}  # fmt: skip

#: SURF's settings when a recipe switches it on (Park et al. 2022: τ = 0.99; crops of 90–100 % of a segment).
SURF_THRESHOLD = 0.99
SURF_CROP_FRACTION = 0.9

#: label budget → the recipe measured best at it (mean deterministic eval over the envs measured).
MEASURED_BEST: dict[int, str] = {100: "ppo", 200: "ppo"}

#: The run length (env steps) of the rows :data:`MEASURED_BEST` is chosen from.
MEASURED_STEPS = 20_000

#: What :data:`MEASURED_BEST` rests on (quoted by ``--help``).
MEASURED_ON = ("HalfCheetah-v5 (and Hopper-v5 at 100 labels) at a reduced budget of 20,000 env steps, 1 seed "
               "(benchmarks/few_labels.py, docs/benchmarks_control.md 'Fewer labels')")  # fmt: skip


def best_by_budget(rows: list[dict[str, Any]], steps: int = MEASURED_STEPS) -> dict[int, str]:
    """label budget → the best recipe among ``benchmarks/few_labels.py`` rows of runs of ``steps`` env steps.

    Per env, each recipe's mean deterministic eval return over its seeds is min-max scaled across the
    recipes measured at that budget (1 = best there); the best recipe has the highest summed scaled score
    over the envs that compare at least two recipes, counting only recipes measured on every such env
    (ties: the cheaper recipe, in the order of :data:`RECIPES`).
    """
    out: dict[int, str] = {}
    rows = [r for r in rows if r["steps"] == steps and r["labels"] > 0 and r["config"] in RECIPES]
    for budget in sorted({r["labels"] for r in rows}):
        at = [r for r in rows if r["labels"] == budget]
        envs = sorted(e for e in {r["env"] for r in at} if len({r["config"] for r in at if r["env"] == e}) >= 2)
        envs = envs or sorted({r["env"] for r in at})  # nowhere compared: the one recipe measured, if alone
        names = [n for n in RECIPES if all(any(r["config"] == n and r["env"] == e for r in at) for e in envs)]
        if not names:
            continue
        score = dict.fromkeys(names, 0.0)
        for env in envs:
            means = {n: float(np.mean([r["eval_return"] for r in at if r["config"] == n and r["env"] == env]))
                     for n in names}  # fmt: skip
            lo, hi = min(means.values()), max(means.values())
            for n in names:
                score[n] += (means[n] - lo) / (hi - lo) if hi > lo else 1.0
        out[budget] = max(names, key=lambda n: (score[n], -names.index(n)))
    return out


def pebble_steps(steps: int) -> int:
    """PEBBLE's unsupervised steps for a run of ``steps``: a tenth of it, at most PEBBLE's 10,000."""
    return min(10_000, steps // 10)


def _measured_family(env_id: str) -> bool:
    """Gymnasium's MuJoCo tasks: continuous actions, flat observations, where the recipes were measured."""
    try:
        import gymnasium

        entry = gymnasium.spec(env_id).entry_point
    except Exception:  # an unregistered id fails later, where the env is built, with gymnasium's own message
        return False
    return isinstance(entry, str) and entry.startswith("gymnasium.envs.mujoco")


def recipe_for(env_id: str, labels: int) -> tuple[str, Recipe]:
    """The recipe a run of ``labels`` labels on ``env_id`` gets by default, with its name."""
    if _measured_family(env_id) and MEASURED_BEST:
        nearest = min(MEASURED_BEST, key=lambda b: abs(math.log(labels / b)))
        if abs(math.log(labels / nearest)) <= 0.5 * math.log(2) + 1e-9:
            name = MEASURED_BEST[nearest]
            return name, RECIPES[name]
    return "ppo", RECIPES["ppo"]


def describe() -> str:
    """One line for ``--help``: what the defaults are per budget and where they were measured."""
    lows = [f"{round(b / math.sqrt(2))}–{round(b * math.sqrt(2))} labels: {name}" for b, name in sorted(MEASURED_BEST.items())]
    return (f"Unset: the measured best for --labels on MuJoCo envs ({'; '.join(lows)}; otherwise ppo), "
            f"measured on {MEASURED_ON}; PEBBLE pre-trains min(10,000, steps/10) steps, SURF uses "
            f"τ = {SURF_THRESHOLD} and crops ≥ {SURF_CROP_FRACTION:.0%}.")  # fmt: skip
