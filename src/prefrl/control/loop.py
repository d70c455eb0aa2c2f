"""The preference loop of Christiano et al. 2017 for Gymnasium agents: collect → ask → learn.

1. **Collect** — ``PPOAgent.collect`` runs the policy on vectorised envs; the env reward is
   hidden from the learner (kept only for the synthetic teacher and evaluation). The rollout
   is cut into segments that go into a rolling in-memory pool.
2. **Ask** — ``LabelSchedule`` says how many queries are due; the selector picks them among
   ``candidate_factor``× random pairs of the pool by ensemble disagreement; the two segments
   and the query go into the store. Every teacher answers through the store's query queue:
   a synthetic teacher is a labeller that leases queries and answers them; ``human`` only
   posts them and people answer in the web app. A quarter of the labels are asked up
   front on segments of the untrained policy (the paper's §2.2, App. A).
3. **Learn** — the reward ensemble retrains on the store's comparisons every round, the
   rollout's T×N rewards are predicted in one batched call, and PPO updates on them.

``asynchronous=True`` runs reward training and the synthetic labeller in background threads;
the policy's copy of the ensemble is refreshed under a lock after every reward round.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prefrl.control.checkpoint import (
    CheckpointError,
    load_checkpoint,
    restore_rng_states,
    rng_states,
    save_checkpoint,
)
from prefrl.control.config import ControlConfig, control_ppo_config
from prefrl.control.segments import SegmentPool, cut_segments, resolve_segment_steps
from prefrl.data.types import Segment

CONFIG_NAME = "config.json"
HISTORY_NAME = "history.json"
STORE_NAME = "preferences.sqlite"


# ----------------------------------------------------------------------------- bookkeeping


@dataclass
class LoopCounters:
    """What a resume must continue from (saved in every checkpoint)."""

    global_step: int = 0
    """Env steps collected so far (all envs)."""
    iteration: int = 0
    """PPO updates done (= policy version of the next rollout)."""
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
    """Per PPO iteration: step, labels, answered, reward metrics, PPO metrics."""
    baseline_episodes: list[tuple[int, float]] = field(default_factory=list)
    """Same as ``episodes`` for PPO on the true reward (``true_reward_baseline``)."""
    segment_returns: list[tuple[float, float]] = field(default_factory=list)
    """(predicted, true) returns of held-out pool segments at the end of the run."""


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


def _np(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


# ----------------------------------------------------------------------------- teacher seam


def drain_queries(
    store: Any,
    teacher: Any,
    labeller: str,
    *,
    lease_seconds: float = 60.0,
    limit: int | None = None,
    env_id: str | None = None,
) -> int:
    """Answer queries from the store's queue as ``labeller`` — how a synthetic teacher labels.

    The same path people take in the web app: ``lease_query`` → ``teacher.answer`` →
    ``answer_query``, one query at a time (a labeller holds one lease at a time). Queries of
    text pairs or of another env's segments are released untouched and end the drain.
    Returns the number of answers given.
    """
    answered = 0
    teacher_name = str(getattr(teacher, "name", labeller))
    while limit is None or answered < limit:
        query = store.lease_query(labeller, lease_seconds=lease_seconds)
        if query is None:
            break
        if query.left_id is None or query.right_id is None:
            store.release_query(query.id, labeller)
            break
        left, right = store.get_segments([query.left_id, query.right_id])
        if env_id is not None and left.env_id != env_id:
            store.release_query(query.id, labeller)
            break
        (mu,) = teacher.answer([(left, right)])
        store.answer_query(query.id, labeller, mu, teacher=teacher_name)
        answered += 1
    return answered


# ----------------------------------------------------------------------------- the loop


class PreferenceLoop:
    """Builds every piece of a run from a ``ControlConfig`` and runs collect → ask → learn.

    Use ``PreferenceLoop(cfg).run()`` for a new run and ``PreferenceLoop.resume(run_dir).run()``
    to continue a checkpointed one.
    """

    def __init__(self, cfg: ControlConfig, *, _resume_state: dict[str, Any] | None = None) -> None:
        from prefrl.control.envs import make_vec_env
        from prefrl.control.optimizer import PPOAgent
        from prefrl.data.store import PreferenceStore
        from prefrl.reward.ensemble import RewardEnsemble
        from prefrl.reward.schedule import LabelSchedule
        from prefrl.reward.select import make_selector
        from prefrl.reward.trainer import RewardTrainer

        self.cfg = cfg
        resuming = _resume_state is not None
        run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg)
        if not resuming and run_dir.exists() and any(run_dir.iterdir()):
            raise ValueError(f"run directory {run_dir} already exists and is not empty; resume it with --resume {run_dir}")

        # Build everything that can fail on bad input *before* writing to the run directory.
        env_seed = cfg.seed + (1000 * _resume_state["counters"].iteration if resuming else 0)
        self.envs = make_vec_env(
            cfg.env_id, cfg.n_envs, env_seed, fixed_horizon=cfg.fixed_horizon, drop_ctrl_cost=cfg.drop_ctrl_cost
        )
        obs_space, act_space = self.envs.single_observation_space, self.envs.single_action_space
        self.segment_steps = cfg.segment_steps or resolve_segment_steps(_env_dt(self.envs), cfg.segment_seconds)
        if self.segment_steps > cfg.ppo.num_steps:
            raise ValueError(f"segment_steps ({self.segment_steps}) must fit in one rollout of {cfg.ppo.num_steps} steps")
        self.rng = np.random.default_rng(cfg.seed)
        torch.manual_seed(cfg.seed)
        self.agent = PPOAgent(self.envs, cfg.ppo, cfg.seed)

        action_dim = int(act_space.n) if hasattr(act_space, "n") else None
        self.ensemble = RewardEnsemble(
            obs_shape=tuple(obs_space.shape),
            act_shape=tuple(act_space.shape),
            n_members=cfg.reward_members,
            hidden=cfg.reward_hidden,
            action_dim=action_dim,
            seed=cfg.seed,
        )
        # The policy reads rewards from its own copy; in async mode the trainer's copy is
        # copied over under ``self.lock`` after every reward round.
        self.train_ensemble = copy.deepcopy(self.ensemble) if cfg.asynchronous else self.ensemble
        self.trainer = RewardTrainer(self.train_ensemble, cfg.reward, np.random.default_rng(cfg.seed + 1))
        self.selector = make_selector(cfg.selector, np.random.default_rng(cfg.seed + 2))
        # The last ask happens after the last full rollout, so the whole budget is due by then.
        self.schedule = LabelSchedule(
            cfg.labels, cfg.n_rollouts * cfg.steps_per_rollout, initial_fraction=cfg.initial_fraction
        )
        self.teacher = None
        if cfg.teacher != "human":
            from prefrl.teachers.synthetic import make_teacher

            self.teacher = make_teacher(cfg.teacher, np.random.default_rng(cfg.seed + 3), **cfg.teacher_kwargs)
        self.labeller = f"synthetic-{cfg.teacher}"

        run_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir = run_dir
        self.cfg.run_dir = str(run_dir)
        store_url = cfg.store or str(run_dir / STORE_NAME)
        self.store = PreferenceStore(store_url)
        if not resuming:
            (run_dir / CONFIG_NAME).write_text(cfg.to_json())

        self.pool = SegmentPool(cfg.pool_size)
        self.counters = LoopCounters()
        self.history = History()
        self.tracker = EpisodeTracker(cfg.n_envs)
        self.lock = threading.Lock()  # guards the policy's ensemble
        self.train_lock = threading.Lock()  # held for a whole reward round (trainer + its ensemble)
        self.reward_metrics: dict[str, float] = {}
        self._last_ckpt = time.monotonic()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._n_trained_pairs = -1
        self._new_episodes: list[tuple[int, float]] = []
        if resuming:
            self._load_state(_resume_state)

    # ------------------------------------------------------------------ construction helpers

    @classmethod
    def resume(cls, run_dir: str | Path, **overrides: Any) -> PreferenceLoop:
        """Rebuild a run from ``RUN_DIR/config.json`` and continue from its checkpoint."""
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise ValueError(f"run directory {run_dir} does not exist")
        cfg = load_run_config(run_dir)
        cfg = dataclasses.replace(cfg, run_dir=str(run_dir), **overrides)
        state = load_checkpoint(run_dir)  # raises CheckpointError before anything is touched
        return cls(cfg, _resume_state=state)

    def _state(self) -> dict[str, Any]:
        return {
            "agent": self.agent.state_dict(),
            "ensemble": self.ensemble.state_dict(),
            "train_ensemble": self.train_ensemble.state_dict(),
            "trainer": self.trainer.state_dict() if hasattr(self.trainer, "state_dict") else None,
            "counters": self.counters,
            "history": self.history,
            "pool": self.pool.state(),
            "rng": rng_states(self.rng),
            "component_rngs": {name: obj.rng.bit_generator.state for name, obj in self._rng_owners().items()},
            "reward_metrics": dict(self.reward_metrics),
            "segment_steps": self.segment_steps,
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        try:
            self.agent.load_state_dict(state["agent"])
            self.ensemble.load_state_dict(state["ensemble"])
            self.train_ensemble.load_state_dict(state["train_ensemble"])
            if state.get("trainer") is not None and hasattr(self.trainer, "load_state_dict"):
                self.trainer.load_state_dict(state["trainer"])
            self.counters = state["counters"]
            self.history = state["history"]
            self.pool.load_state(state["pool"])
            restore_rng_states(self.rng, state["rng"])
            owners = self._rng_owners()
            for name, rng_state in state.get("component_rngs", {}).items():
                if name in owners:
                    owners[name].rng.bit_generator.state = rng_state
            self.reward_metrics = dict(state.get("reward_metrics", {}))
            if self.cfg.store is None:
                # The run's own store may hold queries posted after the last checkpoint (killed
                # between ask and checkpoint): count them so that no label is asked twice.
                self.counters.queries_posted = max(self.counters.queries_posted, self.store.count_queries())
        except (KeyError, RuntimeError, TypeError, AttributeError, ValueError) as e:
            raise CheckpointError(f"checkpoint in {self.run_dir} does not fit this run: {type(e).__name__}: {e}") from e

    def _rng_owners(self) -> dict[str, Any]:
        """Selector and teacher generators (the trainer saves its own in ``state_dict``)."""
        owners = {"selector": self.selector, "teacher": self.teacher}
        return {k: v for k, v in owners.items() if isinstance(getattr(v, "rng", None), np.random.Generator)}

    def checkpoint(self) -> Path:
        """Write ``RUN_DIR/checkpoint.pt`` atomically (under the lock in async mode)."""
        with self.train_lock, self.lock:
            path = save_checkpoint(self.run_dir, self._state())
        self._last_ckpt = time.monotonic()
        return path

    # ------------------------------------------------------------------ collect

    def collect(self) -> Any:
        """One rollout with the current policy; its segments go into the pool."""
        rollout = self.agent.collect(self.cfg.ppo.num_steps)
        true_rewards, dones = _np(rollout.true_rewards), _np(rollout.dones)
        self._new_episodes = self.tracker.update(true_rewards, dones, self.counters.global_step)
        self.history.episodes.extend(self._new_episodes)
        self.counters.global_step += true_rewards.size
        self.pool.extend(
            cut_segments(
                rollout,
                self.segment_steps,
                env_id=self.cfg.env_id,
                policy_version=self.counters.iteration,
                rng=self.rng,
            )
        )
        return rollout

    # ------------------------------------------------------------------ ask

    def ask(self, n_queries: int) -> int:
        """Post ``n_queries`` queries chosen by the selector among ``candidate_factor``× pairs."""
        if n_queries <= 0 or len(self.pool) < 2:
            return 0
        candidates = self.pool.candidate_pairs(n_queries * self.cfg.candidate_factor, self.rng)
        with self.lock:
            chosen = list(self.selector.select(candidates, n_queries, self.ensemble))[:n_queries]
        pairs = [candidates[i] for i in chosen]
        new = {id(s): s for pair in pairs for s in pair if s.id is None}
        if new:
            ids = self.store.add_segments(list(new.values()))
            for seg, seg_id in zip(new.values(), ids):
                seg.id = int(seg_id)
        for left, right in pairs:
            self.store.add_query(left_id=left.id, right_id=right.id, priority=float(self.counters.iteration))
        self.counters.queries_posted += len(pairs)
        return len(pairs)

    def answer_pending(self) -> int:
        """Synchronous labelling: the synthetic teacher drains the queue (no-op for ``human``)."""
        if self.teacher is None:
            return 0
        return drain_queries(
            self.store, self.teacher, self.labeller, lease_seconds=self.cfg.lease_seconds, env_id=self.cfg.env_id
        )

    # ------------------------------------------------------------------ learn

    def training_pairs(self) -> list[tuple[Segment, Segment, float]]:
        """The store's answered segment comparisons of this env (incomparable ones excluded)."""
        return [p for p in self.store.training_pairs() if p[0].env_id == self.cfg.env_id]

    def train_reward(self) -> dict[str, float]:
        """One reward round on every comparison so far; copies weights to the policy's ensemble."""
        pairs = self.training_pairs()
        if not pairs:
            return {}
        with self.train_lock:
            metrics = self.trainer.train(pairs)
            self._n_trained_pairs = len(pairs)
            if self.train_ensemble is not self.ensemble:
                weights = copy.deepcopy(self.train_ensemble.state_dict())
                with self.lock:
                    self.ensemble.load_state_dict(weights)
            self.counters.reward_rounds += 1
        self.reward_metrics = {k: float(v) for k, v in metrics.items()}
        return self.reward_metrics

    def predict_rewards(self, rollout: Any) -> np.ndarray:
        """r̂ for every step of the rollout, in one batched call: (T, N)."""
        obs, actions = _np(rollout.obs), _np(rollout.actions)
        t_len, n_envs = obs.shape[:2]
        flat_obs = obs.reshape(t_len * n_envs, *obs.shape[2:])  # (T·N, *obs_shape)
        flat_act = actions.reshape(t_len * n_envs, *actions.shape[2:])  # (T·N, *act_shape)
        # The ensemble is already normalised (mean 0, std 1 per member) over the recent labelled
        # segments by the trainer; re-normalising per rollout would erase progress between rollouts.
        with self.lock:
            members = self.ensemble.predict_members(flat_obs, flat_act)  # (M, T·N)
        rewards = members.mean(axis=0)  # (T·N,) the ensemble prediction
        self._proxy_metrics = _proxy_vs_true(members, _np(rollout.true_rewards).reshape(-1))
        return np.asarray(rewards, dtype=np.float32).reshape(t_len, n_envs)

    # ------------------------------------------------------------------ async workers

    def _reward_worker(self) -> None:
        while not self._stop.is_set():
            n_pairs = len(self.training_pairs())
            if n_pairs == 0:
                self._stop.wait(0.2)
                continue
            self.train_reward()
            self._stop.wait(0.05)  # leave the GIL to the collecting thread between rounds

    def _teacher_worker(self) -> None:
        while not self._stop.is_set():
            if self.answer_pending() == 0:
                self._stop.wait(0.1)

    def _start_workers(self) -> None:
        self._stop.clear()
        self._threads = [threading.Thread(target=self._reward_worker, name="reward-trainer", daemon=True)]
        if self.teacher is not None:
            self._threads.append(threading.Thread(target=self._teacher_worker, name="teacher", daemon=True))
        for t in self._threads:
            t.start()

    def _stop_workers(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()
        self._threads = []

    # ------------------------------------------------------------------ the run

    def initial_labels(self, progress: Any = None) -> None:
        """The paper's up-front labels on segments of the untrained policy.

        Rollouts of the initial policy fill the pool (their steps count toward the budget but
        train nothing), then ``labels_due(0)`` queries are asked and answered and the reward
        model gets its first round.
        """
        due = min(self.schedule.labels_due(0), self.cfg.labels)
        if due > 0:
            # Enough segments that the 10× candidates are mostly distinct pairs.
            want = min(self.cfg.pool_size, max(2 * due, 2 * self.cfg.candidate_factor))
            while len(self.pool) < want and self.counters.global_step + self.cfg.steps_per_rollout < self.cfg.steps:
                self.collect()
                if progress is not None:
                    progress.update(self.cfg.steps_per_rollout)
            if len(self.pool) < 2:
                self.collect()
                if progress is not None:
                    progress.update(self.cfg.steps_per_rollout)
            self.ask(due - self.counters.queries_posted)
            self.answer_pending()
            self.train_reward()
        self.counters.initial_done = True

    def run(self) -> Path:
        """Train to ``cfg.steps`` env steps, checkpointing every ``checkpoint_minutes``; write the report."""
        from torch.utils.tensorboard import SummaryWriter

        cfg = self.cfg
        writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.counters.global_step or None)
        progress = _progress_bar(cfg, self.counters.global_step)
        session_start = time.monotonic()
        elapsed_before = self.counters.elapsed_seconds
        try:
            if not self.counters.initial_done:
                self.initial_labels(progress)
                self.checkpoint()
            if cfg.asynchronous:
                self._start_workers()
            while self.counters.global_step + cfg.steps_per_rollout <= cfg.steps:
                t0 = time.monotonic()
                # collect
                rollout = self.collect()
                # ask
                due = min(self.schedule.labels_due(self.counters.global_step), cfg.labels) - self.counters.queries_posted
                self.ask(due)
                # learn
                if not cfg.asynchronous:
                    self.answer_pending()
                    self.train_reward()
                rewards = self.predict_rewards(rollout)  # (T, N)
                ppo_metrics = self.agent.update(rollout, rewards)
                self.counters.iteration += 1
                self.counters.elapsed_seconds = elapsed_before + time.monotonic() - session_start
                self._log(writer, progress, rollout, ppo_metrics, sps=cfg.steps_per_rollout / max(time.monotonic() - t0, 1e-9))
                if time.monotonic() - self._last_ckpt >= 60.0 * cfg.checkpoint_minutes:
                    self.checkpoint()
        finally:
            if cfg.asynchronous:
                self._stop_workers()
            progress.close()
        self._finish(writer)
        writer.close()
        return self.run_dir

    def _finish(self, writer: Any) -> None:
        cfg = self.cfg
        if self.teacher is None and cfg.human_wait_seconds > 0:
            deadline = time.monotonic() + cfg.human_wait_seconds
            while time.monotonic() < deadline and self.store.count_queries(status="pending") > 0:
                time.sleep(1.0)
        self.answer_pending()
        if self._n_trained_pairs != len(self.training_pairs()):
            self.train_reward()
        self.history.segment_returns = self._segment_return_scatter()
        self.counters.elapsed_seconds = max(self.counters.elapsed_seconds, 0.0)
        if cfg.true_reward_baseline and not self.history.baseline_episodes:
            self.history.baseline_episodes = run_true_reward_ppo(cfg, writer=writer)
        self.checkpoint()
        (self.run_dir / HISTORY_NAME).write_text(json.dumps(_history_dict(self.history, self.counters), indent=1))
        from prefrl.control.report import write_report

        write_report(self.run_dir, cfg, self.history, self.counters)

    def _segment_return_scatter(self, max_segments: int = 256) -> list[tuple[float, float]]:
        segments = [s for s in self.pool.segments() if s.true_rewards is not None][-max_segments:]
        if not segments:
            return []
        obs = np.stack([s.obs for s in segments])  # (B, T, *obs_shape)
        act = np.stack([s.actions for s in segments])  # (B, T, *act_shape)
        b, t = obs.shape[:2]
        with self.lock:
            pred = self.ensemble.predict(obs.reshape(b * t, *obs.shape[2:]), act.reshape(b * t, *act.shape[2:]))
        pred_returns = np.asarray(pred).reshape(b, t).sum(axis=1)
        return [(float(p), float(s.true_return)) for p, s in zip(pred_returns, segments)]

    def _log(self, writer: Any, progress: Any, rollout: Any, ppo_metrics: dict[str, float], sps: float) -> None:
        step = self.counters.global_step
        answered = self.store.count_comparisons()
        row: dict[str, float] = {
            "step": float(step),
            "labels/total": float(self.counters.queries_posted),
            "labels/answered": float(answered),
            "charts/sps": float(sps),
        }
        recent = [r for _, r in self.history.episodes[-10:]]
        if recent:
            row["charts/true_return"] = float(np.mean(recent))
        row.update(self.reward_metrics)
        row.update(getattr(self, "_proxy_metrics", {}))
        row.update({k: float(v) for k, v in ppo_metrics.items() if _is_number(v)})
        self.history.iterations.append(row)
        for k, v in row.items():
            if k != "step" and math.isfinite(v):
                writer.add_scalar(k, v, step)
        for s, r in self._new_episodes:
            writer.add_scalar("charts/episodic_return", r, s)
        progress.update(self.cfg.steps_per_rollout)
        progress.set_postfix(
            labels=f"{answered}/{self.cfg.labels}",
            acc=f"{self.reward_metrics.get('reward/accuracy', float('nan')):.2f}",
            ret=f"{row.get('charts/true_return', float('nan')):.1f}",
            refresh=False,
        )


