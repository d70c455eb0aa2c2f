"""A user's own Gymnasium env from the CLI: ``--env module:EnvId`` for train, eval and --resume (#13 item 1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from typer.testing import CliRunner

from prefrl.cli import app

#: The README's ten-line custom env (a point that should reach the origin).
POINTGOAL = textwrap.dedent('''
    import gymnasium as gym
    import numpy as np


    class PointGoal(gym.Env):
        """A point that should reach the origin: obs = its position, action = its velocity."""

        observation_space = gym.spaces.Box(-10, 10, (2,), np.float32)
        action_space = gym.spaces.Box(-1, 1, (2,), np.float32)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            self.pos = self.np_random.uniform(-5, 5, 2).astype(np.float32)
            return self.pos.copy(), {}

        def step(self, action):
            self.pos = np.clip(self.pos + 0.1 * np.clip(action, -1, 1), -10, 10).astype(np.float32)
            return self.pos.copy(), -float(np.linalg.norm(self.pos)), False, False, {}


    gym.register("PointGoal-v0", entry_point=PointGoal, max_episode_steps=50)
''')

ENV = "pointgoal_user:PointGoal-v0"
TINY = ["--labels", "20", "--n-envs", "1", "--num-steps", "128", "--segment-steps", "10", "--reward-epochs", "2",
        "--no-progress"]  # fmt: skip


def _module(tmp_path: Path) -> Path:
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "pointgoal_user.py").write_text(POINTGOAL)
    return mods


def _fresh_prefrl(mods: Path, *args: str) -> subprocess.CompletedProcess:
    """``prefrl`` in a new process that has never imported the user's module."""
    src = Path(__file__).resolve().parents[2] / "src"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(mods), str(src)]))
    code = "from prefrl.cli import app; app(prog_name='prefrl')"
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=600)


def test_custom_env_module_trains_evaluates_and_resumes_from_the_cli(tmp_path, monkeypatch):
    mods = _module(tmp_path)
    monkeypatch.syspath_prepend(str(mods))
    run = tmp_path / "run"
    # a run stopped after its up-front labels (as if killed there), then resumed from the CLI
    from prefrl.control.loop import PreferenceLoop
    from prefrl.control.run_state import load_run_config

    result = CliRunner().invoke(app, ["control", "train", "--env", ENV, "--steps", "512", *TINY, "--run-dir", str(tmp_path / "short")])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["report"].endswith("report.html") and Path(summary["report"]).is_file()
    assert load_run_config(tmp_path / "short").env_id == ENV  # the run remembers the module

    result = CliRunner().invoke(app, ["control", "eval", str(tmp_path / "short"), "--episodes", "2"])
    assert result.exit_code == 0, result.output
    assert "true return" in result.output

    cfg = load_run_config(tmp_path / "short")
    import dataclasses

    cfg = dataclasses.replace(cfg, run_dir=str(run), steps=128 * 6)
    loop = PreferenceLoop(cfg)
    loop.initial_labels()
    loop.checkpoint()
    before = loop.counters.global_step
    assert before < cfg.steps

    proc = _fresh_prefrl(mods, "control", "train", "--resume", str(run))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    history = json.loads((run / "history.json").read_text())
    assert history["counters"]["global_step"] == cfg.steps > before
    proc = _fresh_prefrl(mods, "control", "eval", str(run), "--episodes", "1")
    assert proc.returncode == 0 and "true return" in proc.stdout, proc.stdout + proc.stderr


def test_a_module_that_does_not_import_or_register_is_a_one_line_error(tmp_path, monkeypatch):
    mods = _module(tmp_path)
    monkeypatch.syspath_prepend(str(mods))
    for env, message in (("no_such_module_x:PointGoal-v0", "cannot import module"),
                         ("pointgoal_user:Other-v0", "did not register 'Other-v0'")):  # fmt: skip
        result = CliRunner().invoke(app, ["control", "train", "--env", env, "--steps", "128", *TINY, "--run-dir", str(tmp_path / "r")])
        assert result.exit_code != 0
        assert message in result.output and "Traceback" not in result.output, result.output
        assert not (tmp_path / "r").exists()
