"""#12 item 7: a non-empty output dir needs --resume or --overwrite; `lm ppo --gold vader|module:function`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from prefrl.cli import app
from prefrl.lm.models import tiny_causal_lm
from prefrl.lm.reward_model import RewardModel

runner = CliRunner()


def test_a_non_empty_output_dir_is_refused_without_resume_or_overwrite(tiny_model_dir, sft_file, tmp_path):
    out = tmp_path / "sft"
    out.mkdir()
    (out / "notes.txt").write_text("someone's files")
    args = ["lm", "sft", "--model", str(tiny_model_dir), "--data", str(sft_file), "--output-dir", str(out),
            "--max-steps", "1", "--batch-size", "2"]
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2
    text = " ".join(refused.output.replace("│", " ").split())  # the message as one line, out of its box
    assert "is not empty: pass --resume" in text and "or --overwrite to delete its contents" in text
    assert (out / "notes.txt").exists() and not (out / "config.json").exists()
    done = runner.invoke(app, [*args, "--overwrite"])
    assert done.exit_code == 0, done.output
    assert not (out / "notes.txt").exists() and (out / "config.json").exists()
    resumed = runner.invoke(app, [*args[:-4], "--max-steps", "2", "--batch-size", "2", "--resume", str(out)])
    assert resumed.exit_code == 0, resumed.output


def _scorer_module(tmp_path: Path) -> str:
    (tmp_path / "my_gold.py").write_text(
        "def length(prompts, responses):\n    return [float(len(r)) for r in responses]\n"
    )
    return "my_gold:length"


@pytest.mark.parametrize("gold", ["vader", "module"])
def test_ppo_logs_a_gold_reward_from_the_cli(tiny_model_dir, prompt_file, tmp_path, monkeypatch, gold):
    torch.set_num_threads(1)
    lm, tok = tiny_causal_lm(seed=3)
    rm_dir = tmp_path / "rm"
    RewardModel.from_causal_lm(lm).save_pretrained(rm_dir, tokenizer=tok)
    if gold == "module":
        monkeypatch.syspath_prepend(str(tmp_path))
        spec = _scorer_module(tmp_path)
    else:
        spec = "vader"
    out = tmp_path / "ppo"
    result = runner.invoke(app, ["lm", "ppo", "--policy", str(tiny_model_dir), "--reward-model", str(rm_dir),
                                 "--prompts", str(prompt_file), "--output-dir", str(out), "--batch-size", "4",
                                 "--minibatch-size", "2", "--max-new-tokens", "6", "--total-steps", "1",
                                 "--gold", spec], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert "objective/gold" in row and "objective/gold_proxy_diverging" in row
    if gold == "module":
        assert row["objective/gold"] == pytest.approx(row["response/length"], rel=0.5)  # mean reply length > 0
        assert row["objective/gold"] > 0


def test_a_bad_gold_spec_is_a_usage_error(tiny_model_dir, prompt_file, tmp_path):
    result = runner.invoke(app, ["lm", "ppo", "--policy", "tiny", "--reward-model", str(tmp_path),
                                 "--prompts", str(prompt_file), "--gold", "not a spec"])
    assert result.exit_code == 2 and "gold must be 'vader' or 'module:function'" in result.output