# ----------------------------------------------------------------------------- entry points


def train(cfg: ControlConfig) -> Path:
    """Run a new preference run; returns its run directory (with report.html)."""
    return PreferenceLoop(cfg).run()


def resume(run_dir: str | Path, **overrides: Any) -> Path:
    """Continue a checkpointed run to its configured number of steps."""
    return PreferenceLoop.resume(run_dir, **overrides).run()


def run_true_reward_ppo(cfg: ControlConfig, writer: Any = None, tag: str = "baseline/true_return") -> list[tuple[int, float]]:
    """PPO on the true env reward with the same env, steps and seed: the report's reference curve."""
    return train_true_reward_ppo(cfg, writer, tag)[1]


def train_true_reward_ppo(
    cfg: ControlConfig, writer: Any = None, tag: str = "baseline/true_return"
) -> tuple[Any, list[tuple[int, float]]]:
    """:func:`run_true_reward_ppo` that also returns the trained ``PPOAgent`` (for evaluation); its envs are closed."""
    from prefrl.control.envs import make_vec_env
    from prefrl.control.optimizer import PPOAgent

    envs = make_vec_env(cfg.env_id, cfg.n_envs, cfg.seed, fixed_horizon=cfg.fixed_horizon, drop_ctrl_cost=cfg.drop_ctrl_cost)
    agent = PPOAgent(envs, cfg.ppo, cfg.seed)
    tracker = EpisodeTracker(cfg.n_envs)
    episodes: list[tuple[int, float]] = []
    step = 0
    try:
        while step + cfg.steps_per_rollout <= cfg.steps:
            rollout = agent.collect(cfg.ppo.num_steps)
            true_rewards, dones = _np(rollout.true_rewards), _np(rollout.dones)
            finished = tracker.update(true_rewards, dones, step)
            episodes.extend(finished)
            step += true_rewards.size
            agent.update(rollout, true_rewards.astype(np.float32))
            if writer is not None and finished:
                writer.add_scalar(tag, float(np.mean([r for _, r in finished])), step)
    finally:
        envs.close()
    return agent, episodes


