"""End to end (issue #14, must-show): a person in Chromium teaches a training run through the app.

`control train --teacher human --serve` (:func:`prefrl.cli.serve_train.train_serving`, what the
command runs) trains GoRight while it serves the app in the same process. A Playwright "person"
in a real Chromium logs in with the printed link, waits until both clips of each pair are loaded
and playable, and answers by keyboard by a scoring function hidden from the learner (the
segment's true return, looked up in the store by the test only). The loop never waits for them:
it keeps collecting and training on whatever has been answered. The true return must rise well
above the random policy's.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import go_right_env
import numpy as np
import pytest
from labelapp_helpers import CHROMIUM, CHROMIUM_MISSING, chromium, moving_dot_clip

from prefrl.cli.serve_train import train_serving
from prefrl.control.config import ControlConfig
from prefrl.control.loop import PreferenceLoop
from prefrl.reward.trainer import RewardTrainerConfig
from prefrl.rl.ppo import PPOConfig

pytestmark = [pytest.mark.browser, pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=CHROMIUM_MISSING)]
LABELS = 40


class BrowserPerson(threading.Thread):
    """Labels in Chromium until told to stop: watches both clips load, then presses ← or →."""

    def __init__(self, link: str, store, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.link, self.store, self.stop = link, store, stop
        self.answers: list[tuple[int, int, float]] = []  # (left id, right id, μ)
        self.errors: list[str] = []
        self.console_errors: list[str] = []

    def hidden_score(self, segment_id: int) -> float:
        """What this person likes, unknown to the learner: the segment's true return (moving right)."""
        (segment,) = self.store.get_segments([segment_id])
        return float(segment.true_return)

    def run(self) -> None:
        try:
            with chromium() as browser:
                page = browser.new_page(bypass_csp=True)  # bypass_csp only for the test's wait predicates
                # once every pair is answered the run ends and its server with it: the page's polls are refused then
                page.on("console", lambda m: self.console_errors.append(m.text)
                        if m.type == "error" and len(self.answers) < LABELS else None)
                page.goto(self.link)
                page.get_by_role("button", name="Log in").click()
                page.wait_for_url(self.link.split("/login")[0] + "/")
                shown = ""
                while not self.stop.is_set():
                    try:  # the next pair: a new query id on the page
                        page.wait_for_function(
                            f"(d => d.queryId > 0 && d.queryId !== '{shown}')(document.getElementById('app').dataset)",
                            timeout=1000)
                    except Exception:  # noqa: BLE001 - nothing to label yet: look again
                        continue
                    shown = page.locator("#app").get_attribute("data-query-id")
                    page.wait_for_function("[...document.querySelectorAll('video')].every(v => v.readyState >= 2)",
                                           timeout=30_000)  # both clips loaded: the person can watch them
                    query = self.store.get_query(int(shown))
                    left, right = self.hidden_score(query.left_id), self.hidden_score(query.right_id)
                    mu = 1.0 if left > right else 0.0
                    page.keyboard.press("ArrowLeft" if mu == 1.0 else "ArrowRight")
                    self.answers.append((query.left_id, query.right_id, mu))
        except Exception as e:  # noqa: BLE001
            if not self.stop.is_set():
                self.errors.append(f"{type(e).__name__}: {e}")


@pytest.mark.timeout(420)
def test_a_person_in_chromium_teaches_a_training_run_through_the_app(tmp_path):
    cfg = ControlConfig(
        env_id=go_right_env.ENV_ID, teacher="human", labels=LABELS, steps=128 * 48, segment_steps=10, n_envs=1,
        pool_size=128, reward=RewardTrainerConfig(epochs=5, lr=3e-3), run_dir=str(tmp_path / "run"), seed=0,
        ppo=PPOConfig(num_steps=128, num_minibatches=4, update_epochs=10, learning_rate=3e-3),
        human_wait_seconds=60.0, progress=False, checkpoint_minutes=60.0,
    )  # fmt: skip
    loop = PreferenceLoop(cfg)
    stop = threading.Event()
    people: list[BrowserPerson] = []
    printed: list[str] = []

    def start_person(server, links) -> None:
        person = BrowserPerson(links["ann"], loop.store, stop)
        people.append(person)
        person.start()

    try:
        run_dir = train_serving(loop, ["ann"], port=0, renderer=moving_dot_clip, echo=printed.append,
                                on_serving=start_person)
    finally:
        stop.set()
        for person in people:
            person.join(timeout=60)
    (person,) = people
    assert not person.errors, person.errors
    assert not person.console_errors, person.console_errors
    assert any(line.startswith("Login link for ann: http://127.0.0.1:") for line in printed), printed

    comps = loop.store.comparisons()
    assert len(comps) == LABELS == loop.store.count_queries("answered")  # every pair answered once, none lost
    assert {(c.labeller, c.teacher) for c in comps} == {("ann", "human")}
    assert sorted((c.left_id, c.right_id, c.mu) for c in comps) == sorted(person.answers)
    history = json.loads((run_dir / "history.json").read_text())
    rows = history["iterations"]
    assert any(row["labels/waiting"] > 0 for row in rows)  # it trained on while answers were owed
    assert rows[0]["labels/answered"] < LABELS and history["counters"]["reward_rounds"] >= 2
    first = float(np.mean([r for _, r in history["episodes"][:10]]))  # the random policy
    last = float(np.mean([r for _, r in history["episodes"][-10:]]))
    assert abs(first) < 10
    assert last > first + 10, (first, last)
