"""End to end: `prefrl control train --teacher human` learns from answers given through the web app.

A scripted HTTP client stands in for a person: it logs in with a login link, leases the
queries the control loop posts, looks at the two segments (here: their hidden true
returns, as a careful person would judge the clips) and answers through the API while the
loop trains. The run's reward model must be trained from exactly those answers.
"""

from __future__ import annotations

import json
import re
import threading
import time

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from prefrl.cli import app as cli_app
from prefrl.data.store import PreferenceStore

LABELS = 16


@pytest.mark.timeout(300)
def test_control_run_with_human_teacher_answered_over_http(store, live_server, tmp_path):
    token = store.add_labeller("scripted")
    stop = threading.Event()
    answered: list[tuple[int, float]] = []
    errors: list[str] = []

    def person() -> None:
        try:
            with httpx.Client(base_url=live_server, follow_redirects=True, timeout=60) as client:
                page = client.post("/login", data={"token": token})
                h = {"X-CSRF-Token": re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)}
                query = None
                while not stop.is_set():
                    if query is None:
                        query = client.post("/api/next", json={}, headers=h).json()["query"]
                        if query is None:
                            time.sleep(0.05)
                            continue
                    left, right = store.get_segments([query["left"]["segment_id"], query["right"]["segment_id"]])
                    mu = 1.0 if left.true_return > right.true_return else 0.0 if left.true_return < right.true_return else 0.5
                    r = client.post("/api/answer", json={"query_id": query["id"], "mu": mu}, headers=h)
                    assert r.status_code == 200, r.text
                    answered.append((query["id"], mu))
                    query = r.json()["next"]
        except Exception as e:  # noqa: BLE001
            errors.append(f"{type(e).__name__}: {e}")

    thread = threading.Thread(target=person, daemon=True)
    thread.start()
    run_dir = tmp_path / "run"
    try:
        result = CliRunner().invoke(cli_app, [
            "control", "train", "--env", "Pendulum-v1", "--teacher", "human", "--store", store.url,
            "--steps", "1024", "--labels", str(LABELS), "--n-steps", "128", "--n-minibatches", "4",
            "--segment-steps", "16", "--reward-epochs", "5", "--human-wait", "60", "--no-progress",
            "--run-dir", str(run_dir), "--seed", "1"])
    finally:
        stop.set()
        thread.join(timeout=30)
    assert result.exit_code == 0, result.output
    assert not errors, errors

    with PreferenceStore(store.url) as s:
        comps = s.comparisons()
        assert len(comps) == len(answered) == LABELS == s.count_queries("answered")
        assert all(c.labeller == "scripted" and c.teacher == "human" for c in comps)
        assert sorted(c.mu for c in comps) == sorted(mu for _, mu in answered)
        trained_on = len(s.training_pairs())
    history = json.loads((run_dir / "history.json").read_text())
    counters = history["counters"]
    assert counters["reward_rounds"] >= 2  # the reward model kept training as answers arrived
    assert counters["queries_posted"] == LABELS
    assert trained_on == sum(mu is not None for _, mu in answered)
    assert (run_dir / "report.html").exists()
    rows = history["iterations"]
    assert rows and all(np.isfinite(row["reward/train_loss"]) for row in rows if "reward/train_loss" in row)
    # the reward rounds during the run were trained on the answers that had arrived by then
    assert 0 < rows[-1]["reward/n_train"] + rows[-1]["reward/n_val"] <= trained_on
    assert rows[-1]["labels/answered"] <= LABELS
