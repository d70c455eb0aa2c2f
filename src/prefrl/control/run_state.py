"""What a control run persists besides its store: counters, history, the checkpointed state.

``RUN_DIR`` holds ``config.json`` (the :class:`ControlConfig`), ``checkpoint.pt`` (everything
:func:`loop_state` gathers), ``history.json``, ``preferences.sqlite`` (the store) and the report.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from prefrl.control.checkpoint import CheckpointError, load_checkpoint, restore_rng_states, rng_states
from prefrl.control.config import ControlConfig

__all__ = [
    "CONFIG_NAME",
    "HISTORY_NAME",
    "STORE_NAME",
    "LoopCounters",
    "History",
    "EpisodeTracker",
    "loop_state",
    "restore_loop_state",
    "history_dict",
    "check_label_budget",
    "open_store",
    "log_iteration",
    "answer_counts",
    "write_run_outputs",
    "load_run_config",
    "load_agent",
    "default_run_dir",
]

CONFIG_NAME = "config.json"
HISTORY_NAME = "history.json"
STORE_NAME = "preferences.sqlite"


@dataclass
class LoopCounters:
    """What a resume must continue from (saved in every checkpoint)."""

    global_step: int = 0
    """Env steps collected so far (all envs)."""
    iteration: int = 0
    """Policy updates done (= policy version of the next rollout)."""
    queries_posted: int = 0
    """Queries put in the store by this run."""
    reward_rounds: int = 0
    """Reward-training rounds done."""
    initial_done: bool = False
    """The up-front labels on random-policy segments have been asked."""
    elapsed_seconds: float = 0.0
    """Wall-clock time spent in this run over all its sessions."""


@dataclass
class History:
    """Time series for TensorBoard-free reading and the report (saved with the checkpoint)."""

    episodes: list[tuple[int, float]] = field(default_factory=list)
    """(env step, true episode return) of every finished training episode."""
    iterations: list[dict[str, float]] = field(default_factory=list)
    """Per policy update: step, labels, answered, reward metrics, optimiser metrics."""
    baseline_episodes: list[tuple[int, float]] = field(default_factory=list)
    """Same as ``episodes`` for the optimiser on the true reward (``true_reward_baseline``)."""
    segment_returns: list[tuple[float, float]] = field(default_factory=list)
    """(predicted, true) returns of held-out pool segments at the end of the run."""
    evaluations: list[tuple[int, float, float]] = field(default_factory=list)
    """(env step, mean, std) true return of the deterministic policy (``control.evaluation``)."""
    clip: dict[str, Any] = field(default_factory=dict)
    """The final policy's clip: ``path``, ``return``, ``steps`` — or the ``reason`` there is none."""


class EpisodeTracker:
    """Sums true rewards per env across rollouts and emits (step, return) at episode ends."""

    def __init__(self, n_envs: int) -> None:
        self.running = np.zeros(n_envs, dtype=np.float64)

    def update(self, true_rewards: np.ndarray, dones: np.ndarray, start_step: int) -> list[tuple[int, float]]:
        """true_rewards, dones: (T, N); ``dones[t, n]`` ends env n's episode at step t."""
        finished: list[tuple[int, float]] = []
        t_len, n_envs = true_rewards.shape
        for t in range(t_len):
            self.running += true_rewards[t]
            for n in np.flatnonzero(dones[t]):
                finished.append((start_step + (t + 1) * n_envs, float(self.running[n])))
                self.running[n] = 0.0
        return finished


def _rng_owners(loop: Any) -> dict[str, Any]:
    """Selector and teacher generators (the trainer saves its own in ``state_dict``)."""
    owners = {"selector": loop.selector, "teacher": loop.teacher}
    return {k: v for k, v in owners.items() if isinstance(getattr(v, "rng", None), np.random.Generator)}


