"""`--serve` runs the app in its own process (issue #14): it answers while the training process is
busy or stopped, and it does not outlive that process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import httpx
import pytest
from test_render_children import _alive

from prefrl.app.live import LiveServer
from prefrl.data.store import PreferenceStore

RUN = textwrap.dedent("""
    import sys, time
    from prefrl.app.live import LiveServer
    from prefrl.data.store import PreferenceStore
    store = PreferenceStore(sys.argv[1])
    server = LiveServer(store, port=0, clips_dir=sys.argv[2]).start()
    print(server.pid, server.url, flush=True)
    time.sleep(600)
""")


def test_the_app_answers_while_its_run_is_stopped_and_exits_when_the_run_is_killed(tmp_path):
    run = subprocess.Popen([sys.executable, "-c", RUN, str(tmp_path / "p.sqlite"), str(tmp_path / "clips")],
                           stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        pid, url = run.stdout.readline().split()
        pid = int(pid)
        assert pid != run.pid and _alive(pid)
        run.send_signal(signal.SIGSTOP)  # the run holds its GIL forever: a thread of it would answer nothing
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
        run.send_signal(signal.SIGKILL)  # no clean-up runs
        run.wait(timeout=10)
        deadline = time.monotonic() + 15
        while _alive(pid):
            assert time.monotonic() < deadline, f"the app's process {pid} outlived its run"
            time.sleep(0.2)
    finally:
        run.kill()


def test_the_app_and_the_run_share_the_store_across_processes(tmp_path):
    with PreferenceStore(tmp_path / "p.sqlite") as store, \
            LiveServer(store, port=0, clips_dir=tmp_path / "clips") as server:
        token = store.add_labeller("ann")  # written here, read by the app's own connection
        assert server.pid != os.getpid()
        with httpx.Client(base_url=server.url, follow_redirects=True, timeout=10) as client:
            assert client.post("/login", data={"token": token}).status_code == 200
            assert client.post("/login", data={"token": token}).status_code == 401  # spent, in the shared store
        assert server.pid is not None
    assert server.pid is None


def test_an_in_memory_store_cannot_be_served_beside_a_run():
    with PreferenceStore(":memory:") as store, pytest.raises(ValueError, match="in-memory store"):
        LiveServer(store, port=0)


def test_a_renderer_that_cannot_be_sent_to_the_app_is_one_line(tmp_path):
    with PreferenceStore(tmp_path / "p.sqlite") as store, \
            pytest.raises(ValueError, match="renderer must be picklable"):
        LiveServer(store, port=0, clips_dir=tmp_path / "clips", renderer=lambda segment, path: None).start()
