"""Data parallel through the README's `accelerate launch` command (2 CPU processes, gloo) matches one
process; a launch that would not be one run is refused in one line (#12 item 2)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from prefrl.lm.dpo import train_dpo
from prefrl.lm.dpo_config import DPOConfig
from prefrl.lm.models import load_causal_lm


@pytest.mark.slow  # two extra Python processes with torch + transformers: ~30 s on 2 cores
def test_two_process_dpo_equals_single_process(tiny_model_dir, pref_file, tmp_path) -> None:
    launcher = Path(sys.executable).parent / "accelerate"
    prefrl = Path(sys.executable).parent / "prefrl"
    # accelerate is a declared dependency and prefrl this package's own script: both must be installed
    assert launcher.exists(), f"{launcher} missing: reinstall the dependencies (make install)"
    assert prefrl.exists(), f"{prefrl} missing: install the package (make install, or pip install -e .)"
    args = [
        "--model",
        str(tiny_model_dir),
        "--data",
        str(pref_file),
        "--max-steps",
        "3",
        "--batch-size",
        "4",
        "--learning-rate",
        "1e-3",
        "--max-grad-norm",
        "0",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # exactly the README's command: accelerate launch --multi_gpu --num_processes 2 -m prefrl lm dpo …
    cmd = [str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "-m", "prefrl", "lm", "dpo", *args]
    cmd += ["--output-dir", str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count('"output_dir"') == 1  # one summary, from rank 0
    summary = json.loads(next(line for line in proc.stdout.splitlines() if '"output_dir"' in line))
    assert summary["num_processes"] == 2
    sums = summary["rank_param_checksums"]
    assert len(sums) == 2 and sums[0] == sums[1]  # both ranks end with the same parameters
    rank0, rank1 = summary["rank_rows"]
    for a_rows, b_rows in zip(rank0, rank1, strict=True):  # each global batch of 4 split into two shards
        assert len(a_rows) == len(b_rows) == 2 and not set(a_rows) & set(b_rows)
    # the same global batches in one process: DDP's averaged gradient equals the full-batch one
    shutil.rmtree(tmp_path / "single", ignore_errors=True)
    train_dpo(
        DPOConfig(
            model=str(tiny_model_dir),
            data=str(pref_file),
            max_steps=3,
            batch_size=4,
            learning_rate=1e-3,
            max_grad_norm=0.0,
            output_dir=str(tmp_path / "single"),
        )
    )
    a, _ = load_causal_lm(tmp_path / "ddp")
    b, _ = load_causal_lm(tmp_path / "single")
    base, _ = load_causal_lm(tiny_model_dir)
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4, msg=k)
    assert any(not torch.equal(x, z) for x, z in zip(a.state_dict().values(), base.state_dict().values()))


@pytest.mark.slow  # one extra accelerate process
def test_a_launch_that_runs_one_process_of_two_is_refused(tiny_model_dir, pref_file, tmp_path) -> None:
    launcher = Path(sys.executable).parent / "accelerate"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [str(launcher), "launch", "--cpu", "--num_processes", "2", "-m", "prefrl", "lm", "dpo", "--model"]
    cmd += [str(tiny_model_dir), "--data", str(pref_file), "--max-steps", "1", "--output-dir", str(tmp_path / "x")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    ours = [line for line in proc.stderr.splitlines() if line.startswith("prefrl: error:")]
    assert len(ours) == 1 and "accelerate launch was asked for several processes but started one" in ours[0]
    assert "prefrl/lm/" not in proc.stderr  # no traceback of ours (accelerate adds its own for the exit status)
    assert not (tmp_path / "x" / "config.json").exists()


def test_world_size_mismatch_is_refused(monkeypatch) -> None:
    from prefrl.lm.launch import LaunchError, check_launch, require_single_process

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(LaunchError, match="accelerate started 2 processes but each runs alone"):
        check_launch(1)
    check_launch(2)
    with pytest.raises(LaunchError, match="prefrl lm ppo runs in one process"):
        require_single_process("prefrl lm ppo")
    monkeypatch.delenv("WORLD_SIZE")
    for name, value in (("ACCELERATE_USE_CPU", "True"), ("MASTER_PORT", "29500")):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    with pytest.raises(LaunchError, match="asked for several processes but started one"):
        check_launch(1)
