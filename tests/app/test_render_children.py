"""Render children (issue #14, item 1): several render side by side, and none outlives its server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
from labelapp_helpers import add_segment_queries

from prefrl.app.clips import ClipCache, RenderWorker

CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import numpy as np
    from prefrl.app.clips import ProcessRenderer
    from prefrl.data.types import Segment
    renderer = ProcessRenderer(processes=2)
    frames = np.zeros((3, 4, 8, 8), np.uint8)  # an Atari-like frame stack: no MuJoCo needed
    renderer(Segment(obs=frames, actions=np.zeros(3, np.int64), id=1), Path(sys.argv[1]))
    print(" ".join(str(p) for p in renderer._pool._processes), flush=True)
    time.sleep(600)
""")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie waiting for its reaper counts as gone
        return f.read().split(") ")[1][0] != "Z"


def test_render_children_exit_when_the_server_is_killed(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "c.mp4")], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        children = [int(p) for p in proc.stdout.readline().split()]
        assert children and (tmp_path / "c.mp4").stat().st_size > 0
        proc.send_signal(signal.SIGKILL)  # no clean-up runs, as with a run stopped by a signal
        proc.wait(timeout=10)
        deadline = time.monotonic() + 15
        while any(_alive(p) for p in children):
            assert time.monotonic() < deadline, f"render children {children} outlived their server"
            time.sleep(0.2)
    finally:
        proc.kill()


class SlowRenderer:
    """Records how many renders overlap."""

    def __init__(self) -> None:
        import threading

        self.lock, self.now, self.most, self.done = threading.Lock(), 0, 0, []

    def __call__(self, segment, path) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(0.2)
        path.write_bytes(b"\x00\x00\x00\x18ftypmp42")
        with self.lock:
            self.now -= 1
            self.done.append(int(segment.id))


def test_render_threads_share_the_queue_without_rendering_a_clip_twice(store, tmp_path):
    add_segment_queries(store, [(1, 0)] * 4)
    renderer = SlowRenderer()
    worker = RenderWorker(ClipCache(store, tmp_path / "clips", renderer), store, prerender=8, threads=2)
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while len(renderer.done) < 8:
            assert time.monotonic() < deadline, renderer.done
            time.sleep(0.05)
    finally:
        worker.stop()
    assert sorted(renderer.done) == list(range(1, 9)) and renderer.most == 2
    assert np.all(np.diff(sorted(renderer.done)) == 1)
