"""Tier 2: `prefrl demo reward` runs end to end with a tiny budget and reports its numbers."""

from __future__ import annotations

import math
import re

from typer.testing import CliRunner

from prefrl.cli import app

runner = CliRunner()


def test_demo_reward_runs_and_reports() -> None:
    result = runner.invoke(
        app, ["demo", "reward", "--comparisons", "80", "--epochs", "10", "--fresh", "200", "--teacher", "mistake"]
    )
    assert result.exit_code == 0, result.output
    out = result.output
    for label in ("train loss", "val loss", "val accuracy", "Spearman"):
        assert label in out
    rho = float(re.search(r"Spearman ρ on 200 fresh segments\W+(-?\d\.\d+)", out).group(1))
    train_loss = float(re.search(r"train loss \(Bradley-Terry\)\W+(\d\.\d+)", out).group(1))
    assert 0.3 < rho <= 1.0  # 80 noisy labels already learn something
    assert train_loss < math.log(2)
    assert "epoch 10/10" in out


def test_demo_reward_rejects_bad_options() -> None:
    for args, message in (
        (["--teacher", "oracle"], "unknown --teacher 'oracle'"),
        (["--comparisons", "1"], "--comparisons must be ≥ 2"),
        (["--epochs", "0"], "--epochs must be ≥ 1"),
    ):
        result = runner.invoke(app, ["demo", "reward", *args])
        assert result.exit_code == 2
        assert message in result.output