def loop_state(loop: Any) -> dict[str, Any]:
    """Everything of a :class:`~prefrl.control.loop.PreferenceLoop` a resume needs (the store aside)."""
    return {
        "agent": loop.agent.state_dict(),
        "ensemble": loop.ensemble.state_dict(),
        "train_ensemble": loop.train_ensemble.state_dict(),
        "trainer": loop.trainer.state_dict(),
        "counters": loop.counters,
        "history": loop.history,
        "pool": loop.pool.state(),
        "rng": rng_states(loop.rng),
        "component_rngs": {name: obj.rng.bit_generator.state for name, obj in _rng_owners(loop).items()},
        "teacher_state": loop.teacher.state_dict() if hasattr(loop.teacher, "state_dict") else None,
        "reward_metrics": dict(loop.reward_metrics),
        "segment_steps": loop.segment_steps,
    }


def restore_loop_state(loop: Any, state: dict[str, Any]) -> None:
    """Put :func:`loop_state` back into a freshly built loop; ``CheckpointError`` when it does not fit."""
    try:
        loop.agent.load_state_dict(state["agent"])
        loop.ensemble.load_state_dict(state["ensemble"])
        loop.train_ensemble.load_state_dict(state["train_ensemble"])
        if state.get("trainer") is not None:
            loop.trainer.load_state_dict(state["trainer"])
        loop.counters = state["counters"]
        loop.history = state["history"]
        for name in ("evaluations", "clip"):  # histories checkpointed before these fields existed
            if not hasattr(loop.history, name):
                setattr(loop.history, name, [] if name == "evaluations" else {})
        loop.pool.load_state(state["pool"])
        restore_rng_states(loop.rng, state["rng"])
        owners = _rng_owners(loop)
        for name, rng_state in state.get("component_rngs", {}).items():
            if name in owners:
                owners[name].rng.bit_generator.state = rng_state
        if state.get("teacher_state") is not None and hasattr(loop.teacher, "load_state_dict"):
            loop.teacher.load_state_dict(state["teacher_state"])
        loop.reward_metrics = dict(state.get("reward_metrics", {}))
        if loop.cfg.store is None:
            # The run's own store may hold queries posted after the last checkpoint (killed
            # between ask and checkpoint): count them so that no label is asked twice.
            loop.counters.queries_posted = max(loop.counters.queries_posted, loop.store.count_queries())
    except (KeyError, RuntimeError, TypeError, AttributeError, ValueError) as e:
        raise CheckpointError(f"checkpoint in {loop.run_dir} does not fit this run: {type(e).__name__}: {e}") from e


def answer_counts(store: Any) -> dict[str, int]:
    """Answers in the store: all, ``equal`` (μ = 0.5) and ``incomparable`` (μ = None: skipped or can't tell)."""
    mus = [c.mu for c in store.comparisons(kind="segment")]
    return {"answered": len(mus), "equal": sum(m == 0.5 for m in mus), "incomparable": sum(m is None for m in mus)}


def log_iteration(loop: Any, sink: Any, finished: list[tuple[int, float]], metrics: dict[str, Any]) -> dict[str, float]:
    """One row per policy update to ``sink`` (TensorBoard, ``metrics.jsonl``, the bar); returns it for the history."""
    counts = answer_counts(loop.store)
    answered = counts["answered"]
    row: dict[str, float] = {"labels/total": float(loop.counters.queries_posted), "labels/answered": float(answered),
                             "labels/equal": float(counts["equal"]), "labels/incomparable": float(counts["incomparable"])}  # fmt: skip
    recent = [r for _, r in loop.history.episodes[-10:]]
    if recent:
        row["charts/true_return"] = float(np.mean(recent))
    row["charts/elapsed_seconds"] = float(loop.counters.elapsed_seconds)  # the report's wall-clock axis
    row.update(loop.reward_metrics)
    row.update({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float, np.number)) and not isinstance(v, bool)})
    waiting = loop.store.count_queries(status="pending") + loop.store.count_queries(status="leased")  # not answered yet
    row["labels/waiting"] = float(waiting)
    bar = {"labels": f"{answered}/{loop.cfg.labels}"}
    if waiting:
        bar["waiting"] = str(waiting)
    bar.update({k: str(counts[k]) for k in ("equal", "incomparable") if counts[k]})  # skipped / can't tell
    out = sink.log(row, loop.counters.global_step, advance=loop.cfg.steps_per_rollout, **bar)
    for step, ret in finished:
        sink.scalar("charts/episodic_return", ret, step)
    return out


