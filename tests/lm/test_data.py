from __future__ import annotations

import json

import pytest

from prefrl.lm.data import DataError, load_completions, load_preferences, load_prompts
from prefrl.lm.models import tiny_tokenizer


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_standard_preferences_jsonl_parquet_and_datasets(tmp_path) -> None:
    rows = [
        {"prompt": "P1", "chosen": " good", "rejected": " bad"},
        {"prompt": "P2", "chosen": "x", "rejected": "y"},
    ]
    jl = load_preferences(write_jsonl(tmp_path / "a.jsonl", rows))
    assert [(e.prompt, e.chosen, e.rejected, e.mu) for e in jl] == [
        ("P1", " good", " bad", 1.0),
        ("P2", "x", "y", 1.0),
    ]
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    assert load_preferences(tmp_path / "a.parquet").examples == jl.examples
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "ds"))
    assert load_preferences(tmp_path / "ds").examples == jl.examples
    (tmp_path / "a.json").write_text(json.dumps(rows))
    assert load_preferences(tmp_path / "a.json").examples == jl.examples


def test_question_response_format(tmp_path) -> None:
    rows = [{"question": "Q?", "response_chosen": "yes", "response_rejected": "no"}]
    (ex,) = load_preferences(write_jsonl(tmp_path / "q.jsonl", rows))
    assert (ex.prompt, ex.chosen, ex.rejected) == ("Q?", "yes", "no")
    (p,) = load_prompts(tmp_path / "q.jsonl")
    assert p.prompt == "Q?"


def test_conversational_preferences_explicit_and_implicit_prompt(tmp_path) -> None:
    tok = tiny_tokenizer()
    user = [{"role": "user", "content": "Hi?"}]
    rows = [
        {
            "prompt": user,
            "chosen": [{"role": "assistant", "content": "Hello!"}],
            "rejected": [{"role": "assistant", "content": "Go away."}],
        },
        {
            "chosen": user + [{"role": "assistant", "content": "Hello!"}],
            "rejected": user + [{"role": "assistant", "content": "Go away."}],
        },
    ]
    a, b = load_preferences(write_jsonl(tmp_path / "c.jsonl", rows), tokenizer=tok)
    assert a == b
    assert a.prompt == "<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n"
    assert a.chosen == "Hello!<|im_end|>\n" and a.rejected == "Go away.<|im_end|>\n"


def test_completions_and_messages(tmp_path) -> None:
    rows = [
        {"prompt": "Say:", "completion": " ok"},
        {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]},
    ]
    a, b = load_completions(write_jsonl(tmp_path / "s.jsonl", rows))
    assert (a.prompt, a.completion) == ("Say:", " ok")
    assert b.prompt.endswith("<|im_start|>assistant\n") and b.completion == "A<|im_end|>\n"
    prompts = load_prompts(tmp_path / "s.jsonl")
    assert prompts[0].prompt == "Say:" and prompts[1].prompt == b.prompt


def test_malformed_rows_name_file_line_and_field(tmp_path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(
        json.dumps({"prompt": "ok", "chosen": "a", "rejected": "b"})
        + "\n"
        + json.dumps({"prompt": "p", "chosen": "a"})
        + "\n"
        + "{not json\n"
        + json.dumps({"prompt": "p", "chosen": 3, "rejected": "b"})
        + "\n"
    )
    with pytest.raises(DataError, match=r"bad\.jsonl:line 2: missing field 'rejected'"):
        load_preferences(path)
    res = load_preferences(path, skip_bad_rows=True)
    assert len(res) == 1 and res.skipped == 3
    path.write_text(json.dumps({"prompt": "p", "chosen": 3, "rejected": "b"}) + "\n")
    with pytest.raises(DataError, match=r"line 1: field 'chosen' must be a string"):
        load_preferences(path)
    with pytest.raises(DataError, match="no usable rows"):
        load_preferences(path, skip_bad_rows=True)
    with pytest.raises(DataError, match="unknown data format"):
        load_prompts(tmp_path / "x.csv") if (tmp_path / "x.csv").write_text("a") else None
    with pytest.raises(DataError, match="no such file"):
        load_prompts(tmp_path / "missing.jsonl")
    assert issubclass(DataError, ValueError)
