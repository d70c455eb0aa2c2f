"""Bad input gives one line naming file, line and field, and no traceback unless --debug (#12 item 5)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from prefrl.lm.data import DataError, load_completions, load_preferences
from prefrl.lm.models import tiny_tokenizer

GOOD = {"prompt": "Review:", "chosen": " good", "rejected": " bad"}


def _jsonl(path, lines: list[bytes]):  # noqa: ANN001, ANN202
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def test_non_utf8_bytes_name_file_and_line_and_can_be_skipped(tmp_path):
    bad = _jsonl(tmp_path / "prefs.jsonl", [json.dumps(GOOD).encode(), b'{"prompt": "caf\xe9", "chosen": " a", "rejected": " b"}'])
    with pytest.raises(DataError, match=r"prefs\.jsonl:line 2: not UTF-8 text \(byte 0xe9 at column 16\)"):
        load_preferences(bad)
    loaded = load_preferences(bad, skip_bad_rows=True)
    assert len(loaded) == 1 and loaded.skipped == 1
    whole = tmp_path / "prefs.json"
    whole.write_bytes(b'[\n{"prompt": "x", "chosen": "a", "rejected": "b"},\n{"prompt": "\xff"}]')
    with pytest.raises(DataError, match=r"prefs\.json:line 3: not UTF-8"):
        load_preferences(whole)


@pytest.mark.parametrize("field", ["prompt", "chosen", "rejected"])
def test_empty_fields_are_refused(tmp_path, field):
    row = {**GOOD, field: "  "}
    path = _jsonl(tmp_path / "p.jsonl", [json.dumps(GOOD).encode(), json.dumps(row).encode()])
    with pytest.raises(DataError, match=rf"p\.jsonl:line 2: field '{field}' is empty"):
        load_preferences(path)
    # a completion may be empty: generated silence is data (lm evaluate scores it)
    gen = _jsonl(tmp_path / "g.jsonl", [json.dumps({"prompt": "Hi", "completion": ""}).encode()])
    assert load_completions(gen).examples[0].completion == ""
    no_prompt = _jsonl(tmp_path / "s.jsonl", [json.dumps({"prompt": "", "completion": "x"}).encode()])
    with pytest.raises(DataError, match=r"s\.jsonl:line 1: field 'prompt' is empty"):
        load_completions(no_prompt)


def test_unknown_chat_roles_are_refused(tmp_path):
    row = {"messages": [{"role": "robot", "content": "beep"}, {"role": "assistant", "content": "hi"}]}
    path = _jsonl(tmp_path / "chat.jsonl", [json.dumps(row).encode()])
    with pytest.raises(DataError, match=r"chat\.jsonl:line 1: field 'messages' message 0 has unknown role 'robot'"):
        load_completions(path, tiny_tokenizer())


def test_the_cli_prints_one_line_and_a_traceback_only_with_debug(tmp_path):
    bad = _jsonl(tmp_path / "prefs.jsonl", [b'{"prompt": "", "chosen": " a", "rejected": " b"}'])
    cmd = [sys.executable, "-m", "prefrl", "lm", "dpo", "--model", "tiny", "--data", str(bad),
           "--output-dir", str(tmp_path / "out"), "--max-steps", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PREFRL_DEBUG", None)
    plain = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert plain.returncode == 1
    assert "Traceback" not in plain.stderr
    lines = [line for line in plain.stderr.splitlines() if line.strip()]
    assert lines[-1] == f"prefrl: error: {bad}:line 1: field 'prompt' is empty"
    debug = subprocess.run([*cmd, "--debug"], capture_output=True, text=True, env=env, timeout=300)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and debug.stderr.rstrip().endswith("is empty")
