"""Shared fixtures of the LM tests: a tiny random Llama saved to disk and small data files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from prefrl.lm.models import tiny_causal_lm


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama + tokenizer written with save_pretrained (loadable by path)."""
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("tiny_lm")
    model, tokenizer = tiny_causal_lm(seed=0)
    model.save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture()
def pref_file(tmp_path: Path) -> Path:
    """8 preference rows where the chosen response is always the positive one."""
    rows = [
        {"prompt": f"Review {i}:", "chosen": " good great fine", "rejected": " bad awful poor"}
        for i in range(8)
    ]
    return write_jsonl(tmp_path / "prefs.jsonl", rows)


@pytest.fixture()
def sft_file(tmp_path: Path) -> Path:
    rows = [{"prompt": f"Say hi {i}:", "completion": " hi hi"} for i in range(8)]
    return write_jsonl(tmp_path / "sft.jsonl", rows)


@pytest.fixture()
def prompt_file(tmp_path: Path) -> Path:
    rows = [{"prompt": f"Tell me about {w}:"} for w in ("cats", "dogs", "rain", "tea")]
    return write_jsonl(tmp_path / "prompts.jsonl", rows)
