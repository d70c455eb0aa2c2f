"""`prefrl lm rl --algo …` end to end on a tiny model: loadable checkpoint, parameters changed, resumable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from prefrl.cli import app
from prefrl.lm.models import load_causal_lm, tiny_causal_lm
from prefrl.lm.reward_model import RewardModel


@pytest.fixture()
def rm_dir(tmp_path: Path) -> Path:
    lm, tok = tiny_causal_lm(seed=3)
    d = tmp_path / "rm"
    RewardModel.from_causal_lm(lm).save_pretrained(d, tokenizer=tok)
    return d


def _summary(output: str) -> dict:
    return json.loads(output[output.rindex('{"output_dir"') :].splitlines()[0])


def _rl(tiny_model_dir: Path, rm_dir: Path, prompt_file: Path, out: Path, *extra: str):
    args = ["lm", "rl", "--policy", str(tiny_model_dir), "--reward-model", str(rm_dir), "--prompts", str(prompt_file)]
    args += ["--output-dir", str(out), "--batch-size", "2", "--num-generations", "2", "--minibatch-size", "2"]
    args += ["--max-new-tokens", "6", "--learning-rate", "1e-2", "--update-epochs", "1", *extra]
    return CliRunner().invoke(app, args, catch_exceptions=False)


@pytest.mark.parametrize("algo", ["grpo", "reinforce++"])
def test_rl_cli_writes_a_loadable_checkpoint_and_resumes(algo, tiny_model_dir, rm_dir, prompt_file, tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / algo
    extra = ("--algo", algo, "--kl-penalty", "loss", "--kl-estimator", "k3")
    result = _rl(tiny_model_dir, rm_dir, prompt_file, out, "--total-steps", "2", *extra)
    assert result.exit_code == 0, result.output
    summary = _summary(result.output)
    assert summary["global_step"] == 2 and summary["algo"] == algo
    assert "estimator k3, as a loss term" in summary["kl"]
    trained = AutoModelForCausalLM.from_pretrained(out / "policy")
    start, _ = load_causal_lm(tiny_model_dir)
    assert any(not torch.equal(a, b) for a, b in zip(trained.parameters(), start.parameters(), strict=True))
    assert not (out / "critic").exists()

    with pytest.raises(ValueError, match="algo="):
        other = "rloo" if algo == "grpo" else "grpo"
        _rl(tiny_model_dir, rm_dir, prompt_file, out, "--total-steps", "3", "--resume", str(out), "--algo", other)
    result = _rl(tiny_model_dir, rm_dir, prompt_file, out, "--total-steps", "3", "--resume", str(out), *extra)
    assert result.exit_code == 0, result.output
    assert _summary(result.output)["global_step"] == 3
    state = torch.load(out / "trainer_state.pt", weights_only=False)
    assert state["global_step"] == 3 and state["policy_optimizer"]["state"][0]["step"] == 3 * 2  # 4 rows / 2 per minibatch
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3


def test_rl_cli_help_names_the_algorithms_and_the_kl_estimator():
    result = CliRunner().invoke(app, ["lm", "rl", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for word in ("grpo", "rloo", "reinforce++", "k1 in the reward", "k2/k3 as a loss", "token-mean", "Dr. GRPO"):
        assert word in result.output, word


def test_rl_cli_rejects_bad_options(tiny_model_dir, rm_dir, prompt_file, tmp_path):
    result = _rl(tiny_model_dir, rm_dir, prompt_file, tmp_path / "x", "--algo", "ppo")
    assert result.exit_code != 0 and "grpo" in result.output
    result = _rl(tiny_model_dir, rm_dir, prompt_file, tmp_path / "y", "--minibatch-size", "3")
    assert result.exit_code != 0 and "batch_size × num_generations" in result.output
