"""Data parallel through `accelerate launch` (2 CPU processes, gloo) matches one process."""

from __future__ import annotations

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
    cmd = [
        str(launcher),
        "launch",
        "--cpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        str(prefrl),
        "lm",
        "dpo",
        *args,
        "--output-dir",
        str(tmp_path / "ddp"),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count('"output_dir"') == 1  # one summary, from rank 0
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
