"""One place that turns a teacher's name (``prefrl.names.TeacherName``) into a teacher object."""

from __future__ import annotations

from typing import Any

import numpy as np

from prefrl.teachers.base import Teacher

__all__ = ["build_teacher"]


def build_teacher(name: str, rng: np.random.Generator, store: Any = None, judge: Any = None, **kwargs: Any) -> Teacher[Any]:
    """``human`` → :class:`~prefrl.teachers.human.HumanTeacher` on ``store``; ``judge`` → a
    :class:`~prefrl.teachers.judge.JudgeTeacher` of the ``judge`` function (``"module:function"``);
    a B-Pref kind → a synthetic teacher.

    ``kwargs`` are the synthetic teacher's parameters (:func:`~prefrl.teachers.synthetic.make_teacher`);
    for ``judge`` also ``kind`` (the B-Pref kind applied on top of its scores).
    """
    if (name == "judge") != (judge is not None):
        raise ValueError("teacher=judge needs a judge function (--judge MODULE:FUNCTION)" if name == "judge"
                         else f"--judge applies to teacher=judge only, not to teacher={name}")
    if name == "judge":
        from prefrl.teachers.judge import make_judge_teacher

        return make_judge_teacher(judge, rng, **kwargs)
    if name == "human":
        if kwargs:
            raise ValueError("teacher parameters apply to synthetic teachers only, not to teacher=human")
        from prefrl.teachers.human import HumanTeacher

        return HumanTeacher(store)
    from prefrl.teachers.synthetic import make_teacher

    return make_teacher(name, rng, **kwargs)
