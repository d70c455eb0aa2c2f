"""`prefrl lm ppo` end to end on a tiny model: checkpoint written, loadable, parameters changed, resumable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
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
    # progress bars share the captured output; the summary is the JSON object printed last
    return json.loads(output[output.rindex('{"output_dir"') :].splitlines()[0])


def _ppo(tiny_model_dir: Path, rm_dir: Path, prompt_file: Path, out: Path, *extra: str):
    args = [
        "lm",
        "ppo",
        "--policy",
        str(tiny_model_dir),
        "--reward-model",
        str(rm_dir),
        "--prompts",
        str(prompt_file),
    ]
    args += ["--output-dir", str(out), "--batch-size", "4", "--mini-batch-size", "2", "--max-new-tokens", "6"]
    args += ["--learning-rate", "1e-2", "--ppo-epochs", "1", *extra]
    return CliRunner().invoke(app, args, catch_exceptions=False)


def test_ppo_cli_writes_a_loadable_checkpoint_and_resumes(tiny_model_dir, rm_dir, prompt_file, tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "ppo"
    result = _ppo(tiny_model_dir, rm_dir, prompt_file, out, "--total-steps", "2", "--train-top-layers", "1")
    assert result.exit_code == 0, result.output
    summary = _summary(result.output)
    assert summary["global_step"] == 2 and summary["steps_per_s"] > 0

    trained, _ = load_causal_lm(out / "policy")
    start, _ = load_causal_lm(tiny_model_dir)
    sd_t, sd_s = trained.state_dict(), start.state_dict()
    changed = [k for k in sd_s if not torch.equal(sd_s[k], sd_t[k])]
    assert changed and all("layers.1." in k or k == "model.norm.weight" for k in changed), changed
    critic = RewardModel.from_pretrained(out / "critic")
    assert not torch.equal(critic.head.weight, RewardModel.from_pretrained(rm_dir).head.weight)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2

    with pytest.raises(ValueError, match="train_top_layers=1"):
        _ppo(tiny_model_dir, rm_dir, prompt_file, out, "--total-steps", "3", "--resume", str(out))
    result = _ppo(
        tiny_model_dir,
        rm_dir,
        prompt_file,
        out,
        "--total-steps",
        "3",
        "--resume",
        str(out),
        "--train-top-layers",
        "1",
    )
    assert result.exit_code == 0, result.output
    assert _summary(result.output)["global_step"] == 3
    assert torch.load(out / "trainer_state.pt", weights_only=False)["global_step"] == 3
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3


def test_ppo_cli_lora_policy(tiny_model_dir, rm_dir, prompt_file, tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "ppo_lora"
    result = _ppo(tiny_model_dir, rm_dir, prompt_file, out, "--total-steps", "1", "--lora-r", "4")
    assert result.exit_code == 0, result.output
    assert (out / "policy" / "adapter_config.json").exists()
    model, _ = load_causal_lm(out / "policy")
    assert hasattr(model, "disable_adapter")


def test_ppo_cli_rejects_bad_options(tiny_model_dir, rm_dir, prompt_file, tmp_path):
    result = _ppo(tiny_model_dir, rm_dir, prompt_file, tmp_path / "x", "--mini-batch-size", "3")
    assert result.exit_code != 0 and "mini_batch_size" in result.output
