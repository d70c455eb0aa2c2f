"""Control tried as a new user would (#13 items 3 and 4): teachers that silently skip, one-line errors, resume hygiene."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import go_right_env
import pytest
from typer.testing import CliRunner

from prefrl.cli import app

runner = CliRunner()
TOY = ["--env", go_right_env.ENV_ID, "--labels", "20", "--steps", str(128 * 4), "--n-envs", "1", "--num-steps", "128",
       "--segment-steps", "10", "--reward-epochs", "2", "--no-progress"]  # fmt: skip


def _output(result) -> str:
    return result.output + (getattr(result, "stderr", "") or "")


def _summary(result) -> dict:
    return json.loads(result.output.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- item 3: teachers that skip


@pytest.mark.parametrize(("teacher", "count"), [("skip", "labels_incomparable"), ("equal", "labels_equal")])
def test_skip_and_equal_teachers_on_pendulum_give_a_mix_and_the_run_reports_it(tmp_path, teacher, count):
    run = tmp_path / "run"
    args = ["--env", "Pendulum-v1", "--teacher", teacher, "--labels", "40", "--steps", "2048", "--n-envs", "1",
            "--num-steps", "256", "--segment-steps", "25", "--reward-epochs", "2", "--no-progress", "--run-dir", str(run)]  # fmt: skip
    result = runner.invoke(app, ["control", "train", *args])
    assert result.exit_code == 0, _output(result)
    summary = _summary(result)
    assert summary["labels_answered"] == 40
    assert 0 < summary[count] < 40, summary  # thresholds relative to the returns seen: neither all nor none
    assert summary["reward_rounds"] > 0
    assert json.loads((run / "summary.json").read_text())[count] == summary[count]
    assert count in (run / "report.html").read_text()
    rows = json.loads((run / "history.json").read_text())["iterations"]
    assert rows[-1]["labels/" + count.split("_")[1]] == summary[count]


def test_a_run_that_trained_no_reward_model_says_so_loudly(tmp_path):
    run = tmp_path / "run"
    result = runner.invoke(app, ["control", "train", *TOY, "--teacher", "skip", "--teacher-arg", "skip_threshold=1e9",
                                 "--run-dir", str(run)])  # fmt: skip
    assert result.exit_code == 0, _output(result)
    assert "no reward model was trained" in _output(result)
    assert _summary(result)["labels_incomparable"] == 20 and _summary(result)["reward_rounds"] == 0
    assert "no reward model was trained" in (run / "report.html").read_text()


# ----------------------------------------------------------------------------- item 4: one-line errors


def _has_box2d() -> bool:
    try:
        import Box2D  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--teacher", "stochastic", "--teacher-arg", "beta=abc"], "beta must be a number, got 'abc'"),
        (["--steps", "-5"], "--steps must be ≥ 1, got -5"),
        (["--labels", "100000", "--steps", "4096"], "labels (100000) exceed the segments this run collects"),
        pytest.param(["--env", "CarRacing-v3"], "gymnasium[box2d]",
                     marks=pytest.mark.skipif(_has_box2d(), reason="Box2D is installed")),  # fmt: skip
    ],
)
def test_bad_input_is_one_line_naming_the_problem(tmp_path, args, message):
    run = tmp_path / "run"
    result = runner.invoke(app, ["control", "train", *TOY, "--run-dir", str(run), *args])
    out = _output(result)
    assert result.exit_code != 0
    assert message in out, out
    assert "Traceback" not in out and len({line for line in out.splitlines() if line.startswith("Error:")}) == 1
    assert not run.exists()


def _has_pygame() -> bool:
    try:
        import pygame  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(_has_pygame(), reason="pygame is installed: CartPole renders")
def test_eval_video_without_pygame_fails_before_evaluating(tmp_path):
    run = tmp_path / "run"
    args = ["--env", "CartPole-v1", "--labels", "8", "--steps", "256", "--n-envs", "1", "--num-steps", "128",
            "--segment-steps", "10", "--reward-epochs", "1", "--no-progress", "--run-dir", str(run)]  # fmt: skip
    assert runner.invoke(app, ["control", "train", *args]).exit_code == 0
    result = runner.invoke(app, ["control", "eval", str(run), "--episodes", "1", "--video", str(tmp_path / "v.mp4")])
    out = _output(result)
    assert result.exit_code != 0 and "pygame" in out and "--video" in out, out
    assert "Traceback" not in out and "true return" not in out


# ----------------------------------------------------------------------------- item 4: resume hygiene


def _digest(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run.rglob("*")) if p.is_file()}


def test_resume_with_a_corrupted_store_is_one_line_and_destroys_nothing(tmp_path):
    run = tmp_path / "run"
    assert runner.invoke(app, ["control", "train", *TOY, "--run-dir", str(run)]).exit_code == 0
    for extra in run.glob("preferences.sqlite-*"):
        extra.unlink()
    (run / "preferences.sqlite").write_bytes(b"this is not a database" * 100)
    before = _digest(run)
    result = runner.invoke(app, ["control", "train", "--resume", str(run)])
    out = _output(result)
    assert result.exit_code != 0
    assert "preferences.sqlite" in out and "corrupted" in out and "Traceback" not in out, out
    assert _digest(run) == before


def test_resume_cleans_the_stale_tmp_file_of_a_killed_checkpoint_write(tmp_path):
    run = tmp_path / "run"
    assert runner.invoke(app, ["control", "train", *TOY, "--run-dir", str(run)]).exit_code == 0
    stale = run / ".checkpoint.pt.k1ll3d.tmp"  # what atomic_write leaves when killed mid-write
    stale.write_bytes(b"half a checkpoint")
    result = runner.invoke(app, ["control", "train", "--resume", str(run)])
    assert result.exit_code == 0, _output(result)
    assert not stale.exists()
    assert (run / "checkpoint.pt").is_file()


# ----------------------------------------------------------------------------- item 2: threads


def test_threads_option_sets_torch_intra_op_threads_with_one_as_the_default(tmp_path):
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        result = runner.invoke(app, ["control", "train", *TOY, "--run-dir", str(tmp_path / "a")])
        assert result.exit_code == 0, _output(result)
        assert torch.get_num_threads() == 1  # the deliberate default: small MLPs gain nothing from more
        result = runner.invoke(app, ["control", "train", *TOY, "--threads", "2", "--run-dir", str(tmp_path / "b")])
        assert result.exit_code == 0, _output(result)
        assert torch.get_num_threads() == 2
        result = runner.invoke(app, ["control", "train", *TOY, "--threads", "-1", "--run-dir", str(tmp_path / "c")])
        assert result.exit_code != 0 and "--threads must be ≥ 0" in _output(result)
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------- item 6: the video is the eval episode


def test_record_episode_is_the_evaluation_episode_with_the_same_seed_and_env_settings(tmp_path):
    import ctypes.util
    import os

    import numpy as np

    if os.environ.get("MUJOCO_GL", "osmesa") == "osmesa" and ctypes.util.find_library("OSMesa") is None:
        pytest.skip("MuJoCo off-screen rendering needs libOSMesa (or MUJOCO_GL=egl)")
    from prefrl.control.config import control_ppo_config
    from prefrl.control.envs import make_vec_env
    from prefrl.control.ppo_agent import PPOAgent
    from prefrl.control.render import record_episode

    kwargs = {"fixed_horizon": 40, "drop_ctrl_cost": True}
    agent = PPOAgent(make_vec_env("HalfCheetah-v5", 1, 0, **kwargs), control_ppo_config(num_steps=64), seed=0)
    (expected,) = agent.evaluate("HalfCheetah-v5", 1, seed=7, **kwargs)
    path, ret = record_episode("HalfCheetah-v5", lambda o: agent.act(np.asarray(o)[None])[0], tmp_path / "v.mp4",
                               seed=7, env_kwargs=kwargs)  # fmt: skip
    assert ret == pytest.approx(expected, rel=1e-6, abs=1e-6)
    assert path.stat().st_size > 1000
    import imageio.v2 as imageio

    assert len(imageio.mimread(path, memtest=False)) == 41  # fixed_horizon steps + the first frame


def test_report_has_gold_vs_proxy_and_a_wall_clock_axis(tmp_path):
    run = tmp_path / "run"
    assert runner.invoke(app, ["control", "train", *TOY, "--run-dir", str(run)]).exit_code == 0
    rows = json.loads((run / "history.json").read_text())["iterations"]
    elapsed = [r["charts/elapsed_seconds"] for r in rows]
    assert len(elapsed) >= 2 and elapsed == sorted(elapsed) and elapsed[-1] > 0
    assert (run / "gold_vs_proxy.png").stat().st_size > 1000
    assert "gold_vs_proxy.png" in (run / "report.html").read_text()


# ----------------------------------------------------------------------------- item 4: a bad Literal choice


@pytest.mark.parametrize(
    ("argv", "option", "allowed"),
    [
        (["control", "train", "--optimizer", "nope"], "--optimizer", ("'ppo'", "'sac'", "'sb3-ppo'")),
        (["control", "train", "--selector", "nope"], "--selector", ("'disagreement'", "'entropy'", "'uniform'")),
        (["lm", "dpo", "--loss-type", "nope"], "--loss-type", ("'sigmoid'", "'ipo'")),
        (["lm", "rl", "--algo", "nope"], "--algo", ("'grpo'", "'rloo'", "'reinforce++'")),
    ],
)
def test_a_bad_choice_is_one_line_naming_the_option_and_the_allowed_values(argv, option, allowed):
    result = runner.invoke(app, argv)
    lines = list(dict.fromkeys(line for line in _output(result).splitlines() if line.strip()))  # output ⊇ stderr
    assert result.exit_code == 2
    assert len(lines) == 1, lines  # not Typer's boxed, multi-line usage panel
    assert lines[0].startswith("Error: ") and option in lines[0] and "'nope'" in lines[0], lines
    assert all(name in lines[0] for name in allowed), lines
    assert "╭" not in lines[0] and "Traceback" not in lines[0]


def test_usage_errors_of_the_installed_command_are_one_line_too(tmp_path):
    import subprocess
    import sys

    for argv, expected in ((["control", "train", "--steps", "abc"], "'--steps'"),
                           (["control", "train", "--no-such-option"], "--no-such-option"),
                           (["control", "eval"], "run_dir")):  # fmt: skip
        proc = subprocess.run([sys.executable, "-m", "prefrl", *argv], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and proc.stdout == "", (argv, proc.stdout)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and expected in lines[0], (argv, proc.stderr)


# ----------------------------------------------------------------------------- item 6: evaluation curve and clip


class _PaintedGoRight(go_right_env.GoRightEnv):
    """GoRight that renders an rgb frame whose brightness is the position (so the clip shows the policy)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, render_mode=None):
        super().__init__()
        self.render_mode = render_mode

    def render(self):
        import numpy as np

        frame = np.zeros((32, 32, 3), np.uint8)
        frame[:, :, 1] = np.uint8(np.clip(128 + 40 * float(self.state[0]), 0, 255))
        return frame


