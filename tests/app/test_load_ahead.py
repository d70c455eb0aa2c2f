"""The pair a page loads ahead (issue #14, item 1): `/api/upcoming` hints a different pair to each
labeller, and an answer that names it leases exactly that pair, so it plays from memory."""

from __future__ import annotations

from labelapp_helpers import add_segment_queries, login


def _upcoming(lab, current=None):
    r = lab.post("/api/upcoming", {"current_query_id": current})
    assert r.status_code == 200, r.text
    return r.json()["upcoming"]


def test_each_labeller_is_told_a_different_pair_to_load_ahead(app, store):
    ids = add_segment_queries(store, [(1, 0)] * 5)
    ann, bob = login(app, store, "ann"), login(app, store, "bob")
    a_now, b_now = ann.next(), bob.next()
    assert (a_now["id"], b_now["id"]) == (ids[0], ids[1])
    a_next, b_next = _upcoming(ann, a_now["id"]), _upcoming(bob, b_now["id"])
    assert a_next["id"] == ids[2] and b_next["id"] == ids[3]  # not the same one, nor one being labelled
    seg = store.get_query(ids[2])
    assert a_next["clips"] == [f"/clips/{seg.left_id}.mp4", f"/clips/{seg.right_id}.mp4"]
    # the hinted clips may be fetched before the pair is leased (and only by the one told)
    assert ann.client.get(a_next["clips"][0]).status_code == 200
    assert bob.client.get(a_next["clips"][0]).status_code == 404
    # asking again keeps the hint (it is this labeller's, not another's)
    assert _upcoming(ann, a_now["id"])["id"] == ids[2]


def test_an_answer_naming_the_loaded_pair_leases_it_else_the_queue_head(app, store):
    ids = add_segment_queries(store, [(1, 0)] * 5)
    ann, bob = login(app, store, "ann"), login(app, store, "bob")
    q = ann.next()
    hint = _upcoming(ann, q["id"])["id"]
    assert hint == ids[1]
    bob_q = bob.next()  # bob takes the queue head, which is ann's hinted pair
    assert bob_q["id"] == ids[1]
    # ids[3] is free: named, it is leased ahead of the higher-priority ids[2]
    r = ann.post("/api/answer", {"query_id": q["id"], "mu": 1, "next_query_id": ids[3]})
    assert r.status_code == 200 and r.json()["next"]["id"] == ids[3]
    # naming a pair someone else holds falls back to the queue head; nothing is lost or taken
    r = ann.post("/api/answer", {"query_id": ids[3], "mu": 0, "next_query_id": bob_q["id"]})
    assert r.status_code == 200, r.text
    assert r.json()["next"]["id"] == ids[2]
    assert store.get_query(bob_q["id"]).leased_to == "bob"
    assert [c.mu for c in store.comparisons()] == [1.0, 0.0]


def test_an_out_of_range_next_query_id_is_refused_and_changes_nothing(app, store):
    add_segment_queries(store, [(1, 0)] * 2)
    ann = login(app, store, "ann")
    q = ann.next()
    for bad in (2**63, -1, "3", True):
        r = ann.post("/api/answer", {"query_id": q["id"], "mu": 1, "next_query_id": bad})
        assert r.status_code == 422 and "next_query_id" in r.json()["detail"], r.text
    r = ann.post("/api/upcoming", {"current_query_id": 2**63})
    assert r.status_code == 422 and "current_query_id" in r.json()["detail"]
    assert store.count_comparisons() == 0 and store.get_query(q["id"]).leased_to == "ann"