def default_run_dir(cfg: ControlConfig) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.env_id.replace('/', '_')}-s{cfg.seed}-{stamp}"


# ----------------------------------------------------------------------------- helpers


def _env_dt(envs: Any) -> float | None:
    """The physical time step of the first sub-env (MuJoCo ``dt``), or None."""
    for getter in (
        lambda: envs.get_attr("dt")[0],
        lambda: envs.envs[0].unwrapped.dt,
    ):
        try:
            dt = getter()
        except Exception:  # noqa: BLE001 - envs without dt (Atari, toy envs)
            continue
        if dt is not None:
            return float(dt)
    return None


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool)


def _progress_bar(cfg: ControlConfig, initial: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=cfg.steps, initial=initial, unit="step", disable=not cfg.progress, dynamic_ncols=True)


def _history_dict(history: History, counters: LoopCounters) -> dict[str, Any]:
    return {
        "counters": counters.__dict__,
        "episodes": history.episodes,
        "baseline_episodes": history.baseline_episodes,
        "iterations": history.iterations,
        "segment_returns": history.segment_returns,
    }


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
    """The run's PPO agent restored from its checkpoint (for evaluation), with its config."""
    from prefrl.control.envs import make_vec_env
    from prefrl.control.optimizer import PPOAgent

    cfg = load_run_config(run_dir)
    state = load_checkpoint(run_dir)
    envs = make_vec_env(cfg.env_id, 1, cfg.seed, fixed_horizon=cfg.fixed_horizon, drop_ctrl_cost=cfg.drop_ctrl_cost)
    agent = PPOAgent(envs, cfg.ppo, cfg.seed)
    try:
        agent.load_state_dict(state["agent"])
    except (KeyError, RuntimeError, TypeError) as e:
        raise CheckpointError(f"checkpoint in {run_dir} does not fit its config: {type(e).__name__}: {e}") from e
    return agent, cfg


