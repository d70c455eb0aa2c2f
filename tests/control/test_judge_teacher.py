"""``--teacher judge --judge MODULE:FUNCTION``: a teacher from the user's own scoring function (issue #14, item 5).

GoRight's env reward pays for moving right; a judge that prefers moving *left* must teach the
agent to move left — the learner only ever sees the judge's answers.
"""

from __future__ import annotations

import json

import go_right_env
import numpy as np
import pytest
from typer.testing import CliRunner

from prefrl.cli import app
from prefrl.control.config import ControlConfig
from prefrl.data.types import Segment
from prefrl.teachers import build_teacher
from prefrl.teachers.judge import JudgeTeacher, load_judge

runner = CliRunner()

JUDGE_SOURCE = '''
import numpy as np

def score_segment(segment):
    """Leftward distance covered: x is obs[:, 0] (the env reward is never used)."""
    return float(segment.obs[0, 0] - segment.obs[-1, 0])

def per_step(segment):
    return -np.asarray(segment.actions, dtype=float).reshape(-1)

def broken(segment):
    return np.zeros((2, 2))

not_a_function = 3
'''


@pytest.fixture
def judge_file(tmp_path):
    path = tmp_path / "left_judge.py"
    path.write_text(JUDGE_SOURCE)
    return path


def _segment(actions) -> Segment:
    a = np.asarray(actions, np.float32).reshape(-1, 1)
    x = np.concatenate([[0.0], np.cumsum(0.1 * a[:, 0])])[:-1]
    return Segment(obs=np.stack([x, np.arange(len(a)) / 50], 1).astype(np.float32), actions=a, true_rewards=a[:, 0].copy())


def test_judge_prefers_what_it_scores_higher_and_kinds_apply_on_top(judge_file):
    left, right = _segment([-1.0] * 5), _segment([1.0] * 5)
    rational = build_teacher("judge", np.random.default_rng(0), judge=f"{judge_file}:score_segment")
    assert isinstance(rational, JudgeTeacher) and rational.lease_as == "judge"
    assert rational.answer([(left, right), (right, left), (left, left)]) == [1.0, 0.0, 0.5]
    # mistake kind on top: ε = 1 flips every answer
    flipper = build_teacher("judge", np.random.default_rng(0), judge=f"{judge_file}:score_segment", kind="mistake", epsilon=1.0)
    assert flipper.answer([(left, right), (right, left)]) == [0.0, 1.0]
    # stochastic kind: β small → about half the answers go the other way
    noisy = build_teacher("judge", np.random.default_rng(0), judge=f"{judge_file}:score_segment", kind="stochastic", beta=1e-3)
    answers = noisy.answer([(left, right)] * 400)
    assert 0.35 < np.mean(answers) < 0.65
    # myopic needs per-step scores; with them, the last steps weigh most
    late_left = _segment([1.0, 1.0, 1.0, -1.0, -1.0])  # goes right overall, but ends going left
    early_left = _segment([-1.0, -1.0, 1.0, 1.0, 1.0])
    myopic = build_teacher("judge", np.random.default_rng(0), judge=f"{judge_file}:per_step", kind="myopic", gamma=0.1)
    assert myopic.answer([(late_left, early_left)]) == [1.0]
    with pytest.raises(ValueError, match="per-step scores"):
        build_teacher("judge", np.random.default_rng(0), judge=f"{judge_file}:score_segment", gamma=0.5).answer([(left, right)])
    with pytest.raises(ValueError, match="shape"):
        build_teacher("judge", np.random.default_rng(0), judge=f"{judge_file}:broken").answer([(left, right)])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon", "must be MODULE:FUNCTION"),
        ("a:b:c", "must be MODULE:FUNCTION"),
        ("prefrl_no_such_module_xyz:f", "cannot import 'prefrl_no_such_module_xyz'"),
        ("{file}:missing", "has no attribute 'missing'"),
        ("{file}:not_a_function", "not a function"),
        ("/nonexistent/judge.py:f", "no file"),
    ],
)
def test_bad_judge_spec_is_one_line_error(judge_file, spec, message):
    spec = spec.format(file=judge_file)
    with pytest.raises(ValueError, match=message):
        load_judge(spec)
    result = runner.invoke(app, ["control", "train", "--env", go_right_env.ENV_ID, "--teacher", "judge", "--judge", spec,
                                 "--no-progress"])
    assert result.exit_code == 2
    assert message.split("'")[0] in result.output and "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.startswith("Error:")]) == 1


def test_judge_and_teacher_must_go_together(judge_file, tmp_path):
    with pytest.raises(ValueError, match="needs a judge function"):
        ControlConfig(teacher="judge", run_dir=str(tmp_path / "a"))
    with pytest.raises(ValueError, match="teacher=judge only"):
        ControlConfig(teacher="rational", judge=f"{judge_file}:score_segment", run_dir=str(tmp_path / "b"))
    with pytest.raises(ValueError, match="teacher=judge only"):
        ControlConfig(teacher="human", judge=f"{judge_file}:score_segment", run_dir=str(tmp_path / "c"))


def _mean(episodes, first: bool, n: int = 10) -> float:
    chosen = episodes[:n] if first else episodes[-n:]
    return float(np.mean([r for _, r in chosen]))


@pytest.mark.timeout(300)
def test_a_judge_that_prefers_left_trains_the_agent_to_move_left(judge_file, tmp_path):
    run = tmp_path / "run"
    result = runner.invoke(app, [
        "control", "train", "--env", go_right_env.ENV_ID, "--teacher", "judge", "--judge", f"{judge_file}:score_segment",
        "--labels", "60", "--steps", str(128 * 16), "--n-envs", "1", "--n-steps", "128", "--n-minibatches", "4",
        "--update-epochs", "10", "--lr", "0.003", "--segment-steps", "10", "--pool-size", "128",
        "--reward-epochs", "5", "--reward-lr", "0.003", "--run-dir", str(run), "--no-progress",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    history = json.loads((run / "history.json").read_text())
    episodes = history["episodes"]
    first, last = _mean(episodes, True), _mean(episodes, False)  # the env's (rightward) true return
    assert abs(first) < 10
    assert last < first - 15, (first, last)  # it learned to go left: the env reward fell
    from prefrl.data.store import PreferenceStore

    comparisons = PreferenceStore(str(run / "preferences.sqlite")).comparisons()
    assert len(comparisons) == 60 and {(c.labeller, c.teacher) for c in comparisons} == {("judge", "judge")}
