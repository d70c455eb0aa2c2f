"""Every `prefrl lm` command smoke-runs end to end on a tiny model and writes loadable output."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from prefrl.cli import app
from prefrl.lm.models import load_causal_lm
from prefrl.lm.reward_model import RewardModel

runner = CliRunner()
TRAIN = ["--max-steps", "3", "--batch-size", "4", "--learning-rate", "1e-3", "--max-length", "64"]


def _run(args: list[str]) -> dict:
    res = runner.invoke(app, ["lm", *args])
    assert res.exit_code == 0, res.output + repr(res.exception)
    last = res.stdout.strip().splitlines()[-1]
    return json.loads(last[last.index("{") :])


def _changed(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return any(not torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_help_is_generated_from_config_docs() -> None:
    res = runner.invoke(app, ["lm", "dpo", "--help"])
    assert res.exit_code == 0
    assert "implicit KL penalty" in res.output and "--label-smoothing" in res.output


def test_bad_option_is_a_usage_error(tiny_model_dir, pref_file, tmp_path) -> None:
    res = runner.invoke(
        app,
        [
            "lm",
            "dpo",
            "--model",
            str(tiny_model_dir),
            "--data",
            str(pref_file),
            "--loss-type",
            "hinge",
            "--output-dir",
            str(tmp_path),
        ],
    )
    assert res.exit_code == 2 and "loss_type" in res.output


def test_sft_dpo_and_rm_commands_write_checkpoints(tiny_model_dir, sft_file, pref_file, tmp_path) -> None:
    base, _ = load_causal_lm(tiny_model_dir)
    out = _run(
        [
            "sft",
            "--model",
            str(tiny_model_dir),
            "--data",
            str(sft_file),
            "--output-dir",
            str(tmp_path / "sft"),
            *TRAIN,
        ]
    )
    assert out["step"] == 3 and "loss/sft" in out["final"]
    sft_model, _ = load_causal_lm(tmp_path / "sft")
    assert _changed(base, sft_model)
    assert list((tmp_path / "sft" / "runs").glob("events.out.tfevents*"))

    out = _run(
        [
            "dpo",
            "--model",
            str(tmp_path / "sft"),
            "--data",
            str(pref_file),
            "--output-dir",
            str(tmp_path / "dpo"),
            "--lora-r",
            "4",
            *TRAIN,
        ]
    )
    assert {"rewards/chosen", "rewards/rejected", "reward/accuracy", "reward/margin", "loss/dpo"} <= set(
        out["final"]
    )
    dpo_model, _ = load_causal_lm(tmp_path / "dpo")  # adapter directory on the SFT base
    assert (tmp_path / "dpo" / "adapter_config.json").exists()
    ids = torch.tensor([[5, 6, 7, 8]])
    dpo_model.eval()
    sft_model.eval()
    assert not torch.allclose(dpo_model(ids).logits, sft_model(ids).logits)

    out = _run(
        [
            "rm",
            "--model",
            str(tmp_path / "sft"),
            "--data",
            str(pref_file),
            "--output-dir",
            str(tmp_path / "rm"),
            "--n-heads",
            "2",
            *TRAIN,
        ]
    )
    assert "reward/accuracy" in out["final"] and "reward/margin" in out["final"]
    rm = RewardModel.from_pretrained(tmp_path / "rm")
    assert rm.n_heads == 2 and not torch.equal(rm.score_std, torch.ones(2))


def test_generate_evaluate_and_best_of_n(tiny_model_dir, prompt_file, pref_file, tmp_path) -> None:
    _run(
        [
            "rm",
            "--model",
            str(tiny_model_dir),
            "--data",
            str(pref_file),
            "--output-dir",
            str(tmp_path / "rm"),
            *TRAIN,
        ]
    )
    gen = tmp_path / "gen.jsonl"
    _run(
        [
            "generate",
            "--model",
            str(tiny_model_dir),
            "--prompts",
            str(prompt_file),
            "--output",
            str(gen),
            "--n",
            "2",
            "--max-new-tokens",
            "6",
        ]
    )
    rows = [json.loads(line) for line in gen.read_text().splitlines()]
    assert len(rows) == 8 and all(isinstance(r["completion"], str) for r in rows)
    # The tiny model's completions are gibberish (VADER 0): plant three with known sentiment.
    planted = ["I love this, it is wonderful!", "This is terrible and I hate it.", "The book is on the table."]
    rows += [{"prompt": "Review:", "completion": c} for c in planted]
    gen.write_text("".join(json.dumps(r) + "\n" for r in rows))
    vader = SentimentIntensityAnalyzer()
    gold = [vader.polarity_scores(r["completion"])["compound"] for r in rows]
    assert gold[-3] > 0.5 and gold[-2] < -0.5 and gold[-1] == 0.0
    summary = _run(
        [
            "evaluate",
            "--data",
            str(gen),
            "--reward-model",
            str(tmp_path / "rm"),
            "--gold",
            "--output",
            str(tmp_path / "scored.jsonl"),
        ]
    )
    assert summary["n"] == 11 and "objective/scores" in summary
    assert summary["gold/scores"] == pytest.approx(sum(gold) / len(gold), abs=1e-9)
    scored = [json.loads(line) for line in (tmp_path / "scored.jsonl").read_text().splitlines()]
    assert [r["completion"] for r in scored] == [r["completion"] for r in rows]
    assert [r["gold_score"] for r in scored] == pytest.approx(gold, abs=1e-9)
    bon = _run(
        [
            "best-of-n",
            "--model",
            str(tiny_model_dir),
            "--prompts",
            str(prompt_file),
            "--reward-model",
            str(tmp_path / "rm"),
            "--n",
            "3",
            "--max-new-tokens",
            "6",
            "--output",
            str(tmp_path / "bon.jsonl"),
        ]
    )
    assert abs(bon["objective/kl"] - (torch.log(torch.tensor(3.0)).item() - 2 / 3)) < 1e-6
    assert bon["objective/scores_best"] >= bon["objective/scores_sample"]
    best = [json.loads(line) for line in (tmp_path / "bon.jsonl").read_text().splitlines()]
    assert all(r["score"] == max(r["scores"]) and r["completion"] in r["candidates"] for r in best)


def test_pairs_to_store_and_rm_from_store(tiny_model_dir, prompt_file, tmp_path) -> None:
    from prefrl.data.store import PreferenceStore

    db = str(tmp_path / "prefs.db")
    out = _run(
        [
            "pairs",
            "--model",
            str(tiny_model_dir),
            "--prompts",
            str(prompt_file),
            "--store",
            db,
            "--max-new-tokens",
            "5",
        ]
    )
    assert out["text_pairs"] == 4
    store = PreferenceStore(db)
    assert store.count_queries() == 4
    # people answer: a better, b better, tie, and one "can't tell" (excluded)
    first = out["first_id"]
    for k, mu in enumerate([1.0, 0.0, 0.5, None]):
        store.add_text_comparison(first + k, mu, teacher="human", labeller="ann")
    store.close()
    summary = _run(
        ["rm", "--model", str(tiny_model_dir), "--store", db, "--output-dir", str(tmp_path / "rm"), *TRAIN]
    )
    assert summary["n_pairs"] == 3
    assert (tmp_path / "rm" / "reward_model.json").exists()
