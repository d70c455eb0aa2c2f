"""A real browser (Debian Chromium via playwright) logs in and labels five pairs by keyboard and mouse.

Skipped when /usr/bin/chromium is missing (apt-get install chromium); playwright is a dev dependency. Set
``PREFRL_SCREENSHOT=path.png`` to keep the screenshot (docs/labelling-app.png comes from here).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from labelapp_helpers import CHROMIUM, chromium, make_segment, moving_dot_clip

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs /usr/bin/chromium (apt-get install chromium)"),
]


@pytest.fixture
def browser():
    with chromium() as b:
        yield b


def test_label_five_pairs_by_keyboard_and_mouse(store, browser, tmp_path):
    import socket
    import threading
    import time

    import uvicorn

    from prefrl.app.server import AppConfig, create_app
    from prefrl.data.types import TextPair

    seg_q = []
    for i, (rl, rr) in enumerate([(3.0, 1.0), (0.5, 2.5), (1.0, 1.0)]):
        left, right = store.add_segments([make_segment(rl), make_segment(rr)])
        seg_q.append(store.add_query(left_id=left, right_id=right, priority=10.0 - i))
    text_q = []
    for i in range(3):
        pid = store.add_text_pair(TextPair(f"Prompt {i}: greet a new colleague.", "Welcome aboard, glad you're here!",
                                           "You have been added."))
        text_q.append(store.add_query(text_pair_id=pid, priority=5.0 - i))
    token = store.add_labeller("ann")

    app = create_app(store, AppConfig(clips_dir=tmp_path / "clips"), renderer=moving_dot_clip)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        # bypass_csp only lets the test evaluate its wait predicates; the page itself runs under the CSP
        page = browser.new_page(viewport={"width": 1200, "height": 760}, bypass_csp=True)
        console_errors = []
        page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
        page.goto(f"{base}/login?token={token}")
        page.get_by_role("button", name="Log in").click()  # the link opens a page; its button logs in
        page.wait_for_url(f"{base}/")
        app_div = page.locator("#app")

        def shown() -> int:
            page.wait_for_function("document.getElementById('app').dataset.queryId > 0")
            return int(app_div.get_attribute("data-query-id"))

        def after(old: int) -> int:
            page.wait_for_function(f"document.getElementById('app').dataset.queryId !== '{old}'")
            return int(app_div.get_attribute("data-query-id") or 0)

        q = shown()
        assert q == seg_q[0]
        # both clips load and play (a real decoder, not just a 200)
        page.wait_for_function("[...document.querySelectorAll('video')].every(v => v.readyState >= 2)")
        page.wait_for_timeout(400)
        shot = tmp_path / "labelling-app.png"
        page.screenshot(path=str(shot))
        assert shot.stat().st_size > 10_000

        page.keyboard.press("ArrowLeft")                      # 1: left better, by keyboard
        q = after(q)
        assert q == seg_q[1]
        page.keyboard.press("2")                              # 2: right better, by number key
        q = after(q)
        assert q == seg_q[2]
        page.get_by_role("button", name="Equally good").click()  # 3: equal, by mouse …
        q = after(q)
        assert q == text_q[0]
        page.get_by_text("Saved: equally good.").wait_for()
        page.keyboard.press("u")                              # … undone: the pair comes back
        q = after(q)
        assert q == seg_q[2] and page.locator("#counter").inner_text() == "2"
        page.keyboard.press("=")                              # 3 again: equal, by "="
        q = after(q)
        assert q == text_q[0]
        assert page.locator("#prompt").inner_text().startswith("Prompt 0")
        assert page.locator("#text-left").inner_text() == "Welcome aboard, glad you're here!"
        page.get_by_role("button", name="Right is better").click()  # 4: right better, by mouse
        q = after(q)
        assert q == text_q[1]
        page.keyboard.press("ArrowDown")                      # 5: can't tell, by keyboard
        q = after(q)
        assert q == text_q[2]
        page.wait_for_function("document.getElementById('counter').textContent === '5'")
        if os.environ.get("PREFRL_SCREENSHOT"):
            shutil.copy(shot, os.environ["PREFRL_SCREENSHOT"])
        assert not console_errors, console_errors
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()

    got = {(c.left_id, c.right_id, c.text_pair_id): (c.mu, c.labeller) for c in store.comparisons()}
    expect = {}
    for qid, mu in zip(seg_q + text_q[:2], [1.0, 0.0, 0.5, 0.0, None]):
        query = store.get_query(qid)
        expect[(query.left_id, query.right_id, query.text_pair_id)] = (mu, "ann")
    assert got == expect and store.count_comparisons() == 5


def test_a_clip_that_is_not_ready_yet_plays_once_rendered(store, browser, tmp_path):
    """The page asks again after a 202 (the render worker is still busy) and plays the clip when it is there."""
    import socket
    import threading
    import time

    import uvicorn

    from prefrl.app.server import AppConfig, create_app

    gate = threading.Event()

    def late_clip(segment, path: Path) -> None:
        gate.wait(30)
        moving_dot_clip(segment, path)

    left, right = store.add_segments([make_segment(1.0), make_segment(2.0)])
    store.add_query(left_id=left, right_id=right)
    token = store.add_labeller("ann")
    app = create_app(store, AppConfig(clips_dir=tmp_path / "clips", clip_wait_seconds=0.2), renderer=late_clip)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        page = browser.new_page(bypass_csp=True)
        statuses = []
        page.on("response", lambda r: statuses.append(r.status) if "/clips/" in r.url else None)
        page.goto(f"{base}/login?token={token}")
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{base}/")
        page.wait_for_function("document.getElementById('app').dataset.queryId > 0")
        page.wait_for_timeout(1500)  # the page has been told "not ready" and is asking again
        assert 202 in statuses and page.locator(".side.loading").count() == 2
        gate.set()
        page.wait_for_function("[...document.querySelectorAll('video')].every(v => v.readyState >= 2)",
                               timeout=20_000)
        assert statuses.count(200) == 2 and page.locator(".side.failed").count() == 0
    finally:
        gate.set()
        server.should_exit = True
        thread.join(timeout=10)
        app.state.render_worker.stop()
        sock.close()
