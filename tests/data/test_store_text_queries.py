"""The store's batch of text pairs with their queries (one transaction) and its lookup of text pairs by meta."""

from __future__ import annotations

import pytest

from prefrl.data.store import PreferenceStore
from prefrl.data.types import TextPair


@pytest.fixture()
def store(tmp_path):
    with PreferenceStore(tmp_path / "prefs.db") as s:
        yield s


def test_add_text_queries_stores_pairs_and_queries_together(store):
    pairs = [TextPair(f"p{i}", "a", "b", meta={"run": "r1", "round": 1, "index": i}) for i in range(3)]
    qids = store.add_text_queries(pairs, priority=2.0, labeller="rm")
    assert [p.id for p in pairs] == [store.get_query(q).text_pair_id for q in qids]
    assert all(store.get_query(q).labeller == "rm" and store.get_query(q).priority == 2.0 for q in qids)
    assert store.lease_query("someone-else") is None  # restricted to "rm"
    assert store.lease_query("rm").text_pair_id == pairs[0].id


def test_add_text_queries_is_all_or_nothing(store):
    good, bad = TextPair("p", "a", "b"), TextPair("p", "a", 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"text_pairs\[1\].*response_b"):
        store.add_text_queries([good, bad])
    assert store.count_text_pairs() == 0 and store.count_queries() == 0 and good.id is None
    with pytest.raises(ValueError, match="priority"):
        store.add_text_queries([good], priority=float("nan"))
    assert store.count_text_pairs() == 0


def test_text_pairs_match_every_key_of_meta(store):
    store.add_text_pairs([
        TextPair("p", "a", "b", meta={"run": "r1", "round": 1}),
        TextPair("p", "a", "b", meta={"run": "r1", "round": 2}),
        TextPair("p", "a", "b", meta={"run": "r2", "round": 1}),
        TextPair("p", "a", "b", meta={"note": "run r1, round 1"}),
    ])  # fmt: skip
    assert [p.meta["round"] for p in store.text_pairs(meta={"run": "r1"})] == [1, 2]
    assert [p.meta["run"] for p in store.text_pairs(meta={"round": 1})] == ["r1", "r2"]
    assert store.text_pairs(meta={"run": "r1", "round": 3}) == []
    assert len(store.text_pairs()) == 4 and len(store.text_pairs(since_id=2)) == 2
