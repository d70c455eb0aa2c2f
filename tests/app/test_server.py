"""API tests of the labelling app: every endpoint, and each kind of bad input stores nothing."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from labelapp_helpers import add_segment_queries, add_text_query, login

from prefrl.app.auth import SESSION_COOKIE
from prefrl.app.server import AppConfig


def n_answers(store) -> int:
    return store.count_comparisons()


# -- login and sessions -------------------------------------------------------------------

def test_login_sets_a_strict_httponly_cookie_and_shows_the_page(app, store):
    token = store.add_labeller("ann")
    client = TestClient(app)
    assert "Log in" in client.get("/").text  # no session: the login form
    r = client.post("/login", data={"token": token}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    assert f"{SESSION_COOKIE}=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert token not in cookie  # the token is exchanged, not stored in the cookie
    page = client.get("/")
    assert page.status_code == 200 and 'name="csrf-token"' in page.text and "ann" in page.text
    assert "Left is better" in page.text and "/static/label.js" in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and page.headers["x-frame-options"] == "DENY"
    assert "cdn" not in page.text.lower() and "https://" not in page.text  # works offline


def test_bad_tokens_and_forged_cookies_are_refused(app, make_app, store):
    store.add_labeller("ann")
    client = TestClient(app)
    assert client.get("/login", params={"token": "wrong"}).status_code == 401
    assert client.get("/login", params={"token": ""}).status_code == 401
    assert client.get("/login", params={"token": "x" * 1000}).status_code == 401
    assert client.post("/api/next").status_code == 401  # no cookie
    ann = login(app, store, "bob")
    value = ann.client.cookies.get(SESSION_COOKIE)
    body, sig = value.split(".")
    forged = TestClient(app, cookies={SESSION_COOKIE: body[:-2] + "AA." + sig})
    r = forged.post("/api/next", headers={"X-CSRF-Token": ann.csrf})
    assert r.status_code == 401 and "not logged in" in r.json()["detail"]
    other = TestClient(make_app(), cookies={SESSION_COOKIE: value})  # another server's secret
    assert other.post("/api/next", headers={"X-CSRF-Token": ann.csrf}).status_code == 401
    assert TestClient(app, cookies={SESSION_COOKIE: "garbage"}).post("/api/next").status_code == 401


def test_csrf_header_and_origin_are_required_on_posts(app, store):
    add_segment_queries(store, [(1, 0)])
    ann = login(app, store, "ann")
    assert ann.client.post("/api/next", json={}).status_code == 403  # no CSRF header
    r = ann.post("/api/next", headers={"X-CSRF-Token": "forged"})
    assert r.status_code == 403 and "CSRF" in r.json()["detail"]
    r = ann.post("/api/next", headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and "cross-origin" in r.json()["detail"]
    assert ann.post("/api/next", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert store.count_queries("leased") == 0  # nothing happened
    assert ann.post("/api/next", headers={"Origin": "http://testserver"}).status_code == 200
    # a form post from another site: no header, form content type
    q = store.queries("leased")[0]
    r = ann.client.post("/api/answer", data={"query_id": q.id, "mu": 1}, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and n_answers(store) == 0


def test_logout_ends_the_session(app, store):
    ann = login(app, store, "ann")
    r = ann.post("/logout")
    assert r.status_code == 200
    assert ann.client.post("/api/next", headers={"X-CSRF-Token": ann.csrf}).status_code == 401


# -- labelling ------------------------------------------------------------------------------

def test_next_answer_and_next_again_in_priority_order(app, store):
    ids = add_segment_queries(store, [(1, 0), (0, 1), (2, 2)])
    ann = login(app, store, "ann")
    q = ann.next()
    assert q["id"] == ids[0] and q["kind"] == "segments"
    assert q["left"]["clip_url"].endswith(".mp4") and q["left"]["length"] == 5
    assert ann.next()["id"] == ids[0]  # the same live lease, not a second one
    r = ann.answer(q["id"], 1)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["comparison"]["mu"] == 1.0 and data["comparison"]["labeller"] == "ann"
    assert data["next"]["id"] == ids[1]
    (c,) = store.comparisons()
    assert (c.left_id, c.right_id, c.mu, c.labeller, c.teacher) == (
        q["left"]["segment_id"], q["right"]["segment_id"], 1.0, "ann", "human")
    assert ann.answer(ids[1], None).json()["comparison"]["mu"] is None  # can't tell is stored
    last = ann.answer(ids[2], 0.5).json()
    assert last["next"] is None and store.count_queries("answered") == 3


def test_text_pairs_are_served_with_prompt_and_responses(app, store):
    add_text_query(store)
    ann = login(app, store, "ann")
    q = ann.next()
    assert q["kind"] == "text" and q["prompt"] == "Greet the user."
    assert q["left"]["text"] == "Hello! How can I help?" and q["right"]["text"] == "What do you want?"
    assert ann.answer(q["id"], 0).status_code == 200
    ((pair, mu),) = store.text_preferences()
    assert pair.prompt == "Greet the user." and mu == 0.0


@pytest.mark.parametrize("body, status, message", [
    ({"query_id": 1, "mu": 0.3}, 422, "mu"),
    ({"query_id": 1, "mu": "left"}, 422, "mu"),
    ({"query_id": 1, "mu": True}, 422, "mu"),
    ({"query_id": 1, "mu": float("inf")}, 400, "JSON"),
    ({"query_id": 1}, 422, "mu is required"),
    ({"query_id": "1", "mu": 1}, 422, "query_id"),
    ({"query_id": -3, "mu": 1}, 422, "query_id"),
    ({"mu": 1}, 422, "query_id"),
    ([1, 2], 400, "JSON object"),
])
def test_bad_answers_are_refused_and_store_nothing(app, store, body, status, message):
    add_segment_queries(store, [(1, 0)])
    ann = login(app, store, "ann")
    ann.next()
    if isinstance(body, dict) and body.get("mu") == float("inf"):
        r = ann.client.post("/api/answer", content='{"query_id": 1, "mu": Infinity}x',
                            headers={"X-CSRF-Token": ann.csrf, "Content-Type": "application/json"})
    else:
        r = ann.client.post("/api/answer", json=body, headers={"X-CSRF-Token": ann.csrf})
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]
    assert n_answers(store) == 0 and store.count_queries("leased") == 1


def test_malformed_and_oversized_bodies(app, store):
    add_segment_queries(store, [(1, 0)])
    ann = login(app, store, "ann")
    q = ann.next()
    h = {"X-CSRF-Token": ann.csrf}
    r = ann.client.post("/api/answer", content=b"{not json", headers={**h, "Content-Type": "application/json"})
    assert r.status_code == 400
    r = ann.client.post("/api/answer", content=b'{"query_id": 1, "mu": 1}', headers={**h, "Content-Type": "text/plain"})
    assert r.status_code == 415
    big = {"query_id": q["id"], "mu": 1, "pad": "x" * 20_000}
    r = ann.client.post("/api/answer", json=big, headers=h)
    assert r.status_code == 413 and "larger than" in r.json()["detail"]

    def chunks():  # no Content-Length: the limit is enforced while reading
        yield b'{"query_id": %d, "mu": 1, "pad": "' % q["id"]
        for _ in range(40):
            yield b"y" * 1000
        yield b'"}'

    r = ann.client.post("/api/answer", content=chunks(), headers={**h, "Content-Type": "application/json"})
    assert r.status_code == 413
    assert n_answers(store) == 0


def test_unknown_replayed_foreign_and_expired_leases(make_app, store):
    app = make_app(lease_seconds=0.5)
    ids = add_segment_queries(store, [(1, 0), (0, 1)])
    ann, bob = login(app, store, "ann"), login(app, store, "bob")
    qa, qb = ann.next(), bob.next()
    assert {qa["id"], qb["id"]} == set(ids)
    r = ann.answer(999, 1)
    assert r.status_code == 404 and "unknown query" in r.json()["detail"]
    r = ann.answer(qb["id"], 1)  # bob's lease
    assert r.status_code == 409 and "not leased to 'ann'" in r.json()["detail"]
    assert ann.answer(qa["id"], 1).status_code == 200
    r = ann.answer(qa["id"], 1)  # replay of the same answer
    assert r.status_code == 409 and "already answered" in r.json()["detail"]
    time.sleep(0.6)
    r = bob.answer(qb["id"], 0)  # the lease lapsed
    assert r.status_code == 409 and "expired" in r.json()["detail"]
    assert n_answers(store) == 1
    assert bob.next()["id"] == qb["id"]  # the lapsed query went back to the pool


def test_labellers_see_only_their_own_queue(app, store):
    (mine,) = add_segment_queries(store, [(1, 0)], labeller="ann")
    ann, bob = login(app, store, "ann"), login(app, store, "bob")
    assert bob.next() is None
    assert ann.next()["id"] == mine


def test_undo_within_the_window_brings_the_pair_back(app, store):
    ids = add_segment_queries(store, [(1, 0), (0, 1)])
    ann = login(app, store, "ann")
    q = ann.next()
    first = ann.answer(q["id"], 1).json()
    assert first["next"]["id"] == ids[1]
    r = ann.post("/api/undo", {"comparison_id": first["comparison"]["id"], "current_query_id": ids[1]})
    assert r.status_code == 200, r.text
    assert r.json()["next"]["id"] == ids[0]  # the undone pair is asked again
    assert n_answers(store) == 0
    again = ann.answer(ids[0], 0).json()
    r = ann.post("/api/undo", {"comparison_id": again["comparison"]["id"] + 100})
    assert r.status_code == 404
    bob = login(app, store, "bob")
    r = bob.post("/api/undo", {"comparison_id": again["comparison"]["id"]})
    assert r.status_code == 409 and "not made by 'bob'" in r.json()["detail"]
    assert ann.post("/api/undo", {"comparison_id": "x"}).status_code == 422
    assert n_answers(store) == 1


def test_undo_after_the_window_is_refused(make_app, store):
    app = make_app(undo_window_seconds=0.3)
    add_segment_queries(store, [(1, 0)])
    ann = login(app, store, "ann")
    comp = ann.answer(ann.next()["id"], 1).json()["comparison"]
    time.sleep(0.4)
    r = ann.post("/api/undo", {"comparison_id": comp["id"]})
    assert r.status_code == 409 and "undo window" in r.json()["detail"]
    assert n_answers(store) == 1


def test_release_gives_the_query_back(app, store):
    (qid,) = add_segment_queries(store, [(1, 0)])
    ann, bob = login(app, store, "ann"), login(app, store, "bob")
    assert ann.next()["id"] == qid and bob.next() is None
    assert bob.post("/api/release", {"query_id": qid}).status_code == 409
    assert bob.post("/api/release", {"query_id": 12345}).status_code == 404
    assert ann.post("/api/release", {"query_id": qid}).status_code == 200
    assert bob.next()["id"] == qid


# -- clips ------------------------------------------------------------------------------------

def test_clips_render_on_demand_once_and_only_for_shown_segments(app, store, renderer):
    add_segment_queries(store, [(1, 0), (0, 1)])
    ann = login(app, store, "ann")
    q = ann.next()
    assert renderer.rendered == []  # leasing does not render
    r = ann.client.get(q["left"]["clip_url"])
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
    assert r.content.endswith(f"segment {q['left']['segment_id']}".encode())
    assert ann.client.get(q["left"]["clip_url"]).status_code == 200
    assert renderer.rendered == [q["left"]["segment_id"]]  # cached on disk after the first request
    assert ann.client.get(q["right"]["clip_url"]).status_code == 200
    not_shown = q["right"]["segment_id"] + 1
    assert ann.client.get(f"/clips/{not_shown}.mp4").status_code == 404
    assert sorted(renderer.rendered) == sorted([q["left"]["segment_id"], q["right"]["segment_id"]])
    assert TestClient(app).get(q["left"]["clip_url"]).status_code == 401


def test_clip_renderer_failures_are_reported(make_app, store, tmp_path):
    from prefrl.app.server import create_app

    def broken(segment, path):
        raise RuntimeError("no GL context")

    app = create_app(store, AppConfig(clips_dir=tmp_path / "c2", allowed_hosts=("testserver",)), renderer=broken)
    add_segment_queries(store, [(1, 0)])
    ann = login(app, store, "ann")
    q = ann.next()
    r = ann.client.get(q["left"]["clip_url"])
    assert r.status_code == 500 and "no GL context" in r.json()["detail"]
    assert not list((tmp_path / "c2").glob("*.mp4"))  # no half-written clip cached


# -- admin ------------------------------------------------------------------------------------

def test_admin_stats_progress_agreement_and_oracle(app, store):
    # two pairs for ann; the first is re-asked (reversed) to a second labeller
    ids = add_segment_queries(store, [(1, 0), (0, 1)], labeller="ann")
    q1 = store.get_query(ids[0])
    rev = store.add_query(left_id=q1.right_id, right_id=q1.left_id, labeller="bob")
    add_segment_queries(store, [(3, 4)], priority=-1.0)  # leased to ann after her second answer, never answered
    add_segment_queries(store, [(5, 6)], priority=-1.0)  # leased to bob after his answer
    add_segment_queries(store, [(7, 8)], labeller="carol")  # stays pending
    ann, bob = login(app, store, "ann"), login(app, store, "bob")
    ann.answer(ann.next()["id"], 1)   # q1: left (return 1) better than right (0): correct
    ann.answer(ann.next()["id"], 1)   # q2: left (0) better than right (1): wrong
    assert bob.next()["id"] == rev
    bob.answer(rev, 0)                # reversed q1, says right better = same as ann
    admin = login(app, store, "root", role="admin")
    assert ann.client.get("/api/admin/stats").status_code == 403
    assert ann.client.get("/admin").status_code == 403
    s = admin.client.get("/api/admin/stats").json()
    assert s["progress"] == {"pending": 1, "leased": 2, "answered": 3, "total": 6}
    assert s["inter_labeller_agreement"] == {"rate": 1.0, "pairs_of_answers": 1, "repeated_items": 1}
    assert s["oracle_agreement"]["answers"] == 3 and s["oracle_agreement"]["rate"] == pytest.approx(2 / 3)
    by_name = {lab["name"]: lab for lab in s["labellers"]}
    assert by_name["ann"]["answers"] == 2 and by_name["bob"]["answers"] == 1
    assert by_name["ann"]["seconds_per_label"] is not None and by_name["root"]["role"] == "admin"
    page = admin.client.get("/admin")
    assert page.status_code == 200 and "67 %" in page.text and "100 %" in page.text
    assert TestClient(app).get("/api/admin/stats").status_code == 401


def test_admin_login_lands_on_the_admin_page(app, store):
    token = store.add_labeller("root", role="admin")
    r = TestClient(app).post("/login", data={"token": token}, follow_redirects=False)
    assert r.headers["location"] == "/admin"


def test_config_validation():
    with pytest.raises(ValueError, match="lease_seconds"):
        AppConfig(lease_seconds=0)
    with pytest.raises(ValueError, match="max_body_bytes"):
        AppConfig(max_body_bytes=10)
    with pytest.raises(ValueError, match="undo_window_seconds"):
        AppConfig(undo_window_seconds=float("nan"))


def test_a_login_link_works_once(app, store):
    from fastapi.testclient import TestClient

    token = store.add_labeller("once")
    first = TestClient(app).post("/login", data={"token": token}, follow_redirects=False)
    assert first.status_code == 303
    again = TestClient(app).post("/login", data={"token": token}, follow_redirects=False)
    assert again.status_code == 401 and "already used" in again.text
