"""`prefer_query_id`: lease the pair a page has already loaded when it is still free (issue #14, item 1)."""

from __future__ import annotations

import numpy as np
import pytest

from prefrl.data.store import PreferenceStore
from prefrl.data.types import Segment


@pytest.fixture
def store(tmp_path):
    with PreferenceStore(tmp_path / "p.sqlite") as s:
        ids = s.add_segments([Segment(obs=np.zeros((3, 2), np.float32), actions=np.zeros((3, 1), np.float32))
                              for _ in range(2)])
        for prio in (3.0, 2.0, 1.0):
            s.add_query(left_id=ids[0], right_id=ids[1], priority=prio)
        s.add_query(left_id=ids[0], right_id=ids[1], priority=0.0, labeller="bob")
        yield s


def test_a_free_preferred_query_is_leased_before_the_queue_head(store):
    assert store.lease_query("ann", prefer_query_id=3).id == 3
    assert store.lease_query("ann", prefer_query_id=1).id == 3  # a live lease is returned as it is


def test_a_preferred_query_that_is_taken_restricted_or_unknown_falls_back_to_the_head(store):
    assert store.lease_query("bob").id == 1
    assert store.lease_query("ann", prefer_query_id=1).id == 2  # held by bob
    store.answer_query(2, "ann", 1.0)
    assert store.lease_query("ann", prefer_query_id=4).id == 3  # bob's own query
    store.answer_query(3, "ann", 1.0)
    assert store.lease_query("ann", prefer_query_id=99) is None  # unknown; nothing else free for ann
    with pytest.raises(ValueError, match="prefer_query_id"):
        store.lease_query("ann", prefer_query_id=0)


def test_answer_and_lease_next_prefers_in_the_same_transaction(store):
    assert store.lease_query("ann").id == 1
    comparison, nxt = store.answer_and_lease_next(1, "ann", 0.0, prefer_query_id=3)
    assert comparison.mu == 0.0 and nxt.id == 3 and store.get_query(2).status == "pending"
    with pytest.raises(ValueError, match="prefer_query_id"):
        store.answer_and_lease_next(3, "ann", 1.0, prefer_query_id=-5)
    assert store.get_query(3).status == "leased" and store.count_comparisons() == 1  # refused: nothing changed
