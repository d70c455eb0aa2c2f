"""HumanTeacher: posts queries to the store, collects answers once (after the undo window)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from prefrl.data.store import PreferenceStore
from prefrl.data.types import Segment, TextPair
from prefrl.teachers.base import Teacher
from prefrl.teachers.human import HumanTeacher


def seg(value: float) -> Segment:
    return Segment(obs=np.full((4, 2), value, np.float32), actions=np.zeros((4, 1), np.float32),
                   true_rewards=np.full(4, value, np.float32), env_id="Toy-v0")


@pytest.fixture
def store(tmp_path):
    with PreferenceStore(tmp_path / "prefs.db") as s:
        yield s


def answer_all(store, labeller, mus):
    """A person answering the queue in priority order with the given μ values."""
    done = []
    for mu in mus:
        q = store.lease_query(labeller)
        assert q is not None
        done.append((q, store.answer_query(q.id, labeller, mu)))
    return done


def test_post_saves_segments_and_queries_by_priority(store):
    teacher = HumanTeacher(store, settle_seconds=0.0)
    assert isinstance(teacher, Teacher)
    pairs = [(seg(1), seg(2)), (seg(3), seg(4))]
    ids = teacher.post(pairs, priorities=[0.1, 5.0])
    assert store.count_segments() == 4 and all(s.id is not None for p in pairs for s in p)
    assert store.count_queries("pending") == 2 and teacher.n_outstanding == 2
    first = store.lease_query("ann")
    assert first.id == ids[1]  # highest priority first
    assert teacher.collect() == []  # nothing answered yet: non-blocking, empty


def test_collect_returns_each_answer_once_with_its_pair(store):
    teacher = HumanTeacher(store, settle_seconds=0.0)
    pairs = [(seg(1), seg(2)), (seg(3), seg(4)), (seg(5), seg(6))]
    ids = teacher.post(pairs)
    answer_all(store, "ann", [1.0, None])
    got = teacher.collect()
    assert [a.query_id for a in got] == ids[:2]
    assert got[0].mu == 1.0 and got[1].mu is None and got[0].labeller == "ann"
    assert got[0].left is pairs[0][0] and got[1].right is pairs[1][1]
    assert teacher.collect() == []  # reported once
    answer_all(store, "bob", [0.0])
    (last,) = teacher.collect()
    assert last.query_id == ids[2] and last.mu == 0.0 and teacher.n_outstanding == 0


def test_answers_wait_for_the_undo_window_and_undone_answers_are_not_reported(store):
    teacher = HumanTeacher(store, settle_seconds=0.4)
    (qid,) = teacher.post([(seg(1), seg(2))])
    (_, comp), = answer_all(store, "ann", [1.0])
    assert teacher.collect() == []  # still undoable
    store.undo_answer(comp.id, "ann")
    time.sleep(0.5)
    assert teacher.collect() == []  # taken back: back in the queue
    answer_all(store, "ann", [0.0])
    time.sleep(0.5)
    (ans,) = teacher.collect()
    assert ans.query_id == qid and ans.mu == 0.0


def test_text_pairs_and_labeller_restriction(store):
    teacher = HumanTeacher(store, labeller="ann", settle_seconds=0.0)
    (qid,) = teacher.post_text([TextPair("Say hi", "hello", "go away")])
    assert store.lease_query("bob") is None  # restricted to ann
    answer_all(store, "ann", [1.0])
    (ans,) = teacher.collect()
    assert ans.text.prompt == "Say hi" and ans.mu == 1.0 and ans.left is None


def test_answer_blocks_until_timeout_and_gets_answers_from_a_person(store):
    teacher = HumanTeacher(store, settle_seconds=0.0, poll_seconds=0.02)
    assert teacher.answer([(seg(1), seg(2))], timeout=0.05) == [None]  # nobody answered

    def person():
        time.sleep(0.1)
        while store.count_queries("pending"):
            answer_all(store, "ann", [0.5])

    t = threading.Thread(target=person)
    t.start()
    mus = teacher.answer([(seg(3), seg(4))], timeout=5.0)
    t.join()
    assert mus == [0.5]
    (late,) = teacher.collect()  # the first pair's answer still arrives through collect
    assert late.mu == 0.5


def test_bad_input(store):
    teacher = HumanTeacher(store)
    with pytest.raises(ValueError, match="priorities"):
        teacher.post([(seg(1), seg(2))], priorities=[1.0, 2.0])
    with pytest.raises(ValueError, match=r"pairs\[0\]"):
        teacher.post([(seg(1),)])
    with pytest.raises(ValueError, match=r"pairs\[0\]"):
        teacher.post_text(["not a pair"])
    with pytest.raises(ValueError, match="settle_seconds"):
        HumanTeacher(store, settle_seconds=-1)
    with pytest.raises(ValueError, match="timeout"):
        teacher.answer([], timeout=-1)
