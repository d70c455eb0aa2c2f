"""The optimiser / PEBBLE / SURF defaults of `prefrl control train` come from the label budget, as measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prefrl.control import label_defaults
from prefrl.control.config import ControlConfig
from prefrl.control.label_defaults import SURF_CROP_FRACTION, SURF_THRESHOLD, best_by_budget, recipe_for

RESULTS = Path(__file__).parents[2] / "benchmarks" / "results" / "few_labels.jsonl"


def test_the_defaults_table_is_the_best_of_the_committed_measurements() -> None:
    rows = [json.loads(line) for line in RESULTS.read_text().splitlines() if line.strip()]
    assert best_by_budget(rows) == label_defaults.MEASURED_BEST


def test_best_by_budget_scales_each_env_and_needs_every_env() -> None:
    def row(env, config, labels, ret, seed=0):
        return {"env": env, "config": config, "labels": labels, "seed": seed, "steps": 20_000, "eval_return": ret}

    rows = [
        row("A", "ppo", 100, -100.0), row("A", "pebble", 100, 900.0),  # A: pebble far ahead in raw return
        row("B", "ppo", 100, 50.0), row("B", "pebble", 100, 10.0),  # B: ppo ahead
        row("B", "ppo", 100, 40.0, seed=1),  # seeds are averaged per env
        row("A", "sac", 100, 5000.0),  # measured on A only: not a candidate
        row("C", "ppo", 100, -5000.0),  # C compares nothing at 100: left out
        row("A", "ppo", 0, 9999.0), row("A", "pebble", 200, 1.0),  # true-reward rows are no budget; 200: A only
        {**row("A", "ppo", 300, 1.0), "steps": 1_000_000},  # another run length: not mixed in
    ]  # fmt: skip
    # scaled: pebble = 1 (A) + 0 (B), ppo = 0 + 1 → tie → the cheaper recipe (ppo); 200: pebble alone
    assert best_by_budget(rows) == {100: "ppo", 200: "pebble"}
    rows.append(row("B", "pebble", 100, 200.0, seed=1))  # pebble's B mean becomes 105 > ppo's 45: best on both
    assert best_by_budget(rows)[100] == "pebble"


def test_recipe_is_chosen_by_the_nearest_measured_budget_on_mujoco_only(monkeypatch) -> None:
    monkeypatch.setattr(label_defaults, "MEASURED_BEST", {100: "pebble+surf", 200: "sac"})
    assert recipe_for("HalfCheetah-v5", 100)[0] == "pebble+surf"
    assert recipe_for("Hopper-v5", 80)[0] == "pebble+surf"  # within √2 of 100
    assert recipe_for("Hopper-v5", 250)[0] == "sac"
    assert recipe_for("Hopper-v5", 700)[0] == "ppo"  # beyond every measured budget: the old default
    assert recipe_for("Hopper-v5", 50)[0] == "ppo"
    assert recipe_for("CartPole-v1", 100)[0] == "ppo"  # not the family the recipes were measured on
    assert recipe_for("NoSuchEnv-v0", 100)[0] == "ppo"


def test_control_config_applies_the_recipe_only_when_the_optimizer_is_unset(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(label_defaults, "MEASURED_BEST", {100: "pebble+surf"})
    cfg = ControlConfig(env_id="Hopper-v5", labels=100, steps=50_000)
    assert (cfg.optimizer, cfg.pretrain_steps) == ("sac", 5_000)  # a tenth of the run
    assert (cfg.pseudo_label_threshold, cfg.crop_fraction) == (SURF_THRESHOLD, SURF_CROP_FRACTION)
    assert ControlConfig(env_id="Hopper-v5", labels=100, steps=500_000).pretrain_steps == 10_000  # PEBBLE's cap
    # what the user sets wins; with --optimizer given, the unset switches are off
    cfg = ControlConfig(env_id="Hopper-v5", labels=100, steps=50_000, crop_fraction=0, pretrain_steps=2048)
    assert (cfg.optimizer, cfg.pretrain_steps, cfg.crop_fraction) == ("sac", 2048, 0)
    cfg = ControlConfig(env_id="Hopper-v5", labels=100, steps=50_000, optimizer="sac")
    assert (cfg.pretrain_steps, cfg.pseudo_label_threshold, cfg.crop_fraction) == (0, 0, 0)
    assert ControlConfig(env_id="Hopper-v5", labels=100, steps=50_000, asynchronous=True).optimizer == "ppo"
    assert ControlConfig(env_id="Hopper-v5", labels=700, steps=50_000).optimizer == "ppo"
    # the run directory keeps the resolved values: a resume never re-decides under a newer table
    cfg = ControlConfig(env_id="Hopper-v5", labels=100, steps=50_000)
    again = ControlConfig.from_dict(json.loads(cfg.to_json()))
    monkeypatch.setattr(label_defaults, "MEASURED_BEST", {100: "ppo"})
    assert ControlConfig.from_dict(json.loads(cfg.to_json())).to_dict() == again.to_dict() == cfg.to_dict()
    with pytest.raises(ValueError, match="pseudo_label_threshold must lie in"):
        ControlConfig(env_id="Hopper-v5", labels=100, steps=50_000, pseudo_label_threshold=0.3)


def test_help_says_what_the_defaults_are_and_where_they_were_measured() -> None:
    from prefrl.cli import app

    result = CliRunner().invoke(app, ["control", "train", "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for budget, name in label_defaults.MEASURED_BEST.items():
        assert f"–{round(budget * 2**0.5)} labels: {name}" in text
    assert "benchmarks/few_labels.py" in text and "20,000 env steps" in text
