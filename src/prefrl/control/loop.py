"""The preference loop of Christiano et al. 2017 for Gymnasium agents: collect → ask → learn.

1. **Collect** — the policy optimiser runs the policy on vectorised envs; the env reward is
   hidden from the learner (kept only for synthetic teachers and evaluation). Every reward-model
   member scores every step once, in one batched call (the policy's reward, and each segment's
   cached scores for query selection). The rollout is cut into segments that go into a rolling
   in-memory pool.
2. **Ask** — ``LabelSchedule`` says how many queries are due; the selector picks them among
   ``candidate_factor``× random pairs of the pool by ensemble disagreement; the two segments
   and the query go into the store, and the store's queue is pumped through the run's one
   teacher (:func:`~prefrl.teachers.queue.answer_queries`) — people answer the same queue in
   the web app. A quarter of the labels are asked up front on segments of the untrained
   policy (the paper's §2.2, App. A).
3. **Learn** — the reward ensemble retrains on the store's comparisons every round, and the
   optimiser updates on the rollout's T×N rewards scored at collection.

Beside it: ``run_state`` (counters, history, checkpoints), ``learned_reward``, ``presets`` (``demo_config``,
the Atari preset), ``evaluation`` (deterministic evaluations, the final clip), ``baseline`` (the true-reward
run), ``workers`` (``asynchronous=True``), ``optimizers`` (PPO / SB3).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from prefrl.control import run_state
from prefrl.control.checkpoint import load_checkpoint, save_checkpoint
from prefrl.control.config import ControlConfig
from prefrl.control.envs import env_dt
from prefrl.control.evaluation import evaluate_now, evaluation_due, record_final_clip
from prefrl.control.learned_reward import LearnedReward
from prefrl.control.rollout import Rollout
from prefrl.control.segments import SegmentPool, cut_segments, resolve_segment_steps
from prefrl.data.types import Segment
from prefrl.utils.files import remove_stale_tmp

__all__ = ["PreferenceLoop", "train", "resume"]


class PreferenceLoop:
    """Builds every piece of a run from a ``ControlConfig`` and runs collect → ask → learn.

    ``PreferenceLoop(cfg).run()`` starts a run, ``PreferenceLoop.resume(run_dir).run()`` continues
    one. ``teacher`` replaces the one ``cfg.teacher`` names (any :class:`~prefrl.teachers.Teacher`).
    """

    def __init__(self, cfg: ControlConfig, *, teacher: Any = None, _resume_state: dict[str, Any] | None = None) -> None:
        from prefrl.control.optimizers import build_optimizer
        from prefrl.data.store import PreferenceStore
        from prefrl.reward.schedule import LabelSchedule
        from prefrl.reward.select import make_selector
        from prefrl.teachers.factory import build_teacher

        self.cfg = cfg
        resuming = _resume_state is not None
        run_dir = Path(cfg.run_dir) if cfg.run_dir else run_state.default_run_dir(cfg)
        if not resuming and run_dir.exists() and any(run_dir.iterdir()):
            raise ValueError(f"run directory {run_dir} already exists and is not empty; resume it with --resume {run_dir}")

        # Build everything that can fail on bad input *before* writing to the run directory.
        env_seed = cfg.seed + (1000 * _resume_state["counters"].iteration if resuming else 0)
        self.agent = build_optimizer(cfg, seed=env_seed)
        self.segment_steps = cfg.segment_steps or resolve_segment_steps(env_dt(self.agent.envs), cfg.segment_seconds)
        if self.segment_steps > cfg.rollout_steps:
            raise ValueError(f"segment_steps ({self.segment_steps}) must fit in one rollout of {cfg.rollout_steps} steps")
        run_state.check_label_budget(cfg, self.segment_steps)
        self.rng = np.random.default_rng(cfg.seed)
        self.reward = LearnedReward(cfg, self.agent.obs_space, self.agent.action_space)
        if cfg.actors:  # collect in an actor process while this one learns (control/actor.py)
            from prefrl.control.actor import ActorAgent

            self.agent = ActorAgent(self.agent, cfg, env_seed, self.reward, lambda: self.counters.reward_rounds)
        self.ensemble, self.train_ensemble, self.trainer = self.reward.ensemble, self.reward.train_ensemble, self.reward.trainer
        self.selector = make_selector(cfg.selector, np.random.default_rng(cfg.seed + 2))
        # The last ask happens after the last full rollout, so the whole budget is due by then.
        self.schedule = LabelSchedule(cfg.labels, cfg.n_rollouts * cfg.steps_per_rollout, initial_fraction=cfg.initial_fraction)

        run_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir, self.cfg.run_dir = run_dir, str(run_dir)
        self.store = run_state.open_store(PreferenceStore, cfg.store or str(run_dir / run_state.STORE_NAME))
        self.teacher = teacher or build_teacher(
            cfg.teacher, np.random.default_rng(cfg.seed + 3), self.store, judge=cfg.judge, **cfg.teacher_kwargs
        )
        if not resuming:
            (run_dir / run_state.CONFIG_NAME).write_text(cfg.to_json())

        self.pool = SegmentPool(cfg.pool_size)
        self.counters = run_state.LoopCounters()
        self.history = run_state.History()
        self.tracker = run_state.EpisodeTracker(cfg.n_envs)
        self.reward_metrics: dict[str, float] = {}
        self._segment_cache: dict[int, Segment] = {}  # the store's labelled segments, decoded once
        self._last_ckpt = time.monotonic()
        if resuming:
            run_state.restore_loop_state(self, _resume_state)

    @classmethod
    def resume(cls, run_dir: str | Path, **overrides: Any) -> PreferenceLoop:
        """Rebuild a run from ``RUN_DIR/config.json`` and continue from its checkpoint."""
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise ValueError(f"run directory {run_dir} does not exist")
        cfg = dataclasses.replace(run_state.load_run_config(run_dir), run_dir=str(run_dir), **overrides)
        state = load_checkpoint(run_dir)  # raises CheckpointError before anything is touched
        remove_stale_tmp(run_dir)  # a kill during an atomic write leaves .NAME.*.tmp behind
        return cls(cfg, _resume_state=state)

    def checkpoint(self) -> Path:
        """Write ``RUN_DIR/checkpoint.pt`` atomically (under the locks in async mode)."""
        with self.reward.train_lock, self.reward.lock:
            path = save_checkpoint(self.run_dir, run_state.loop_state(self))
        self._last_ckpt = time.monotonic()
        return path

    def _checkpoint_if_due(self) -> None:
        if time.monotonic() - self._last_ckpt >= 60.0 * self.cfg.checkpoint_minutes:
            self.checkpoint()

    # ------------------------------------------------------------------ collect

    def collect(self) -> tuple[Rollout, list[tuple[int, float]], np.ndarray, dict[str, float]]:
        """One rollout with the current policy, scored once by the reward model; its segments go into the pool.

        Returns the rollout, the episodes it ended, the policy's reward (T, N) and its gold-vs-proxy
        metrics. Every member scores every step here, once: the policy's reward is the mean of those
        scores and each segment keeps its slice for query selection (``Segment.member_rewards``), so
        neither runs the reward networks again. The policy therefore optimises the reward model of
        collection time (one reward round behind the round that follows this ask; the paper trains
        its reward predictor asynchronously, so its policy's reward always lags). Query selection reuses
        a segment's scores for ``cfg.score_reuse_rounds`` reward rounds (0: while the model is unchanged).
        """
        rollout = self.agent.collect(self.cfg.rollout_steps)
        member_raw, rewards, proxy_metrics = self.reward.predict(rollout)  # (M, T, N), (T, N)
        true_rewards, dones = np.asarray(rollout.true_rewards), np.asarray(rollout.dones)
        finished = self.tracker.update(true_rewards, dones, self.counters.global_step)
        self.history.episodes.extend(finished)
        self.counters.global_step += true_rewards.size
        scored_round = self.counters.reward_rounds if rollout.reward_round is None else rollout.reward_round
        segments = cut_segments(rollout, self.segment_steps, env_id=self.cfg.env_id, policy_version=self.counters.iteration,
                                rng=self.rng, member_rewards=member_raw, reward_round=scored_round)  # fmt: skip
        self.pool.extend(segments)
        return rollout, finished, rewards, proxy_metrics

    # ------------------------------------------------------------------ ask

    def ask(self, n_queries: int) -> int:
        """Post ``n_queries`` queries chosen by the selector among ``candidate_factor``× pairs."""
        if n_queries <= 0 or len(self.pool) < 2:
            return 0
        candidates = self._unasked(self.pool.candidate_pairs(n_queries * self.cfg.candidate_factor, self.rng))
        if not candidates:
            return 0
        n = min(n_queries, len(candidates))
        pairs = [candidates[i] for i in self.reward.select(self.selector, candidates, n, self.counters.reward_rounds)]
        new = list({id(s): s for pair in pairs for s in pair if s.id is None}.values())
        for seg, seg_id in zip(new, self.store.add_segments(new) if new else []):
            seg.id = int(seg_id)
        for left, right in pairs:
            self.store.add_query(left_id=left.id, right_id=right.id, priority=float(self.counters.iteration))
        self.counters.queries_posted += len(pairs)
        return len(pairs)

    def queue_shortfall(self) -> int:
        """Queries to post ahead of the schedule so that ``human_queue_ahead`` wait for people (``teacher=human``)."""
        if self.cfg.teacher != "human" or self.cfg.human_queue_ahead <= 0:
            return 0  # a synthetic teacher answers at once: posting early would only spend the budget early
        pending = self.store.count_queries(status="pending")
        return min(self.cfg.human_queue_ahead - pending, self.cfg.labels - self.counters.queries_posted)

    def _unasked(self, candidates: list[tuple[Segment, Segment]]) -> list[tuple[Segment, Segment]]:
        """``candidates`` without repeats and without pairs already in the store's queue (either order):
        a label spent twice on one pair is a label lost, and the pool is small enough to repeat pairs."""

        def key(left: Segment, right: Segment) -> frozenset:
            return frozenset((("db", s.id) if s.id is not None else ("new", id(s))) for s in (left, right))

        seen = {frozenset((("db", q.left_id), ("db", q.right_id))) for q in self.store.queries() if q.left_id is not None}
        out = []
        for left, right in candidates:
            k = key(left, right)
            if k not in seen:
                seen.add(k)
                out.append((left, right))
        return out

    def answer_pending(self) -> int:
        """Pump the store's queue through the run's teacher; the number of answers it gave."""
        from prefrl.teachers.queue import answer_queries

        return answer_queries(self.store, self.teacher, lease_seconds=self.cfg.lease_seconds, env_id=self.cfg.env_id)

    # ------------------------------------------------------------------ learn

    def training_pairs(self) -> list[tuple[Segment, Segment, float]]:
        """The store's answered segment comparisons of this env (incomparable ones excluded).

        Segments are decoded once and kept (``_segment_cache``): every round reads the comparisons, only
        new segments' frames (≈ 0.7 MB each on Atari; decoding all of them every round grew with the labels)."""
        pairs = self.store.training_pairs(segment_cache=self._segment_cache)
        return [p for p in pairs if p[0].env_id == self.cfg.env_id]

    def train_reward(self) -> dict[str, float]:
        """One reward round on every comparison so far (the policy's ensemble gets the new weights).

        With SURF switched on the round also fits pseudo-labelled and cropped pairs
        (:func:`~prefrl.reward.semi_supervised.surf_pairs`); an off-policy optimiser then has its
        replay buffer relabelled by the new ensemble (PEBBLE).
        """
        from prefrl.control.optimizers import Relabelling
        from prefrl.reward.semi_supervised import surf_pairs

        pairs = self.training_pairs()
        if not pairs:
            return {}
        cfg = self.cfg
        extra = surf_pairs(pairs, self.pool.candidate_pairs(4 * len(pairs), self.rng), self.ensemble, self.rng,
                           cfg.pseudo_label_threshold or None, cfg.crop_fraction or None) if cfg.pseudo_label_threshold or cfg.crop_fraction else []  # fmt: skip
        self.reward_metrics = self.reward.train(pairs, self.counters, extra)
        if isinstance(self.agent, Relabelling):
            self.agent.relabel(self.reward.rewards)
        return self.reward_metrics

    # ------------------------------------------------------------------ the run

    def pretrain(self, sink: Any = None) -> None:
        """PEBBLE's unsupervised phase: ``cfg.pretrain_steps`` env steps on the state-entropy reward.

        Its segments fill the pool, so the up-front queries compare the diverse behaviours it found.
        """
        while self.counters.global_step < self.cfg.pretrain_steps:
            rollout, *_ = self.collect()
            self.agent.pretrain_update(rollout)
            if sink is not None and sink.bar is not None:
                sink.bar.update(self.cfg.steps_per_rollout)
            self._checkpoint_if_due()  # a long unsupervised phase resumes where it stopped

    def initial_labels(self, sink: Any = None) -> None:
        """The paper's up-front labels on segments of the untrained policy.

        Rollouts of the initial policy fill the pool (their steps count toward the budget but
        train nothing), for at most ``initial_fraction`` of the run's steps (after pre-training),
        then ``labels_due(0)`` queries are asked and answered and the reward model gets its first
        round. (Uncapped, a Hopper run whose untrained episodes end before one segment fits spent
        its whole budget here and never trained the policy.)
        """
        cfg = self.cfg
        due = min(self.schedule.labels_due(0), cfg.labels)
        if due > 0:
            # Enough segments that the 10× candidates are mostly distinct pairs.
            want = min(cfg.pool_size, max(2 * due, 2 * cfg.candidate_factor))
            stop = cfg.pretrain_steps + max(cfg.steps_per_rollout, int(cfg.initial_fraction * cfg.steps))
            while (len(self.pool) < want and self.counters.global_step < stop
                   and self.counters.global_step + cfg.steps_per_rollout < cfg.steps):  # fmt: skip
                self._collect_untrained(sink)
            if len(self.pool) < 2:
                self._collect_untrained(sink)
            self.ask(due - self.counters.queries_posted)
            self.answer_pending()
            self.train_reward()
        self.counters.initial_done = True

    def _collect_untrained(self, sink: Any) -> None:
        self.collect()
        if sink is not None and sink.bar is not None:
            sink.bar.update(self.cfg.steps_per_rollout)

    def run(self) -> Path:
        """Train to ``cfg.steps`` env steps, checkpointing every ``checkpoint_minutes``; write the report."""
        from prefrl.control.workers import BackgroundWorkers
        from prefrl.utils.metrics import MetricsSink

        cfg = self.cfg
        actor = self.agent if cfg.actors else None  # actors=1: the ActorAgent's process
        if actor is not None:
            actor.start()  # forked before the sink's and the workers' threads exist
        sink = MetricsSink(self.run_dir / "tb", self.run_dir / "metrics.jsonl", total=cfg.steps if cfg.progress else None,
                           initial=self.counters.global_step, desc="control", postfix=("charts/true_return", "reward/accuracy"))  # fmt: skip
        workers = BackgroundWorkers(self) if cfg.asynchronous else None
        session_start, elapsed_before = time.monotonic(), self.counters.elapsed_seconds
        try:
            if not self.counters.initial_done:
                self.checkpoint()  # a run stopped before its first label round resumes instead of being lost
                self.pretrain(sink)
                self.initial_labels(sink)
                self.checkpoint()
            if workers is not None:
                workers.start()
            while self.counters.global_step + cfg.steps_per_rollout <= cfg.steps:
                t0 = time.monotonic()
                rollout, finished, rewards, proxy_metrics = self.collect()  # collect (and score: rewards (T, N))
                due = min(self.schedule.labels_due(self.counters.global_step), cfg.labels) - self.counters.queries_posted
                self.ask(max(due, self.queue_shortfall()))  # ask
                if workers is None:  # learn (in the background when asynchronous)
                    self.answer_pending()
                    self.train_reward()
                opt_metrics = self.agent.update(rollout, rewards)
                self.counters.iteration += 1
                self.counters.elapsed_seconds = elapsed_before + time.monotonic() - session_start
                sps = cfg.steps_per_rollout / max(time.monotonic() - t0, 1e-9)
                self.history.iterations.append(run_state.log_iteration(self, sink, finished, {**proxy_metrics, **opt_metrics, "charts/sps": sps}))
                if evaluation_due(cfg, len(self.history.evaluations), self.counters.global_step):
                    evaluate_now(self)
                self._checkpoint_if_due()
        finally:
            if workers is not None:
                workers.stop()
            if actor is not None:
                actor.close()
            if sink.bar is not None:
                sink.bar.close()
                sink.bar = None
        self._finish(sink)
        sink.close()
        return self.run_dir

    def _finish(self, sink: Any) -> None:
        from prefrl.control.baseline import run_true_reward_ppo

        cfg = self.cfg
        deadline = time.monotonic() + cfg.human_wait_seconds  # answers people still owe
        while time.monotonic() < deadline and self.store.count_queries(status="pending") > 0:
            time.sleep(min(1.0, max(deadline - time.monotonic(), 0.0)))
        self.answer_pending()
        if self.reward.n_trained_pairs != len(self.training_pairs()):
            self.train_reward()
        self.history.segment_returns = self.reward.segment_returns(self.pool.segments())
        evals = self.history.evaluations
        if cfg.eval_episodes > 0 and (not evals or evals[-1][0] != self.counters.global_step):
            evaluate_now(self)  # the curve ends at the final policy
        if not self.history.clip:
            self.history.clip = record_final_clip(self)
        if cfg.true_reward_baseline and not self.history.baseline_episodes:
            self.history.baseline_episodes = run_true_reward_ppo(cfg, sink=sink)
        self.checkpoint()
        run_state.write_run_outputs(self)


def train(cfg: ControlConfig) -> Path:
    """Run a new preference run; returns its run directory (with report.html)."""
    return PreferenceLoop(cfg).run()


def resume(run_dir: str | Path, **overrides: Any) -> Path:
    """Continue a checkpointed run to its configured number of steps."""
    return PreferenceLoop.resume(run_dir, **overrides).run()
