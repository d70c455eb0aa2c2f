"""Helpers shared by the labelling-app tests (a unique module name: tests dirs have no __init__)."""

from __future__ import annotations

import contextlib
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from fastapi.testclient import TestClient

from prefrl.data.store import PreferenceStore
from prefrl.data.types import Segment, TextPair

#: Debian's Chromium, driven by the playwright package (a dev dependency; never `playwright install`).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_MISSING = f"needs {CHROMIUM}: apt-get install chromium (the playwright package drives it)"


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium browser (playwright's sync API: use it from the thread that opened it)."""
    from playwright import sync_api

    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"])
        try:
            yield b
        finally:
            b.close()


#: What a scripted person may meet when the run ends and its app process stops: the port closed, or a
#: keep-alive connection closed under a request just sent (reset).
SHUTDOWN_ERRORS = ("ConnectError", "RemoteProtocolError", "Connection reset")


def unexpected_errors(people) -> list[str]:
    """The people's errors other than those of the app stopping with its run."""
    return [e for p in people for e in p.errors if not any(k in e for k in SHUTDOWN_ERRORS)]


class FakeRenderer:
    """Writes a small fake MP4 per segment and counts renders (the real one needs MuJoCo)."""

    def __init__(self) -> None:
        self.rendered: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, segment: Segment, path: Path) -> None:
        with self.lock:
            self.rendered.append(int(segment.id))
        path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + f"segment {segment.id}".encode())

    def __getstate__(self) -> dict:  # picklable: a LiveServer sends its renderer to the app's process
        return {"rendered": list(self.rendered)}

    def __setstate__(self, state: dict) -> None:
        self.rendered, self.lock = state["rendered"], threading.Lock()


def make_segment(ret: float, env_id: str = "Toy-v0") -> Segment:
    """A 5-step segment whose true return is ``ret``."""
    return Segment(obs=np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32),
                   actions=np.zeros((5, 1), np.float32), true_rewards=np.full(5, ret / 5, np.float32),
                   env_id=env_id)


def add_segment_queries(store: PreferenceStore, returns: list[tuple[float, float]], priority=None,
                        labeller: str | None = None) -> list[int]:
    """One query per (return_left, return_right) pair; priorities descending in list order by default."""
    ids = []
    for i, (rl, rr) in enumerate(returns):
        left, right = store.add_segments([make_segment(rl), make_segment(rr)])
        prio = float(len(returns) - i) if priority is None else priority
        ids.append(store.add_query(left_id=left, right_id=right, priority=prio, labeller=labeller))
    return ids


def add_text_query(store: PreferenceStore, priority: float = 0.0) -> int:
    pid = store.add_text_pair(TextPair("Greet the user.", "Hello! How can I help?", "What do you want?"))
    return store.add_query(text_pair_id=pid, priority=priority)


class Labeller:
    """A logged-in HTTP client with its CSRF token (as the page's JS would have it)."""

    def __init__(self, client: TestClient, name: str) -> None:
        self.client = client
        self.name = name
        page = client.get("/")
        match = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text)
        assert match, "label page has no CSRF token"
        self.csrf = match.group(1)

    def post(self, url: str, body: dict | None = None, **kw):
        headers = {"X-CSRF-Token": self.csrf, **kw.pop("headers", {})}
        return self.client.post(url, json=body or {}, headers=headers, **kw)

    def next(self) -> dict | None:
        r = self.post("/api/next")
        assert r.status_code == 200, r.text
        return r.json()["query"]

    def answer(self, query_id: int, mu):
        return self.post("/api/answer", {"query_id": query_id, "mu": mu})


def login(app, store: PreferenceStore, name: str, role: str = "labeller") -> Labeller:
    """Register ``name`` and log a fresh client in: open the login link, press its button."""
    token = store.add_labeller(name, role=role)
    client = TestClient(app)
    assert client.get("/login", params={"token": token}).status_code == 200
    r = client.post("/login", data={"token": token}, follow_redirects=False)
    assert r.status_code == 303, r.text
    return Labeller(client, name)


