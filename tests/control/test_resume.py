"""Resume: a run killed with SIGKILL mid-way continues where it stopped; bad checkpoints are refused."""

from __future__ import annotations

import hashlib
import json
import signal
from pathlib import Path

import go_right_env
from run_helpers import prefrl_train as _prefrl
from run_helpers import wait_for_checkpoint

from prefrl.control.checkpoint import load_checkpoint
from prefrl.data.store import PreferenceStore

LABELS, N_STEPS, ROLLOUTS = 30, 128, 16
ARGS = [
    "--env", go_right_env.ENV_ID, "--labels", str(LABELS), "--steps", str(N_STEPS * ROLLOUTS), "--n-envs", "1",
    "--n-steps", str(N_STEPS), "--n-minibatches", "4", "--lr", "0.003", "--segment-steps", "10",
    "--reward-epochs", "3", "--no-progress",
]


def test_resume_after_sigkill_continues_without_losing_labels(tmp_path):
    run = tmp_path / "run"
    proc = _prefrl(*ARGS, "--run-dir", str(run), "--checkpoint-minutes", "0.0001")
    wait_for_checkpoint(proc, run, iterations=3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    before = load_checkpoint(run)["counters"]  # the last checkpoint written before the kill
    assert before.global_step < N_STEPS * ROLLOUTS
    store = PreferenceStore(run / "preferences.sqlite")
    comparisons_before = store.count_comparisons()
    store.close()
    assert comparisons_before >= 1

    resumed = _prefrl("--resume", str(run))
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out

    after = load_checkpoint(run)["counters"]
    assert after.iteration > before.iteration
    assert after.global_step >= N_STEPS * (ROLLOUTS - 1)  # trained to the end
    assert after.reward_rounds > before.reward_rounds
    assert after.queries_posted == LABELS
    store = PreferenceStore(run / "preferences.sqlite")
    assert store.count_comparisons() >= comparisons_before  # no label lost
    assert store.count_comparisons() >= LABELS  # every asked query got answered in the end
    history = json.loads((run / "history.json").read_text())
    steps = [row["step"] for row in history["iterations"]]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)  # counters continued, no restart
    assert (run / "report.html").is_file()


def _digest(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run.rglob("*")) if p.is_file()}


def test_resume_of_a_corrupted_checkpoint_is_a_clear_error_and_destroys_nothing(tmp_path):
    from typer.testing import CliRunner

    from prefrl.cli import app

    run = tmp_path / "run"
    small = [a if a != str(N_STEPS * ROLLOUTS) else str(N_STEPS * 4) for a in ARGS]
    small[small.index("--labels") + 1] = "12"
    result = CliRunner().invoke(app, ["control", "train", *small, "--run-dir", str(run)])
    assert result.exit_code == 0, result.output
    ckpt = run / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])  # torn write
    before = _digest(run)

    result = CliRunner().invoke(app, ["control", "train", "--resume", str(run)])
    assert result.exit_code != 0
    assert "corrupted" in result.output and "Traceback" not in result.output
    assert _digest(run) == before

    result = CliRunner().invoke(app, ["control", "train", "--resume", str(tmp_path / "nothing")])
    assert result.exit_code != 0 and "does not exist" in result.output
