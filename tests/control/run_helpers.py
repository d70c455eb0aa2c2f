"""Helpers for tests that run ``prefrl control train`` in a subprocess and kill it mid-way."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from prefrl.control.checkpoint import CheckpointError, load_checkpoint

HERE = Path(__file__).parent


def prefrl_train(*args: str) -> subprocess.Popen:
    """``prefrl control train ARGS`` in a subprocess that has the test envs (``go_right_env``) registered."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    code = "import go_right_env; from prefrl.cli import app; app(prog_name='prefrl')"
    return subprocess.Popen(
        [sys.executable, "-c", code, "control", "train", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def checkpoint_or_none(run: Path):
    try:
        return load_checkpoint(run)
    except CheckpointError:
        return None


def wait_for_checkpoint(
    proc: subprocess.Popen, run: Path, iterations: int, also: Callable[[], bool] = lambda: True, timeout: float = 240
) -> dict:
    """Poll until ``run`` has a checkpoint of ≥ ``iterations`` iterations and ``also()`` holds; fail the test if
    the run ends first or nothing comes within ``timeout`` seconds (the run is then killed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = checkpoint_or_none(run)
        if state is not None and state["counters"].iteration >= iterations and also():
            return state
        if proc.poll() is not None:
            pytest.fail(f"run ended before it could be killed:\n{proc.stdout.read()}")
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"no checkpoint with {iterations} iterations within {timeout:g} s")
