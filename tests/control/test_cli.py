"""`prefrl control train | eval | demo`: smoke runs with tiny budgets, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import go_right_env
import pytest
from typer.testing import CliRunner

from prefrl.cli import app

runner = CliRunner()

TINY = [
    "--env", go_right_env.ENV_ID, "--labels", "30", "--steps", str(128 * 8), "--n-envs", "1", "--n-steps", "128",
    "--n-minibatches", "4", "--lr", "0.003", "--segment-steps", "10", "--reward-epochs", "3", "--no-progress",
]


def _output(result) -> str:
    return result.output + (getattr(result, "stderr", "") or "")


def test_help_is_instant_and_documents_every_option():
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", "from prefrl.cli import app; app()", "control", "train", "--help"],
        capture_output=True, text=True, timeout=60,
    )
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    assert "torch" not in sys.modules or elapsed < 10  # heavy imports stay inside the commands
    for option in ("--env", "--labels", "--steps", "--teacher", "--store", "--run-dir", "--resume", "--baseline", "--sync"):
        assert option in proc.stdout
    # every option has help text: no option line without a description
    result = runner.invoke(app, ["control", "eval", "--help"])
    assert "--episodes" in result.output and "--video" in result.output


def test_train_eval_smoke_writes_everything(tmp_path):
    run = tmp_path / "run"
    result = runner.invoke(app, ["control", "train", *TINY, "--run-dir", str(run), "--baseline"])
    assert result.exit_code == 0, _output(result)
    assert "report.html" in result.output
    for name in ("report.html", "true_return.png", "labels.png", "reward_accuracy.png", "segment_returns.png",
                 "checkpoint.pt", "config.json", "preferences.sqlite"):
        assert (run / name).is_file(), name
    assert list((run / "tb").glob("events.out.tfevents.*"))
    history = json.loads((run / "history.json").read_text())
    assert history["counters"]["queries_posted"] == 30
    assert history["baseline_episodes"], "--baseline must add the true-reward PPO curve"
    ppo = json.loads((run / "config.json").read_text())["ppo"]
    assert ppo["clip_vloss"] is False and ppo["anneal_lr"] is False, "train uses the control loop's PPO defaults"
    html = (run / "report.html").read_text()
    assert "data:image/png;base64," in html and "http" not in html.split("<pre>")[0].replace("http-equiv", "")

    result = runner.invoke(app, ["control", "eval", str(run), "--episodes", "2"])
    assert result.exit_code == 0, _output(result)
    assert "true return" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--env", "NoSuchEnv-v0"], "unknown environment"),
        (["--env", "FrozenLake-v1"], "unsupported observation space"),
        (["--labels", "0"], "labels must be ≥ 1"),
        (["--teacher", "oracle"], "unknown teacher"),
        (["--steps", "10"], "at least one rollout"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path, args, message):
    run = tmp_path / "run"
    result = runner.invoke(app, ["control", "train", *TINY, "--run-dir", str(run), *args])
    assert result.exit_code != 0
    out = _output(result)
    assert message in out, out
    assert "Traceback" not in out
    assert not run.exists()  # nothing created for a run that could not start


def test_existing_run_dir_is_refused_and_kept(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("keep me")
    result = runner.invoke(app, ["control", "train", *TINY, "--run-dir", str(run)])
    assert result.exit_code != 0 and "already exists" in _output(result)
    assert (run / "notes.txt").read_text() == "keep me"


def test_eval_of_a_missing_run_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["control", "eval", str(tmp_path / "nowhere")])
    assert result.exit_code != 0
    assert "config.json" in _output(result) and "Traceback" not in _output(result)


@pytest.mark.slow
def test_atari_pong_runs_end_to_end_with_the_cnn_reward_model(tmp_path):
    import ale_py  # noqa: F401 - a declared dependency: missing is a failure, not a skip
    run = tmp_path / "pong"
    result = runner.invoke(app, [
        "control", "train", "--env", "ALE/Pong-v5", "--labels", "6", "--steps", "256", "--n-envs", "1", "--n-steps", "128",
        "--n-minibatches", "4", "--reward-epochs", "2", "--no-progress", "--run-dir", str(run),
    ])
    assert result.exit_code == 0, _output(result)
    history = json.loads((run / "history.json").read_text())
    assert history["counters"]["queries_posted"] == 6
    assert (run / "report.html").is_file()