def test_report_has_a_deterministic_evaluation_curve_and_a_clip_of_the_final_policy(tmp_path):
    import gymnasium as gym

    env_id = "PaintedGoRight-v0"
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=_PaintedGoRight, max_episode_steps=go_right_env.HORIZON)
    run = tmp_path / "run"
    args = [a if a != go_right_env.ENV_ID else env_id for a in TOY]
    result = runner.invoke(app, ["control", "train", *args, "--eval-points", "2", "--eval-episodes", "1",
                                 "--clip-steps", str(go_right_env.HORIZON), "--run-dir", str(run)])  # fmt: skip
    assert result.exit_code == 0, _output(result)
    history = json.loads((run / "history.json").read_text())
    evals = history["evaluations"]
    assert len(evals) == 2 and 256 <= evals[0][0] < 512 and evals[1][0] == 512  # past halfway, and at the end
    summary = json.loads((run / "summary.json").read_text())
    assert summary["eval_return_last"] == pytest.approx(evals[-1][1])
    clip = run / "final_policy.mp4"
    import imageio.v2 as imageio

    assert len(imageio.mimread(clip, memtest=False)) == go_right_env.HORIZON + 1  # every step + the first frame
    page = (run / "report.html").read_text()
    assert "<video" in page and "final_policy.mp4" in page and "data:video/mp4;base64," in page
    # the whole clip is the final evaluation's episode: same env settings and seed, so the same return
    assert history["clip"]["return"] == pytest.approx(evals[-1][1], abs=1e-5)
    # ... and its strip of frames sits beside it, in the same section: the run's one recording
    assert (run / "final_policy_frames.png").is_file() and page.count("<video") == 1
    assert 'alt="frames of the episode"' in page and not (run / "behaviour.mp4").exists()


