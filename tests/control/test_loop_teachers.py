"""One teacher seam: a synthetic teacher, an AI-judge-like teacher and people (HumanTeacher) drive the same loop.

The loop holds one teacher object and never asks its kind; each teacher here answers GoRight
queries its own way — from the hidden reward, from the observations alone (a judge), or through
the store as a person in the web app would (asynchronously, in another thread).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import go_right_env
import numpy as np
import pytest

from prefrl.control.config import ControlConfig
from prefrl.control.loop import PreferenceLoop
from prefrl.data.types import Segment
from prefrl.reward.trainer import RewardTrainerConfig
from prefrl.rl.ppo import PPOConfig
from prefrl.teachers import Teacher, make_teacher
from prefrl.teachers.human import HumanTeacher


def _cfg(tmp_path, **overrides) -> ControlConfig:
    kwargs = dict(
        env_id=go_right_env.ENV_ID, labels=60, steps=128 * 16, segment_steps=10, n_envs=1, pool_size=128,
        reward=RewardTrainerConfig(epochs=5, lr=3e-3), run_dir=str(tmp_path / "run"), seed=0, progress=False,
        ppo=PPOConfig(num_steps=128, num_minibatches=4, update_epochs=10, learning_rate=3e-3), checkpoint_minutes=60.0,
    )  # fmt: skip
    kwargs.update(overrides)
    return ControlConfig(**kwargs)


def _distance(segment: Segment) -> float:
    """How far right a segment ends up: what a judge sees in the clip (x is obs[:, 0])."""
    return float(segment.obs[-1, 0] - segment.obs[0, 0])


class ClipJudge:
    """An AI-judge-like teacher: it looks at the clip (observations), never at the env reward."""

    name = "clip-judge"
    lease_as = "clip-judge"
    compares = "segments"

    def answer(self, pairs: Sequence[tuple[Segment, Segment]]) -> list[float | None]:
        return [1.0 if _distance(a) > _distance(b) else 0.0 for a, b in pairs]


class Person:
    """Someone labelling in the web app: leases queries from the store and answers by watching the clip."""

    def __init__(self, store, name: str = "ann") -> None:
        self.store, self.name, self.stop = store, name, threading.Event()
        self.thread = threading.Thread(target=self._work, daemon=True)

    def _work(self) -> None:
        while not self.stop.is_set():
            query = self.store.lease_query(self.name, lease_seconds=30)
            if query is None:
                self.stop.wait(0.02)
                continue
            left, right = self.store.get_segments([query.left_id, query.right_id])
            self.store.answer_query(query.id, self.name, 1.0 if _distance(left) > _distance(right) else 0.0)


def _mean_return(episodes, first: bool, n: int = 10) -> float:
    chosen = episodes[:n] if first else episodes[-n:]
    return float(np.mean([r for _, r in chosen]))


@pytest.mark.parametrize("kind", ["synthetic", "ai_judge", "human"])
def test_every_kind_of_teacher_drives_the_same_loop(tmp_path, kind):
    if kind == "human":
        cfg = _cfg(tmp_path, teacher="human", human_wait_seconds=30.0)
        loop = PreferenceLoop(cfg)  # builds a HumanTeacher on the run's store
        assert isinstance(loop.teacher, HumanTeacher)
        person = Person(loop.store)
        person.thread.start()
    else:
        cfg = _cfg(tmp_path)
        teacher = make_teacher("rational", np.random.default_rng(3)) if kind == "synthetic" else ClipJudge()
        loop = PreferenceLoop(cfg, teacher=teacher)
    assert isinstance(loop.teacher, Teacher)
    try:
        loop.run()
    finally:
        if kind == "human":
            person.stop.set()
            person.thread.join()
    first, last = _mean_return(loop.history.episodes, True), _mean_return(loop.history.episodes, False)
    assert abs(first) < 10
    assert last > first + 15, (kind, first, last)
    comparisons = loop.store.comparisons()
    assert len(comparisons) == cfg.labels  # every query answered exactly once, by whoever the teacher is
    expected = {"synthetic": ("synthetic-rational", "rational"), "ai_judge": ("clip-judge", "clip-judge"), "human": ("ann", "human")}
    assert {(c.labeller, c.teacher) for c in comparisons} == {expected[kind]}