def demo_config(run_dir: str | None = None, seed: int = 0, baseline: bool = False, progress: bool = True) -> ControlConfig:
    """What ``make demo`` runs: HalfCheetah-v5 from 400 synthetic comparisons in ≤ 15 min on 2 cores.

    300k env steps (4 envs × 512-step rollouts) is short for PPO, but from preferences alone the
    cheetah goes from a random policy's ≈ −300 to clearly positive true returns.
    """
    from prefrl.reward.trainer import RewardTrainerConfig

    steps = 300_000
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return ControlConfig(
        env_id="HalfCheetah-v5",
        labels=400,
        steps=steps,
        teacher="rational",
        n_envs=4,
        ppo=control_ppo_config(num_steps=512, num_minibatches=32, total_steps=steps),
        # The ensemble is warm-started every round, so a few epochs per round suffice; at 400
        # labels 10 epochs would cost more than collecting and updating together.
        reward=RewardTrainerConfig(epochs=3),
        run_dir=run_dir or str(Path("runs") / f"demo-{stamp}"),
        seed=seed,
        true_reward_baseline=baseline,
        checkpoint_minutes=5.0,
        progress=progress,
    )


def _proxy_vs_true(members: np.ndarray, true_rewards: np.ndarray) -> dict[str, float]:
    """Gold (hidden env reward) vs proxy (learned reward) on the policy's own steps.

    ``reward/ensemble_std`` is the members' disagreement on these samples: where it grows,
    the policy visits states the reward model was not trained on.
    """
    proxy = members.mean(axis=0)
    out = {
        "reward/proxy_mean": float(proxy.mean()),
        "reward/true_mean": float(true_rewards.mean()),
        "reward/ensemble_std": float(members.std(axis=0).mean()) if members.shape[0] > 1 else 0.0,
    }
    if proxy.std() > 0 and true_rewards.std() > 0:
        out["reward/proxy_true_corr"] = float(np.corrcoef(proxy, true_rewards)[0, 1])
    return out