def test_the_deprecated_report_video_still_works_and_records_the_one_clip_of_the_whole_episode(tmp_path):
    import gymnasium as gym
    import imageio.v2 as imageio

    from prefrl.control.config import ControlConfig

    with pytest.warns(FutureWarning, match="report_video"):
        assert ControlConfig(env_id=go_right_env.ENV_ID, report_video=True, fixed_horizon=600).final_clip_steps == 600
    assert ControlConfig(env_id=go_right_env.ENV_ID, clip_steps=20).final_clip_steps == 20
    env_id = "PaintedGoRight-v0"
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=_PaintedGoRight, max_episode_steps=go_right_env.HORIZON)
    run = tmp_path / "run"
    args = [a if a != go_right_env.ENV_ID else env_id for a in TOY]
    with pytest.warns(FutureWarning, match="deprecated"):
        result = runner.invoke(app, ["control", "train", *args, "--eval-points", "1", "--eval-episodes", "1",
                                     "--clip-steps", "5", "--report-video", "--run-dir", str(run)])  # fmt: skip
    assert result.exit_code == 0, _output(result)
    history = json.loads((run / "history.json").read_text())
    # one recording: final_policy.mp4 of the whole first evaluation episode (not 5 steps), with its strip
    assert len(imageio.mimread(run / "final_policy.mp4", memtest=False)) == go_right_env.HORIZON + 1
    assert history["clip"]["return"] == pytest.approx(history["evaluations"][-1][1], abs=1e-5)
    assert (run / "final_policy_frames.png").is_file() and not (run / "behaviour.mp4").exists()


def test_a_run_whose_env_cannot_render_says_why_there_is_no_clip(tmp_path):
    run = tmp_path / "run"
    result = runner.invoke(app, ["control", "train", *TOY, "--eval-points", "1", "--run-dir", str(run)])
    assert result.exit_code == 0, _output(result)
    history = json.loads((run / "history.json").read_text())
    assert len(history["evaluations"]) == 1 and history["evaluations"][0][0] == 512
    assert "reason" in history["clip"] and not (run / "final_policy.mp4").exists()
    assert "No clip of the final policy" in (run / "report.html").read_text()
