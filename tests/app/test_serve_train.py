"""`prefrl control train --teacher human --serve --labellers ann,bob`: one process trains and serves (issue #14, item 4).

The run is a real subprocess, as a user starts it. Two scripted people read their login links
from its output, log in (open the link, press the button) and label over HTTP while it trains;
they judge a pair by how far right each segment moved (what the clip shows). The loop must
keep training while answers are still waiting, train its reward on exactly their answers, and
the agent must learn to go right.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from labelapp_helpers import HttpPerson, read_links, stop_people, unexpected_errors

from prefrl.data.store import PreferenceStore

CONTROL_TESTS = Path(__file__).resolve().parents[1] / "control"
LABELS = 60


def start_serving_run(*args: str) -> subprocess.Popen:
    """``prefrl control train … --serve`` in a subprocess that knows the GoRight test env."""
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(CONTROL_TESTS), os.environ.get("PYTHONPATH", "")]))
    code = "import go_right_env; from prefrl.cli import app; app(prog_name='prefrl')"
    return subprocess.Popen([sys.executable, "-c", code, "control", "train", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)


def distance(segment) -> float:
    return float(segment.obs[-1, 0] - segment.obs[0, 0])


class ScriptedPerson(HttpPerson):
    """Prefers the segment that went further right (read from the store); ``answered`` holds (left id, right id, μ)."""

    idle_s = 0.1

    def __init__(self, link: str, store_path: Path, stop: threading.Event, pace: float = 0.15) -> None:
        super().__init__(link, stop, pace)
        self.store_path = store_path

    @contextlib.contextmanager
    def session(self):
        with PreferenceStore(self.store_path) as self.store:
            yield

    def judge(self, query: dict) -> tuple[float, tuple]:
        left, right = self.store.get_segments([query["left"]["segment_id"], query["right"]["segment_id"]])
        mu = 1.0 if distance(left) > distance(right) else 0.0
        return mu, (left.id, right.id, mu)


@pytest.mark.timeout(400)
def test_train_serving_the_app_learns_from_people_labelling_over_http(tmp_path):
    store_path, run = tmp_path / "prefs.db", tmp_path / "run"
    proc = start_serving_run(
        "--env", "prefrl-test/GoRight-v0", "--teacher", "human", "--serve", "--labellers", "ann,bob", "--port", "0",
        "--store", str(store_path), "--labels", str(LABELS), "--steps", str(128 * 32), "--n-envs", "1",
        "--n-steps", "128", "--n-minibatches", "4", "--update-epochs", "10", "--lr", "0.003", "--segment-steps", "10",
        "--pool-size", "128", "--reward-epochs", "5", "--reward-lr", "0.003", "--human-wait", "60",
        "--run-dir", str(run), "--progress",
    )  # fmt: skip
    output: list[str] = []
    stop = threading.Event()
    people: list[ScriptedPerson] = []
    try:
        links = read_links(proc, ["ann", "bob"], output)
        assert all(link.startswith("http://127.0.0.1:") for link in links.values())
        # 0.5 s a pair: slower than the app answers, so answers are still owed while the loop trains
        people = [ScriptedPerson(link, store_path, stop, pace=0.5) for link in links.values()]
        for person in people:
            person.start()
        # The app answers from its own process at the run's first priority; the loop yields the CPU
        # to it once it runs (--serve-nice, 10 by default).
        import psutil

        (app_process,) = [c for c in psutil.Process(proc.pid).children() if "serve_child" in " ".join(c.cmdline())]
        deadline = time.monotonic() + 30
        while psutil.Process(proc.pid).nice() != min(os.nice(0) + 10, 19):
            assert time.monotonic() < deadline, "the training loop did not lower its priority"
            time.sleep(0.05)
        assert app_process.nice() == os.nice(0)
        assert proc.wait(timeout=360) == 0, "".join(output)
    finally:
        stop_people(proc, stop, people)
    text = "".join(output)
    assert not unexpected_errors(people), text
    assert re.search(r"labels=\d+/60.*waiting=\d+", text), text  # the progress bar shows answers given and owed
    summary = json.loads([line for line in output if line.startswith("{")][-1])
    assert summary["run_dir"] == str(run)

    with PreferenceStore(store_path) as s:
        comps = s.comparisons()
        assert s.count_queries("answered") == len(comps) == LABELS  # every query answered exactly once
        assert {c.labeller for c in comps} == {"ann", "bob"} and {c.teacher for c in comps} == {"human"}
        assert sorted((c.left_id, c.right_id, c.mu) for c in comps) == sorted(a for p in people for a in p.answered)
    history = json.loads((run / "history.json").read_text())
    rows = history["iterations"]
    # asynchronous: the loop went on training while answers were still waiting, and took them in as they came
    assert any(row["labels/waiting"] > 0 for row in rows)
    answered = [row["labels/answered"] for row in rows]
    assert answered == sorted(answered) and answered[0] < LABELS
    assert history["counters"]["reward_rounds"] >= 2
    episodes = history["episodes"]
    first = float(np.mean([r for _, r in episodes[:10]]))
    last = float(np.mean([r for _, r in episodes[-10:]]))
    assert last > first + 10, (first, last)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--teacher", "rational", "--serve"], "--serve needs --teacher human"),
        (["--teacher", "human", "--labellers", "ann"], "--labellers needs --serve"),
        (["--teacher", "human", "--serve", "--labellers", "ann,ann"], "more than once"),
        (["--teacher", "human", "--serve", "--host", "0.0.0.0"], "serves every interface"),
        (["--teacher", "human", "--serve", "--port", "{busy}"], "cannot serve on 127.0.0.1:"),
    ],
)
def test_serve_bad_input_is_one_line_error(tmp_path, args, message):
    import socket

    import go_right_env
    from typer.testing import CliRunner

    from prefrl.cli import app

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        args = [a.format(busy=busy.getsockname()[1]) for a in args]
        result = CliRunner().invoke(app, ["control", "train", "--env", go_right_env.ENV_ID, "--labels", "30",
                                          "--steps", "1024", "--n-envs", "1", "--n-steps", "128", "--segment-steps", "10",
                                          "--run-dir", str(tmp_path / "run"), "--no-progress", *args])
    finally:
        busy.close()
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1, result.output
    assert not (tmp_path / "run").exists()  # refused before the run directory was written
