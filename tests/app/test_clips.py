"""Clips ready before they are asked for (issue #14 item 1): a render worker renders the clips of
queued queries ahead of the labellers, the route serves a cached clip or says 202 + Retry-After
without holding a thread, and one labeller's burst of clip requests does not slow anyone else."""

from __future__ import annotations

import re
import socket
import threading
import time

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from labelapp_helpers import FakeRenderer, add_segment_queries, login

from prefrl.app.server import AppConfig, create_app


class SlowRenderer(FakeRenderer):
    """A renderer that takes ``seconds`` per clip, or until ``gate`` is set (no CPU: it sleeps)."""

    def __init__(self, seconds: float = 0.0, gate: threading.Event | None = None) -> None:
        super().__init__()
        self.seconds, self.gate = seconds, gate

    def __call__(self, segment, path) -> None:
        if self.gate is not None:
            self.gate.wait(30)
        time.sleep(self.seconds)
        super().__call__(segment, path)


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_the_worker_renders_queued_queries_before_anyone_asks(make_app, store, renderer, tmp_path):
    app = make_app(prerender_queries=8)
    with TestClient(app):  # the lifespan starts the render worker
        ids = add_segment_queries(store, [(1, 0), (0, 1), (2, 3)])  # posted while the server runs
        segments = {i for q in map(store.get_query, ids) for i in (q.left_id, q.right_id)}
        wait_until(lambda: all((tmp_path / "clips" / f"{i}.mp4").exists() for i in segments))
    assert sorted(renderer.rendered) == sorted(segments)  # each once, none asked for by a request
    ann = login(app, store, "ann")
    q = ann.next()
    r = ann.client.get(q["left"]["clip_url"])
    assert r.status_code == 200 and sorted(renderer.rendered) == sorted(segments)  # served from the cache


def test_a_clip_not_ready_is_202_with_retry_after_then_200(store, tmp_path):
    gate = threading.Event()
    app = create_app(store, AppConfig(clips_dir=tmp_path / "clips", allowed_hosts=("testserver",),
                                      prerender_queries=0, clip_wait_seconds=0.1), renderer=SlowRenderer(gate=gate))
    try:
        add_segment_queries(store, [(1, 0)])
        ann = login(app, store, "ann")
        url = ann.next()["left"]["clip_url"]
        started = time.monotonic()
        r = ann.client.get(url)
        assert r.status_code == 202 and r.headers["Retry-After"] == "1" and "being rendered" in r.json()["detail"]
        assert time.monotonic() - started < 2.0  # answered, not held until the render ends
        gate.set()
        wait_until(lambda: ann.client.get(url).status_code == 200)
        assert ann.client.get(url).content.startswith(b"\x00\x00\x00\x18ftyp")
    finally:
        gate.set()
        app.state.render_worker.stop()


@pytest.mark.timeout(120)
def test_a_burst_of_clip_requests_does_not_slow_other_routes(store, tmp_path):
    """48 concurrent requests for one labeller's unrendered clips (what held the thread pool and
    made /healthz take 5.8 s) while another labeller works: their requests stay under 100 ms."""
    app = create_app(store, AppConfig(clips_dir=tmp_path / "clips", prerender_queries=0, clip_wait_seconds=1.0),
                     renderer=SlowRenderer(seconds=3.0))
    add_segment_queries(store, [(1, 0)] * 30, labeller="ann")
    add_segment_queries(store, [(0, 1)] * 30, labeller="bob")
    tokens = {name: store.add_labeller(name) for name in ("ann", "bob")}
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # so asyncio sets TCP_NODELAY
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: server.started)

    def logged_in(name: str) -> tuple[httpx.Client, dict]:
        client = httpx.Client(base_url=base, follow_redirects=True, timeout=60)
        page = client.post("/login", data={"token": tokens[name]})
        return client, {"X-CSRF-Token": re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)}

    try:
        (ann, ann_h), (bob, bob_h) = logged_in("ann"), logged_in("bob")
        shown = ann.post("/api/next", json={}, headers=ann_h).json()["query"]
        urls = [shown["left"]["clip_url"], shown["right"]["clip_url"]]
        statuses: list[int] = []
        # one client (made before the clock starts; making 48 costs seconds of CPU) sends the burst
        bursty = httpx.Client(base_url=base, cookies=ann.cookies, timeout=60,
                              limits=httpx.Limits(max_connections=64, max_keepalive_connections=64))

        def fetch(url: str) -> None:
            statuses.append(bursty.get(url).status_code)

        burst = [threading.Thread(target=fetch, args=(urls[i % 2],)) for i in range(48)]
        for t in burst:
            t.start()
        time.sleep(0.5)  # the burst is in flight: every request is waiting for its render
        latencies = {"/healthz": [], "/api/next": [], "/api/answer": []}
        query = bob.post("/api/next", json={}, headers=bob_h).json()["query"]
        for _ in range(12):
            for route in latencies:
                started = time.perf_counter()
                if route == "/healthz":
                    r = bob.get(route)
                elif route == "/api/next":
                    r = bob.post(route, json={}, headers=bob_h)
                else:
                    r = bob.post(route, json={"query_id": query["id"], "mu": 1}, headers=bob_h)
                    query = r.json()["next"]
                latencies[route].append(time.perf_counter() - started)
                assert r.status_code == 200, r.text
        for t in burst:
            t.join(60)
        assert len(statuses) == 48 and set(statuses) <= {200, 202} and 202 in statuses  # nobody waited 3 s
        # Each route stays under 100 ms; one sample in six may miss it, because this machine is
        # shared (load average 4-6 on 2 cores) and a lone outlier is the load, not the burst:
        # before the render worker, every request waited seconds for a free thread.
        slow = {route: sorted(round(t, 3) for t in ts if t >= 0.1) for route, ts in latencies.items()}
        assert all(len(ts) <= len(latencies[r]) // 6 for r, ts in slow.items()), slow
        assert all(max(ts) < 1.0 for ts in latencies.values()), latencies
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        app.state.render_worker.stop()
        sock.close()


def test_the_worker_renders_ahead_of_each_labeller(make_app, store, renderer):
    """ann's queue holds the highest priorities; bob's next pairs are rendered too once he is at work."""
    app = make_app(prerender_queries=2)
    ann_q = add_segment_queries(store, [(1, 0)] * 4, priority=10.0, labeller="ann")
    bob_q = add_segment_queries(store, [(0, 1)] * 4, priority=1.0, labeller="bob")
    segs = {qid: (store.get_query(qid).left_id, store.get_query(qid).right_id) for qid in ann_q + bob_q}
    with TestClient(app):
        bob = login(app, store, "bob")
        assert bob.next()["id"] == bob_q[0]
        # bob's pair on screen and his next two, whatever the global order says
        wanted = {i for qid in bob_q[:3] for i in segs[qid]}
        wait_until(lambda: wanted <= set(renderer.rendered))
    assert not {i for i in segs[bob_q[3]]} & set(renderer.rendered)  # not more than asked ahead
    assert {i for qid in ann_q[:2] for i in segs[qid]} <= set(renderer.rendered)  # the global top two
