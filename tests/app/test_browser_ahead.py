"""In Chromium: the page loads the next pair's clips while a person looks at this one, so after an
answer the next pair plays without fetching anything (issue #14, item 1)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
from labelapp_helpers import CHROMIUM, chromium, make_segment, moving_dot_clip

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs /usr/bin/chromium (apt-get install chromium)"),
]

PLAYABLE = ("old => { const d = document.getElementById('app').dataset; return d.queryId > 0 && d.queryId !== old"
            " && [...document.querySelectorAll('video')].length === 2"
            " && [...document.querySelectorAll('video')].every(v => v.readyState >= 2); }")


def test_the_next_pair_is_loaded_ahead_and_plays_without_a_fetch(store, tmp_path):
    import uvicorn

    from prefrl.app.server import AppConfig, create_app

    queries = []
    for i in range(4):
        left, right = store.add_segments([make_segment(1.0 + i), make_segment(0.5)])
        queries.append(store.add_query(left_id=left, right_id=right, priority=10.0 - i))
    token = store.add_labeller("ann")
    app = create_app(store, AppConfig(clips_dir=tmp_path / "clips"), renderer=moving_dot_clip)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        with chromium() as browser:
            page = browser.new_page(bypass_csp=True)  # bypass_csp: the wait predicates only
            fetched: list[str] = []
            page.on("request", lambda r: fetched.append(r.url.split("/")[-1]) if "/clips/" in r.url else None)
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(f"{base}/login?token={token}")
            page.get_by_role("button", name="Log in").click()
            page.wait_for_url(f"{base}/")
            shown = ""
            for k in range(3):
                page.wait_for_function(PLAYABLE, arg=shown, timeout=60_000)
                shown = page.locator("#app").get_attribute("data-query-id")
                assert int(shown) == queries[k]  # queue order: the page loaded what the queue gives next
                nxt = store.get_query(queries[k + 1])
                ahead = [f"{nxt.left_id}.mp4", f"{nxt.right_id}.mp4"]
                deadline = time.monotonic() + 60
                while not set(ahead) <= set(fetched):  # loaded while this pair is on screen
                    assert time.monotonic() < deadline, f"the next pair's clips were never loaded ahead: {fetched}"
                    page.wait_for_timeout(50)
                before = list(fetched)
                page.keyboard.press("ArrowLeft")
                page.wait_for_function(PLAYABLE, arg=shown, timeout=10_000)
                assert int(page.locator("#app").get_attribute("data-query-id")) == queries[k + 1]
                assert not set(ahead) & set(fetched[len(before):]), "the loaded-ahead clips were fetched again"
            assert not errors, errors
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
    assert [c.mu for c in store.comparisons()] == [1.0, 1.0, 1.0]
