"""Errors that change nothing (issue #14 item 3): out-of-range ids, malformed or too-deep JSON and a
failing undo are refused with a 4xx that says why, and the store is exactly as before."""

from __future__ import annotations

import pytest
from labelapp_helpers import add_segment_queries, login


def snapshot(store):
    """Everything a labelling request may change: the comparisons and each query's state."""
    return ([(c.id, c.mu, c.labeller, c.left_id, c.right_id) for c in store.comparisons()],
            [(q.id, q.status, q.leased_to) for q in store.queries()])


@pytest.fixture
def answered(app, store):
    """ann answered the first of two queries and now holds a lease on the second."""
    ids = add_segment_queries(store, [(1, 0), (0, 1)])
    ann = login(app, store, "ann")
    first = ann.answer(ann.next()["id"], 1).json()
    assert first["next"]["id"] == ids[1]
    return ann, first["comparison"]["id"], ids


BIG = [2**31, 2**63, 2**64, 10**30]


@pytest.mark.parametrize("value", BIG)
@pytest.mark.parametrize("url, field", [
    ("/api/answer", "query_id"), ("/api/release", "query_id"),
    ("/api/undo", "comparison_id"), ("/api/undo", "current_query_id"),
])
def test_out_of_range_ids_are_refused_and_change_nothing(store, answered, url, field, value):
    ann, comparison_id, ids = answered
    body = {"query_id": ids[1], "mu": 1, "comparison_id": comparison_id, "current_query_id": ids[1]}
    body[field] = value
    before = snapshot(store)
    r = ann.post(url, body)
    assert r.status_code == 422, r.text
    assert field in r.json()["detail"] and "id" in r.json()["detail"]
    assert snapshot(store) == before


def test_out_of_range_clip_id_is_a_4xx(app, store):
    add_segment_queries(store, [(1, 0)])
    admin = login(app, store, "root", role="admin")  # admins may fetch any clip: the id reaches the store
    assert admin.client.get(f"/clips/{2**63}.mp4").status_code == 422
    assert admin.client.get(f"/clips/{2**31 - 1}.mp4").status_code == 404


@pytest.mark.parametrize("url", ["/api/answer", "/api/release", "/api/undo"])
@pytest.mark.parametrize("raw, why", [
    (b"[" * 8000 + b"]" * 8000, "nested too deeply"),
    (b'{"query_id": ' + b"[" * 5000 + b"]" * 5000 + b', "mu": 1}', "nested too deeply"),
    (b'{"query_id": 1, "mu": NaN}', "NaN"),
    (b'{"query_id": 1, "mu": 1', "not valid JSON"),
    (b'{"query_id": 1, "mu": 1}\xff', "not valid JSON"),
])
def test_malformed_or_too_deep_json_is_400_and_changes_nothing(store, answered, url, raw, why):
    ann, _, _ = answered
    assert len(raw) < 16 * 1024  # under the body limit: the parser itself must refuse it
    before = snapshot(store)
    r = ann.client.post(url, content=raw, headers={"X-CSRF-Token": ann.csrf, "Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert why in r.json()["detail"]
    assert snapshot(store) == before


def test_a_failing_undo_changes_nothing(store, answered):
    """The case of issue #14: a valid comparison with a bad current_query_id used to be undone, then 500."""
    ann, comparison_id, ids = answered
    before = snapshot(store)
    r = ann.post("/api/undo", {"comparison_id": comparison_id, "current_query_id": 2**64})
    assert r.status_code == 422 and "current_query_id" in r.json()["detail"]
    r = ann.post("/api/undo", {"comparison_id": comparison_id, "current_query_id": 999})
    assert r.status_code == 404 and "unknown query 999" in r.json()["detail"]
    assert snapshot(store) == before
    assert store.get_query(ids[0]).status == "answered" and store.get_query(ids[1]).leased_to == "ann"
    # the same undo with the displayed pair: happens entirely, and the undone pair comes back first
    r = ann.post("/api/undo", {"comparison_id": comparison_id, "current_query_id": ids[1]})
    assert r.status_code == 200 and r.json()["next"]["id"] == ids[0]
    assert store.count_comparisons() == 0 and store.get_query(ids[1]).status == "pending"
