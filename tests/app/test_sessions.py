"""Sessions that really end (issue #14 item 2): logout, a new login link, disabling or removing a
labeller end every session of theirs on the server; a cookie for an unknown labeller is refused;
opening a login link spends nothing; the Host header is checked; failed logins are rate-limited."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from labelapp_helpers import Labeller, add_segment_queries, login
from typer.testing import CliRunner

from prefrl.app.auth import SESSION_COOKIE
from prefrl.cli import app as cli_app


def second_device(app, ann: Labeller) -> Labeller:
    """Another browser holding the same session cookie (what logout used to leave working)."""
    client = TestClient(app, cookies={SESSION_COOKIE: ann.client.cookies.get(SESSION_COOKIE)})
    return Labeller(client, ann.name)


def refused(who: Labeller) -> bool:
    r = who.client.post("/api/next", json={}, headers={"X-CSRF-Token": who.csrf})
    return r.status_code == 401 and "not logged in" in r.json()["detail"]


def test_logout_ends_the_session_on_the_server_not_only_in_the_browser(app, store):
    add_segment_queries(store, [(1, 0)])
    ann = login(app, store, "ann")
    other = second_device(app, ann)
    assert other.next() is not None  # the copied cookie works while the session lasts
    assert ann.post("/logout").status_code == 200
    assert refused(ann) and refused(other)
    assert "Log in" in other.client.get("/").text


@pytest.mark.parametrize("end", ["reissue", "login-link", "disable", "remove"])
def test_a_new_link_disabling_or_removing_ends_every_session(app, store, tmp_path, end):
    ann = login(app, store, "ann")
    other = second_device(app, ann)
    bob = login(app, store, "bob")
    if end == "reissue":
        store.reissue_token("ann")
    elif end == "disable":
        store.set_labeller_disabled("ann")
    elif end == "remove":
        store.remove_labeller("ann")
    else:
        r = CliRunner().invoke(cli_app, ["label", "login-link", "ann", "--store", store.url])
        assert r.exit_code == 0, r.output
    assert refused(ann) and refused(other)
    assert bob.next() is None  # nobody else is logged out


def test_a_disabled_labeller_cannot_log_in_until_enabled(app, store):
    token = store.add_labeller("ann")
    store.set_labeller_disabled("ann")
    client = TestClient(app)
    assert client.get("/login", params={"token": token}).status_code == 401
    assert client.post("/login", data={"token": token}).status_code == 401
    store.set_labeller_disabled("ann", disabled=False)
    r = client.post("/login", data={"token": token}, follow_redirects=False)
    assert r.status_code == 303


def test_a_cookie_for_an_unknown_or_recreated_labeller_is_refused(app, store):
    ghost_cookie, _ = app.state.signer.issue("ghost", "admin")  # correctly signed, nobody in the store
    ghost = TestClient(app, cookies={SESSION_COOKIE: ghost_cookie})
    assert ghost.get("/api/admin/stats").status_code == 401
    assert "Log in" in ghost.get("/").text
    ann = login(app, store, "ann")
    store.remove_labeller("ann")
    store.add_labeller("ann")  # the same name again is another person: the old cookie stays dead
    assert refused(ann)


def test_role_comes_from_the_store_not_the_cookie(app, store):
    ann = login(app, store, "ann")
    forged, _ = app.state.signer.issue("ann", "admin", session_key=store.session_key("ann"))
    assert TestClient(app, cookies={SESSION_COOKIE: forged}).get("/api/admin/stats").status_code == 403
    assert ann.client.get("/api/admin/stats").status_code == 403


def test_opening_a_login_link_spends_nothing(app, store):
    token = store.add_labeller("ann")
    preview = TestClient(app)
    for _ in range(3):  # a chat app's link preview, a prefetch, a second look
        page = preview.get("/login", params={"token": token})
        assert page.status_code == 200 and 'method="post"' in page.text and "ann" in page.text
        assert SESSION_COOKIE not in page.headers.get("set-cookie", "")
    assert store.authenticate(token).name == "ann"  # not spent
    r = TestClient(app).post("/login", data={"token": token}, follow_redirects=False)
    assert r.status_code == 303 and SESSION_COOKIE in r.headers["set-cookie"]
    assert store.authenticate(token) is None  # spent by the button, once
    assert TestClient(app).post("/login", data={"token": token}).status_code == 401


def test_login_from_another_site_is_refused(app, store):
    token = store.add_labeller("ann")
    r = TestClient(app).post("/login", data={"token": token}, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    r = TestClient(app).post("/login", data={"token": token}, headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    assert store.authenticate(token) is not None  # nothing spent
    # a same-origin form post under Referrer-Policy: no-referrer carries "Origin: null"
    r = TestClient(app).post("/login", data={"token": token}, follow_redirects=False,
                             headers={"Origin": "null", "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 303


def test_host_header_is_checked(make_app, store):
    app = make_app(allowed_hosts=("labels.example.org",))
    assert TestClient(app).get("/healthz").status_code == 400  # "testserver" is not configured
    r = TestClient(app, base_url="http://evil.example").get("/healthz")
    assert r.status_code == 400 and "evil.example" in r.json()["detail"]
    assert TestClient(app, base_url="http://labels.example.org:8000").get("/healthz").status_code == 200
    assert TestClient(make_app(allowed_hosts=("*",)), base_url="http://any.where").get("/healthz").status_code == 200


def test_failed_logins_are_rate_limited(make_app, store):
    app = make_app(login_max_failures=3, login_window_seconds=0.5)
    token = store.add_labeller("ann")
    client = TestClient(app)
    for _ in range(3):
        assert client.post("/login", data={"token": "guess"}).status_code == 401
    r = client.post("/login", data={"token": token})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert client.get("/login", params={"token": token}).status_code == 429
    assert store.authenticate(token) is not None  # the right token sent while blocked is not spent
    time.sleep(0.6)
    assert client.post("/login", data={"token": token}, follow_redirects=False).status_code == 303


@pytest.mark.parametrize("name", ["ann\x1b[31m", "a\nb", "tab\there", "\u202eevil", " ann", "x" * 65, ""])
def test_labeller_names_are_printable_and_bounded(store, name):
    with pytest.raises(ValueError, match="name"):
        store.add_labeller(name)
    r = CliRunner().invoke(cli_app, ["label", "add-labeller", name, "--store", store.url])
    assert r.exit_code == 2
    assert store.labellers() == []


def test_cli_disable_enable_remove(store):
    store.add_labeller("ann")
    run = CliRunner().invoke
    assert run(cli_app, ["label", "disable-labeller", "ann", "--store", store.url]).exit_code == 0
    assert store.get_labeller("ann").disabled
    assert run(cli_app, ["label", "enable-labeller", "ann", "--store", store.url]).exit_code == 0
    assert not store.get_labeller("ann").disabled
    assert run(cli_app, ["label", "remove-labeller", "ann", "--store", store.url]).exit_code == 0
    assert store.labellers() == []
    r = run(cli_app, ["label", "remove-labeller", "ann", "--store", store.url])
    assert r.exit_code == 2 and "no labeller" in r.output


def test_serve_on_every_interface_needs_the_host_names(store):
    r = CliRunner().invoke(cli_app, ["label", "serve", "--store", store.url, "--host", "0.0.0.0"])
    assert r.exit_code == 2 and "--allowed-host" in r.output
