"""A teacher from the user's own judgement: ``--teacher judge --judge mymodule:score_segment``.

For behaviours nobody can write as an env reward but anyone can *score* (Christiano et al. 2017,
§3.2: a Hopper backflip), the user writes a Python function of one segment — its observations,
actions and simulator states, never the hidden env reward — and the teacher prefers the segment
that scores higher. The function returns either one score per segment or per-step scores (T,),
which the myopic kind needs.

The B-Pref kinds apply on top, by the same code as the synthetic teachers
(:meth:`~prefrl.teachers.synthetic.SyntheticTeacher.answer_rewards`): ``kind=stochastic`` (β),
``mistake`` (ε), ``myopic`` (γ), ``skip``, ``equal``, and any of their parameters
(``beta=…``, ``epsilon=…``), e.g. ``--teacher-arg kind=mistake --teacher-arg epsilon=0.2``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from prefrl.data.types import Segment
from prefrl.teachers.synthetic import SyntheticTeacher, make_teacher

__all__ = ["JudgeTeacher", "load_judge", "make_judge_teacher"]

JudgeFn = Callable[[Segment], Any]


def load_judge(spec: str) -> JudgeFn:
    """``"module:function"`` or ``"path/to/file.py:function"`` → the function; ValueError in one line otherwise.

    A module is looked up on ``sys.path`` and then in the current directory (as ``python -m`` would).
    """
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(part.strip() for part in spec.split(":")):
        raise ValueError(f"--judge must be MODULE:FUNCTION (e.g. mymodule:score_segment), got {spec!r}")
    module_name, func_name = (part.strip() for part in spec.split(":"))
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise ValueError(f"--judge {spec!r}: no file {path}")
            loader_spec = importlib.util.spec_from_file_location(f"prefrl_judge_{path.stem}", path)
            assert loader_spec is not None and loader_spec.loader is not None
            module = importlib.util.module_from_spec(loader_spec)
            loader_spec.loader.exec_module(module)
        else:
            if "" not in sys.path and str(Path.cwd()) not in sys.path:
                sys.path.append(str(Path.cwd()))
            module = importlib.import_module(module_name)
    except ValueError:
        raise
    except ModuleNotFoundError as e:
        raise ValueError(f"--judge {spec!r}: cannot import {e.name!r} (is it on PYTHONPATH?)") from None
    except Exception as e:  # noqa: BLE001 - the user's module failed while importing: say so in one line
        raise ValueError(f"--judge {spec!r}: importing {module_name} failed: {type(e).__name__}: {e}") from None
    func = getattr(module, func_name, None)
    if func is None:
        raise ValueError(f"--judge {spec!r}: module {module_name} has no attribute {func_name!r}")
    if not callable(func):
        raise ValueError(f"--judge {spec!r}: {func_name} is a {type(func).__name__}, not a function")
    return func


class JudgeTeacher:
    """Prefers the segment the user's ``judge`` scores higher, with a B-Pref kind on top.

    Args:
        judge: a function of a :class:`Segment` returning a finite score or (T,) per-step scores.
        choice: the synthetic teacher whose choice rule (rational, β, ε, γ, skip, equal) decides μ
            from the scores instead of the hidden rewards.
        name: recorded with each answer and the labeller it leases the queue as.
    """

    compares = "segments"

    def __init__(self, judge: JudgeFn, choice: SyntheticTeacher, name: str = "judge") -> None:
        if not callable(judge):
            raise ValueError(f"judge must be a function of a segment, got {type(judge).__name__}")
        self.judge, self.choice, self.name = judge, choice, name

    @property
    def lease_as(self) -> str:
        """The labeller it answers the store's queue as: its name."""
        return self.name

    def scores(self, segment: Segment, side: str = "segment") -> np.ndarray:
        """The judge's (T,) per-step scores of a segment (one score is a length-1 array)."""
        value = np.asarray(self.judge(segment), dtype=np.float64)
        if value.ndim == 0:
            if self.choice.gamma != 1.0:
                raise ValueError("a myopic judge (gamma < 1) needs per-step scores: return a (T,) array from the judge")
            value = value.reshape(1)
        if value.ndim != 1 or value.size == 0:
            raise ValueError(f"the judge must return a number or (T,) per-step scores for the {side} segment, "
                             f"got shape {value.shape}")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"the judge returned a non-finite score for the {side} segment")
        return value

    def answer(self, pairs: Sequence[tuple[Segment, Segment]]) -> list[float | None]:
        """μ for each (left, right) pair from the judge's scores."""
        return self.choice.answer_rewards([(self.scores(left, "left"), self.scores(right, "right")) for left, right in pairs])

    def state_dict(self) -> dict[str, Any]:
        return self.choice.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.choice.load_state_dict(state)


def make_judge_teacher(judge: str | JudgeFn, rng: np.random.Generator, kind: str = "rational",
                       **kwargs: Any) -> JudgeTeacher:
    """A :class:`JudgeTeacher` from ``"module:function"`` (or the function) and a B-Pref ``kind`` + parameters."""
    func = load_judge(judge) if isinstance(judge, str) else judge
    return JudgeTeacher(func, make_teacher(kind, rng, **kwargs))
