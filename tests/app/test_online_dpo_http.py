"""Online DPO from people (issue #15, item 2): each round's pairs go to the web app through the store,
a scripted person answers them over HTTP, and the round trains on exactly those answers.

The app is served by uvicorn in a thread of this process (:class:`prefrl.app.live.LiveServer`) over
the run's store; the person is an HTTP client in another thread that logs in with a link and labels
every text pair it is shown, preferring the response with more a–z letters.
"""

from __future__ import annotations

import copy
import threading

import pytest
import torch
from labelapp_helpers import FakeRenderer, TextPerson

from prefrl.app.live import LiveServer, labeller_links
from prefrl.data.store import PreferenceStore
from prefrl.lm.models import tiny_causal_lm
from prefrl.lm.online_dpo import OnlineDPOConfig, OnlineDPOTrainer
from prefrl.teachers.human import HumanTeacher

PROMPTS = ["hello", "the cat sat", "x", "a good film because"]
@pytest.mark.timeout(300)
def test_online_dpo_round_learns_from_a_person_answering_in_the_web_app(tmp_path):
    torch.set_num_threads(1)
    path = tmp_path / "prefs.db"
    policy, tok = tiny_causal_lm(seed=0)
    cfg = OnlineDPOConfig(batch_size=8, max_new_tokens=10, temperature=1.0, learning_rate=1e-2, update_epochs=2,
                          minibatch_size=4, answer_wait_s=60.0, settle_s=0.0)  # fmt: skip
    stop = threading.Event()
    with PreferenceStore(path) as app_store, PreferenceStore(path) as store, \
            LiveServer(app_store, port=0, clips_dir=tmp_path / "clips", renderer=FakeRenderer()) as server:
        person = TextPerson(labeller_links(app_store, ["ann"], server.url)["ann"], stop)
        person.start()
        trainer = OnlineDPOTrainer(policy, copy.deepcopy(policy), HumanTeacher(store), store, tok, cfg)
        start = [p.detach().clone() for p in trainer.policy.parameters()]
        try:
            history = [trainer.step((PROMPTS * 2)[: cfg.batch_size]) for _ in range(2)]
        finally:
            stop.set()
            person.join(timeout=30)
        assert not person.errors, person.errors

        comps = store.comparisons(kind="text")
        assert store.count_text_pairs() == len(comps) == 2 * cfg.batch_size  # every pair stored and answered once
        assert store.count_queries("answered") == len(comps) and store.count_queries("pending") == 0
        assert {(c.labeller, c.teacher) for c in comps} == {("ann", "human")}
        assert sorted((c.text_pair_id, c.mu) for c in comps) == sorted(person.answered)  # exactly what ann said
        decided = [mu for _, mu in person.answered if mu != 0.5]
        assert sum(m["labels/trained"] for m in history) == len(decided) > 0  # trained on every decided answer
        assert all(m["labels/waiting"] == 0 for m in history)
    # it trained on them: the parameters moved and the preferred responses' log-ratio margin rose
    assert any(not torch.equal(a, b) for a, b in zip(start, trainer.policy.parameters(), strict=True))
    for m in history:
        assert m["reward/margin"] > m["reward/margin_before"] + 0.05, m
