"""`prefrl lm kto` on a tiny model, and one-line errors for bad unpaired data."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from prefrl.cli import app
from prefrl.lm.data import DataError, load_unpaired
from prefrl.lm.models import load_causal_lm

from .conftest import write_jsonl


def _rows(n: int = 8) -> list[dict]:
    return [
        {"prompt": f"Review {i}:", "completion": " good great fine" if i % 2 else " bad awful", "label": bool(i % 2)}
        for i in range(n)
    ]


def test_missing_label_names_file_line_and_field(tmp_path):
    rows = _rows(3)
    del rows[1]["label"]
    path = write_jsonl(tmp_path / "kto.jsonl", rows)
    with pytest.raises(DataError) as exc:
        load_unpaired(path)
    message = str(exc.value)
    assert str(path) in message and "line 2" in message and "'label'" in message and "\n" not in message


@pytest.mark.parametrize("bad", ["true", 1, 0.0, [True]])
def test_non_boolean_label_names_file_line_and_field(tmp_path, bad):
    rows = _rows(3)
    rows[2]["label"] = bad
    path = write_jsonl(tmp_path / "kto.jsonl", rows)
    with pytest.raises(DataError) as exc:
        load_unpaired(path)
    message = str(exc.value)
    assert str(path) in message and "line 3" in message and "'label'" in message and "true or false" in message


def test_bad_rows_are_skipped_on_request(tmp_path):
    rows = _rows(4)
    rows[0]["label"] = "yes"
    loaded = load_unpaired(write_jsonl(tmp_path / "kto.jsonl", rows), skip_bad_rows=True)
    assert len(loaded) == 3 and loaded.skipped == 1


def test_kto_cli_trains_and_rejects_bad_data_in_one_line(tiny_model_dir, tmp_path):
    torch.set_num_threads(1)
    data = write_jsonl(tmp_path / "kto.jsonl", _rows())
    out = tmp_path / "kto"
    args = ["lm", "kto", "--model", str(tiny_model_dir), "--data", str(data), "--output-dir", str(out)]
    args += ["--batch-size", "4", "--max-steps", "3", "--learning-rate", "1e-3", "--beta", "0.5"]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    trained, _ = load_causal_lm(out)
    start, _ = load_causal_lm(tiny_model_dir)
    assert any(not torch.equal(a, b) for a, b in zip(trained.parameters(), start.parameters(), strict=True))
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert logged[0]["loss/kto"] == pytest.approx(0.5, abs=1e-4)  # policy = reference at the first step
    assert logged[-1]["rewards/desirable"] > logged[-1]["rewards/undesirable"]



def test_kto_cli_prints_one_line_naming_file_line_and_field(tmp_path):
    bad = _rows()
    bad[4]["label"] = "no"
    path = write_jsonl(tmp_path / "bad.jsonl", bad)
    cmd = [sys.executable, "-m", "prefrl", "lm", "kto", "--model", "tiny", "--data", str(path),
           "--output-dir", str(tmp_path / "out"), "--max-steps", "1"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PREFRL_DEBUG", None)
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert lines[-1] == f"prefrl: error: {path}:line 5: field 'label' must be true or false, got str 'no'"
