"""The clips labellers compare: rendered from a segment's simulator states, cached on disk,
ahead of time and off the request path.

A :class:`RenderWorker` thread renders, in this order, the clips someone asked for, those of
queries being labelled now, those next in the queue of each labeller at work, and those of the
next pending queries (highest priority first), so that a pair is usually ready before anyone
opens it. The web route never renders: it serves a
cached file, waits asynchronously (holding no thread) for a render in flight, or answers
202 "not ready" with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import multiprocessing
import os
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefrl.data.store import PreferenceStore
from prefrl.data.types import Segment
from prefrl.utils.files import atomic_write

__all__ = ["Renderer", "SimRenderer", "ProcessRenderer", "ClipCache", "RenderWorker", "exit_with_parent"]

log = logging.getLogger(__name__)

#: Renders one segment to an MP4 file at the given path.
Renderer = Callable[[Segment, Path], None]


class SimRenderer:
    """The default renderer: replays a segment's simulator states in an env and encodes an MP4.

    One env per env id is made on first use and kept (its MuJoCo GL context with it), instead of
    the two :func:`prefrl.control.render.render_segment` makes per clip; a :class:`RenderWorker`
    renders from one thread, so one instance serves it. MuJoCo is imported on first use.
    """

    def __init__(self) -> None:
        self._envs: dict[str, Any] = {}
        self._fps: dict[str, float] = {}

    def __call__(self, segment: Segment, path: Path) -> None:
        from prefrl.control.render import (
            DEFAULT_FPS,
            clip_stride,
            iter_segment_frames,
            make_render_env,
            write_video,
        )

        if segment.sim_states is None or not segment.env_id:  # Atari frame stacks: frames cost nothing to render
            write_video(iter_segment_frames(segment), path, fps=DEFAULT_FPS)
            return
        env = self._envs.get(segment.env_id)
        if env is None:
            env = self._envs[segment.env_id] = make_render_env(segment.env_id)
            dt = getattr(env.unwrapped, "dt", None)
            self._fps[segment.env_id] = float(1.0 / dt) if dt else float(env.metadata.get("render_fps") or DEFAULT_FPS)
        fps = self._fps[segment.env_id]
        stride = clip_stride(fps)  # at most CLIP_MAX_FPS frames a second, played at real speed
        write_video(iter_segment_frames(segment, env=env, stride=stride), path, fps=fps / stride)

    def close(self) -> None:
        """Close the envs (and their GL contexts)."""
        for env in self._envs.values():
            env.close()
        self._envs.clear()


_child_renderer: SimRenderer | None = None


def exit_with_parent(parent: int) -> None:
    """In a child (a render child, the app's process): exit once process ``parent`` is gone. A run
    stopped by a signal runs no clean-up, and a child blocked on its queue would live on as an orphan."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="prefrl-watch-parent", daemon=True).start()


def _render_in_child(segment: Segment, path: str) -> None:
    global _child_renderer
    if _child_renderer is None:  # one renderer (one GL context per env id) for the child's life
        _child_renderer = SimRenderer()
    _child_renderer(segment, Path(path))


class ProcessRenderer:
    """:class:`SimRenderer` in a child process, so that rendering never holds the server's GIL.

    MuJoCo's software GL (OSMesa) and the video encoder hold the GIL for up to a few hundred
    milliseconds at a time; in the server's process that stalls every request. The child is
    spawned (not forked: the server has threads and open connections) on the first clip and
    kept; each call sends it the segment and waits for the file. ``processes`` children render
    side by side (one per :class:`RenderWorker` thread); each exits when this process does.
    """

    def __init__(self, processes: int = 1) -> None:
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self.processes = int(processes)

    def __call__(self, segment: Segment, path: Path) -> None:
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ProcessPoolExecutor(
                    max_workers=self.processes, mp_context=multiprocessing.get_context("spawn"),
                    initializer=exit_with_parent, initargs=(os.getpid(),))
            pool = self._pool
        try:
            pool.submit(_render_in_child, segment, str(path)).result()
        except concurrent.futures.process.BrokenProcessPool:
            with self._lock:  # the child died (e.g. a GL crash): the next clip gets a new one
                self._pool = None
            raise

    def close(self) -> None:
        """Stop the child process."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(cancel_futures=True)


class ClipCache:
    """Renders each segment's clip at most once into ``clips_dir/<id>.mp4`` (atomically)."""

    def __init__(self, store: PreferenceStore, clips_dir: Path, renderer: Renderer) -> None:
        self.store = store
        self.clips_dir = Path(clips_dir)
        self.renderer = renderer
        self._locks: dict[int, threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()
        #: Number of renders done by this process.
        self.renders = 0

    def target(self, segment_id: int) -> Path:
        """Where the clip of a segment is cached."""
        return self.clips_dir / f"{int(segment_id)}.mp4"

    def cached(self, segment_id: int) -> Path | None:
        """The cached clip of a segment, or ``None`` if it is not rendered yet."""
        target = self.target(segment_id)
        return target if target.exists() else None

    def path(self, segment_id: int) -> Path:
        """The cached clip path of a segment, rendering it first if needed (blocking: call it
        from a :class:`RenderWorker`, not from a request)."""
        target = self.target(segment_id)
        if target.exists():
            return target
        with self._guard:
            lock = self._locks[int(segment_id)]
        with lock:  # two viewers of one new clip render it once
            if target.exists():
                return target
            segment = self.store.get_segment(int(segment_id))

            def render(tmp: Path) -> None:
                # Encoders (ffmpeg) pick the container by suffix, and atomic_write's name ends in .tmp.
                video = tmp.with_name(tmp.name + ".mp4")
                try:
                    self.renderer(segment, video)
                    if not video.exists() or video.stat().st_size == 0:
                        raise RuntimeError(f"renderer wrote no clip for segment {segment_id}")
                    video.replace(tmp)
                finally:
                    video.unlink(missing_ok=True)

            atomic_write(target, render)
            self.renders += 1
        return target


class RenderWorker:
    """Threads that render clips ahead of the labellers, each one clip at a time, with one renderer.

    Args:
        clips: the cache it fills.
        store: where the queued queries are read.
        prerender: how many pending queries ahead to render (0 = only what is requested).
        poll_seconds: how often it looks for newly posted queries when idle.
        threads: clips rendered side by side (the renderer must allow it: a :class:`ProcessRenderer`
            with as many processes).
    """

    def __init__(
        self, clips: ClipCache, store: PreferenceStore, prerender: int = 8, poll_seconds: float = 0.5,
        threads: int = 1,
    ) -> None:
        self.clips = clips
        self.store = store
        self.prerender = int(prerender)
        self.poll_seconds = float(poll_seconds)
        self.n_threads = max(1, int(threads))
        self._claimed: set[int] = set()  # being rendered by one of the threads
        self._requested: deque[int] = deque()
        self._failures: dict[int, BaseException] = {}
        self._waiters: dict[int, list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = defaultdict(list)
        self._wake = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # ---- called from requests (never blocks on a render) ----------------------------------

    def request(self, segment_id: int) -> None:
        """Render this clip next (a labeller is waiting for it); forgets an earlier failure."""
        self.start()
        with self._wake:
            self._failures.pop(segment_id, None)
            if segment_id not in self._requested:
                self._requested.append(segment_id)
            self._wake.notify()

    def failure(self, segment_id: int) -> BaseException | None:
        """Why the last render of this clip failed, or ``None``."""
        with self._wake:
            return self._failures.get(segment_id)

    async def wait(self, segment_id: int, timeout: float) -> Path | None:
        """The clip once rendered, or ``None`` after ``timeout`` s or a failure (asyncio: holds no thread)."""
        done = asyncio.Event()
        waiter = (asyncio.get_running_loop(), done)
        with self._wake:
            self._waiters[segment_id].append(waiter)
        try:
            # checked after registering, so a render that ends in between is not missed
            if self.clips.cached(segment_id) is None and self.failure(segment_id) is None:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(done.wait(), timeout)
        finally:
            with self._wake:
                waiters = self._waiters.get(segment_id, [])
                if waiter in waiters:
                    waiters.remove(waiter)
                if not waiters:
                    self._waiters.pop(segment_id, None)
        return self.clips.cached(segment_id)

    def _finished(self, segment_id: int, error: BaseException | None) -> None:
        with self._wake:
            if error is not None:
                self._failures[segment_id] = error
            waiters = self._waiters.pop(segment_id, [])
        for loop, done in waiters:
            with contextlib.suppress(RuntimeError):  # that loop has closed: nobody waits any more
                loop.call_soon_threadsafe(done.set)

    def wake(self) -> None:
        """Look for new queries now (e.g. one was just leased)."""
        with self._wake:
            self._wake.notify()

    # ---- the thread -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the threads (idempotent)."""
        with self._wake:
            if not any(t.is_alive() for t in self._threads):
                self._stop.clear()
                self._threads = [threading.Thread(target=self._run, name=f"prefrl-render-{i}", daemon=True)
                                 for i in range(self.n_threads)]
                for thread in self._threads:
                    thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the renders in progress."""
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        for thread in self._threads:
            thread.join(timeout)

    def _claim(self, segment_id: int) -> bool:
        with self._wake:
            if segment_id in self._claimed:
                return False
            self._claimed.add(segment_id)
            return True

    def _next(self) -> int | None:
        with self._wake:
            while self._requested:
                segment_id = self._requested.popleft()
                if segment_id not in self._claimed:
                    self._claimed.add(segment_id)
                    return segment_id
        for segment_id in self._ahead():
            if self.clips.cached(segment_id) is None and self.failure(segment_id) is None and self._claim(segment_id):
                return segment_id
        return None

    def _ahead(self) -> list[int]:
        """Segments of the queries being labelled now, then of the next few in the queue of each
        labeller labelling now, then of the next pending ones for anyone."""
        if self.prerender <= 0:
            return []
        leased = self.store.queries("leased")
        names = list(dict.fromkeys(q.leased_to for q in leased if q.leased_to))
        # One read of the queue, then each labeller's part of it (unrestricted or theirs), in the
        # order they will lease it; a labeller's own read only when the window holds too few of
        # theirs (queries kept for others). A read per labeller cost ~1.4 ms of this process's GIL.
        limit = self.prerender * (len(names) + 1)
        pending = self.store.queries("pending", limit=limit)
        queries = list(leased)
        for name in names:
            theirs = [q for q in pending if q.labeller in (None, name)][: self.prerender]
            if len(theirs) < self.prerender and len(pending) == limit:
                theirs = self.store.queries("pending", limit=self.prerender, labeller=name)
            queries += theirs
        queries += pending[: self.prerender]
        ids = [i for q in queries if q.left_id is not None for i in (int(q.left_id), int(q.right_id))]
        return list(dict.fromkeys(ids))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                segment_id = self._next()
            except Exception:  # noqa: BLE001 - the store is unreachable for now: try again later
                log.exception("render worker: cannot read the queue")
                segment_id = None
            if segment_id is None:
                with self._wake:
                    if not self._requested and not self._stop.is_set():
                        self._wake.wait(self.poll_seconds)
                continue
            try:
                self.clips.path(segment_id)
            except BaseException as err:  # noqa: BLE001 - reported to whoever asks for the clip
                log.warning("render worker: segment %s failed: %s: %s", segment_id, type(err).__name__, err)
                self._finished(segment_id, err)
                if not isinstance(err, Exception):
                    raise
            else:
                self._finished(segment_id, None)
            finally:
                with self._wake:
                    self._claimed.discard(segment_id)
