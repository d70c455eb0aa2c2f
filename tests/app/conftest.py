"""Fixtures for the labelling app: a SQLite store, a fake clip renderer, logged-in clients."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from labelapp_helpers import FakeRenderer

from prefrl.app.server import AppConfig, create_app
from prefrl.data.store import PreferenceStore


@pytest.fixture
def store(tmp_path):
    with PreferenceStore(tmp_path / "prefs.db") as s:
        yield s


@pytest.fixture
def renderer():
    return FakeRenderer()


@pytest.fixture
def make_app(store, renderer, tmp_path):
    def build(**overrides):
        # prerender off unless a test turns it on: most tests count renders done on request
        cfg = AppConfig(clips_dir=tmp_path / "clips", **{"allowed_hosts": ("testserver",), "prerender_queries": 0,
                                                         **overrides})
        app = create_app(store, cfg, renderer=renderer)
        apps.append(app)
        return app

    apps = []
    yield build
    for app in apps:
        app.state.render_worker.stop()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def live_server(store, renderer, tmp_path):
    """A real uvicorn server on 127.0.0.1 and a random free port; yields its base URL."""
    import uvicorn

    app = create_app(store, AppConfig(clips_dir=tmp_path / "live-clips"), renderer=renderer)
    # IPPROTO_TCP, or asyncio leaves Nagle on and every keep-alive request waits ~40 ms for a delayed ACK
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    app.state.render_worker.stop()
    sock.close()
