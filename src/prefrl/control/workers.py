"""``asynchronous=True``: reward training and the teacher in background threads while the policy collects.

The policy reads rewards from its own copy of the ensemble; the trainer's copy is copied over
under ``loop.reward.lock`` after every reward round (:class:`~prefrl.control.learned_reward.LearnedReward`).
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["BackgroundWorkers"]


class BackgroundWorkers:
    """Two daemon threads on a :class:`~prefrl.control.loop.PreferenceLoop`: reward rounds and the query pump."""

    def __init__(self, loop: Any) -> None:
        self.loop = loop
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _reward(self) -> None:
        while not self._stop.is_set():
            if not self.loop.training_pairs():
                self._stop.wait(0.2)
                continue
            self.loop.train_reward()
            self._stop.wait(0.05)  # leave the GIL to the collecting thread between rounds

    def _teacher(self) -> None:
        while not self._stop.is_set():
            if self.loop.answer_pending() == 0:
                self._stop.wait(0.1)

    def start(self) -> None:
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._reward, name="reward-trainer", daemon=True),
            threading.Thread(target=self._teacher, name="teacher", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()
        self._threads = []
