"""`prefrl lm online-dpo --teacher human --serve --labellers ann,bob`: one command trains and serves (issue #15).

The run is a real subprocess, as a user starts it (tiny random model). Two scripted people read
their login links from its output and answer every text pair over HTTP while it trains, preferring
the response with more a–z letters. Every pair must be stored and answered once, by them, each
decided answer trained on, the preferred responses' log-ratio margin must rise, the progress bar
must show the answers still waiting, and the checkpoint must load with ``transformers`` and start
the next stage (another round of online DPO from it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest
import torch
from labelapp_helpers import TextPerson, read_links, stop_people, unexpected_errors

from prefrl.data.store import PreferenceStore

PROMPTS = ["hello", "the cat sat", "x", "a good film because"]
ROUNDS, BATCH = 3, 4


def start(*args: str) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "prefrl", "lm", "online-dpo", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)  # fmt: skip


def serve_and_label(args: list[str], names: list[str]) -> tuple[list[str], list[TextPerson]]:
    """Run ``lm online-dpo … --serve`` with one scripted person per name; (output lines, people)."""
    proc = start(*args, "--serve", "--labellers", ",".join(names), "--port", "0")
    output: list[str] = []
    stop = threading.Event()
    people: list[TextPerson] = []
    try:
        links = read_links(proc, names, output)
        assert all(link.startswith("http://127.0.0.1:") for link in links.values())
        people = [TextPerson(link, stop) for link in links.values()]
        for person in people:
            person.start()
        assert proc.wait(timeout=240) == 0, "".join(output)
    finally:
        stop_people(proc, stop, people)
    # the app stops with the run: a request in flight then may find the port closed
    assert not unexpected_errors(people)
    return output, people


@pytest.mark.timeout(400)
def test_online_dpo_serve_trains_on_every_answer_people_give_in_the_app(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    out = tmp_path / "odpo"
    common = ["--teacher", "human", "--prompts", str(prompts), "--batch-size", str(BATCH), "--max-new-tokens", "8",
              "--learning-rate", "1e-2", "--update-epochs", "2", "--minibatch-size", "4", "--settle-s", "0",
              "--answer-wait-s", "120"]  # fmt: skip
    output, people = serve_and_label(
        ["--policy", "tiny", "--output-dir", str(out), "--total-steps", str(ROUNDS), *common], ["ann", "bob"]
    )
    text = "".join(output)
    assert "waiting=" in text, text  # the progress bar shows the pairs still waiting for people
    summary = json.loads([line for line in output if line.startswith("{")][-1])
    assert summary["global_step"] == ROUNDS and summary["text_pairs"] == ROUNDS * BATCH

    answered = sorted(a for p in people for a in p.answered)
    with PreferenceStore(out / "prefs.db") as store:
        comps = store.comparisons(kind="text")
        assert store.count_text_pairs() == len(comps) == ROUNDS * BATCH  # every pair stored and answered once
        assert store.count_queries("answered") == len(comps) and store.count_queries("pending") == 0
        assert {c.labeller for c in comps} <= {"ann", "bob"} and {c.teacher for c in comps} == {"human"}
        assert sorted((c.text_pair_id, c.mu) for c in comps) == answered  # exactly what they said
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    decided = [mu for _, mu in answered if mu != 0.5]
    assert len(rows) == ROUNDS and sum(r["labels/trained"] for r in rows) == len(decided) > 0  # each one trained on
    assert all(r["labels/waiting"] == 0 for r in rows)
    for r in rows:
        if r["labels/trained"]:
            assert r["reward/margin"] > r["reward/margin_before"] + 0.05, r

    # the checkpoint is a transformers model, and it starts the next stage: another round of online DPO
    from transformers import AutoModelForCausalLM

    from prefrl.lm.models import load_causal_lm

    trained = AutoModelForCausalLM.from_pretrained(out / "policy")
    initial = load_causal_lm("tiny")[0]
    assert any(not torch.equal(a, b) for a, b in zip(initial.state_dict().values(), trained.state_dict().values(),
                                                     strict=True))  # fmt: skip
    output, people = serve_and_label(
        ["--policy", str(out / "policy"), "--output-dir", str(tmp_path / "odpo2"), "--total-steps", "1", *common],
        ["ann"],
    )
    summary = json.loads([line for line in output if line.startswith("{")][-1])
    assert summary["global_step"] == 1 and summary["text_pairs"] == BATCH
    rows = [json.loads(line) for line in (tmp_path / "odpo2" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["objective/kl"] == pytest.approx(0.0, abs=1e-5)  # its reference is the policy it started from
    assert rows[0]["labels/trained"] == sum(mu != 0.5 for _, mu in people[0].answered)


def test_online_dpo_serve_needs_people(tmp_path):
    from typer.testing import CliRunner

    from prefrl.cli import app

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "hi"}) + "\n")
    base = ["lm", "online-dpo", "--policy", "tiny", "--prompts", str(prompts), "--output-dir", str(tmp_path / "run")]
    result = CliRunner().invoke(app, [*base, "--reward-model", str(tmp_path), "--serve"])
    assert isinstance(result.exception, ValueError) and "--serve needs --teacher human" in str(result.exception)
    result = CliRunner().invoke(app, [*base, "--teacher", "human", "--labellers", "ann"])
    assert isinstance(result.exception, ValueError) and "--labellers needs --serve" in str(result.exception)
    assert not (tmp_path / "run").exists()  # refused before anything was written