def moving_dot_clip(segment, path: Path) -> None:
    """A real, playable H.264 clip (a dot whose speed is the segment's return) — fast, no MuJoCo."""
    import imageio.v2 as imageio

    speed = 2 + 3 * abs(segment.true_return or 0.0)
    frames = []
    for t in range(40):
        img = np.full((120, 160, 3), (236, 240, 245), np.uint8)
        img[90:, :] = (200, 210, 220)
        x = int(10 + (t * speed) % 130)
        img[70:90, x:x + 20] = (47, 111, 221)
        frames.append(img)
    with imageio.get_writer(path, fps=20, codec="libx264", macro_block_size=1, pixelformat="yuv420p",
                            format="FFMPEG") as w:
        for f in frames:
            w.append_data(f)


def read_links(proc: subprocess.Popen, names: list[str], output: list[str], timeout: float = 120) -> dict[str, str]:
    """The login links the run prints, read from its output (which keeps going into ``output``)."""
    links: dict[str, str] = {}
    found = threading.Event()

    def pump() -> None:
        for line in proc.stdout:
            output.append(line)
            match = re.match(r"Login link for (\w+): (\S+)", line)
            if match:
                links[match.group(1)] = match.group(2)
                if set(links) == set(names):
                    found.set()
        found.set()

    threading.Thread(target=pump, daemon=True).start()
    found.wait(timeout)
    assert set(links) == set(names), "".join(output)
    return links


LETTERS = set("abcdefghijklmnopqrstuvwxyz")


def letters(text: str) -> float:
    return sum(c in LETTERS for c in text) / max(1, len(text))


def http_login(client: httpx.Client, token: str) -> dict[str, str]:
    """Log in over HTTP as a person does (open the link: a page with one button; press it: POST the
    one-time token) and return the CSRF header the app's API calls need."""
    assert client.get("/login", params={"token": token}).status_code == 200
    page = client.post("/login", data={"token": token})
    return {"X-CSRF-Token": re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)}


def stop_people(proc: subprocess.Popen, stop: threading.Event, people: list[threading.Thread]) -> None:
    """End a test's scripted people and its run: stop them, kill the run if it still lives, join them."""
    stop.set()
    if proc.poll() is None:
        proc.kill()
    for person in people:
        person.join(timeout=30)


class HttpPerson(threading.Thread):
    """Logs in with a link and answers every pair it is shown through the app's JSON API, one answer
    each ``pace`` seconds; ``judge(query)`` says μ and what to record in ``answered``."""

    idle_s = 0.05  # wait before asking again when nothing is queued

    def __init__(self, link: str, stop: threading.Event, pace: float = 0.0) -> None:
        super().__init__(daemon=True)
        self.link, self.stop, self.pace = link, stop, pace
        self.answered: list[tuple] = []
        self.errors: list[str] = []

    def session(self) -> contextlib.AbstractContextManager:
        """What the person holds open while labelling (e.g. the store it peeks at to judge)."""
        return contextlib.nullcontext()

    def judge(self, query: dict) -> tuple[float, tuple]:
        raise NotImplementedError

    def run(self) -> None:
        base, token = self.link.split("/login?token=")
        try:
            with httpx.Client(base_url=base, follow_redirects=True, timeout=60) as client, self.session():
                headers = http_login(client, token)
                query = None
                while not self.stop.is_set():
                    if query is None:
                        query = client.post("/api/next", json={}, headers=headers).json()["query"]
                        if query is None:
                            time.sleep(self.idle_s)
                            continue
                    mu, record = self.judge(query)
                    r = client.post("/api/answer", json={"query_id": query["id"], "mu": mu}, headers=headers)
                    assert r.status_code == 200, r.text
                    self.answered.append(record)
                    query = r.json()["next"]
                    time.sleep(self.pace)
        except Exception as e:  # noqa: BLE001
            self.errors.append(f"{type(e).__name__}: {e}")


class TextPerson(HttpPerson):
    """Prefers the text with more letters; ``answered`` holds (text pair id, μ)."""

    def judge(self, query: dict) -> tuple[float, tuple]:
        assert query["kind"] == "text"
        a, b = letters(query["left"]["text"]), letters(query["right"]["text"])
        mu = 1.0 if a > b else 0.0 if a < b else 0.5
        return mu, (query["text_pair_id"], mu)