def check_label_budget(cfg: ControlConfig, segment_steps: int) -> None:
    """``ValueError`` when ``cfg.labels`` exceeds the segments the run will ever collect (it would grind on repeats)."""
    n_segments = cfg.n_rollouts * cfg.n_envs * (cfg.rollout_steps // segment_steps)
    if cfg.labels > n_segments:
        raise ValueError(
            f"labels ({cfg.labels}) exceed the segments this run collects (at most {n_segments} segments of "
            f"{segment_steps} steps in {cfg.steps} env steps): ask for at most {n_segments} labels or run more steps"
        )


def open_store(store_cls: type, url: str) -> Any:
    """The run's ``PreferenceStore``; ``CheckpointError`` naming the file when it is not a readable store."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return store_cls(url)
    except SQLAlchemyError as e:
        reason = str(getattr(e, "orig", None) or e).splitlines()[0]
        raise CheckpointError(f"preference store {url} is corrupted or unreadable: {reason}") from None


def history_dict(history: History, counters: LoopCounters) -> dict[str, Any]:
    """``history.json``: counters and every time series of the run."""
    return {
        "counters": counters.__dict__,
        "episodes": history.episodes,
        "baseline_episodes": history.baseline_episodes,
        "iterations": history.iterations,
        "segment_returns": history.segment_returns,
        "evaluations": history.evaluations,
        "clip": history.clip,
    }


def write_run_outputs(loop: Any) -> None:
    """``history.json`` and the report (``report.html``, its PNGs, ``summary.json``); warns when no reward model was trained."""
    from prefrl.control.report import NO_REWARD_MODEL, write_report

    if loop.counters.reward_rounds == 0:
        warnings.warn(NO_REWARD_MODEL, RuntimeWarning, stacklevel=3)
    (loop.run_dir / HISTORY_NAME).write_text(json.dumps(history_dict(loop.history, loop.counters), indent=1))
    write_report(loop.run_dir, loop.cfg, loop.history, loop.counters, answers=answer_counts(loop.store))


def load_run_config(run_dir: str | Path) -> ControlConfig:
    """The ``ControlConfig`` a run was started with (``RUN_DIR/config.json``)."""
    config_file = Path(run_dir) / CONFIG_NAME
    if not config_file.is_file():
        raise CheckpointError(f"{run_dir} has no {CONFIG_NAME}; is it a prefrl control run?")
    try:
        return ControlConfig.from_dict(json.loads(config_file.read_text()))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{config_file} is corrupted: {e}") from e


def load_agent(run_dir: str | Path) -> tuple[Any, ControlConfig]:
    """The run's policy optimiser restored from its checkpoint (for evaluation), with its config."""
    from prefrl.control.optimizers import build_optimizer

    cfg = load_run_config(run_dir)
    state = load_checkpoint(run_dir)
    agent = build_optimizer(cfg, n_envs=1)
    try:
        agent.load_state_dict(state["agent"])
    except (KeyError, RuntimeError, TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint in {run_dir} does not fit its config: {type(e).__name__}: {e}") from e
    return agent, cfg


def default_run_dir(cfg: ControlConfig) -> Path:
    """``runs/<env>-s<seed>-<UTC time>``."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.env_id.replace('/', '_').replace(':', '_')}-s{cfg.seed}-{stamp}"
