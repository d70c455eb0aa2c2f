"""The clips labellers compare: rendered from a segment's simulator states, cached on disk."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from prefrl.data.store import PreferenceStore
from prefrl.data.types import Segment
from prefrl.utils.files import atomic_write

__all__ = ["Renderer", "default_renderer", "ClipCache"]

#: Renders one segment to an MP4 file at the given path.
Renderer = Callable[[Segment, Path], None]


def default_renderer(segment: Segment, path: Path) -> None:
    """Render with :func:`prefrl.control.render.render_segment` (imported lazily: MuJoCo is heavy)."""
    from prefrl.control.render import render_segment

    render_segment(segment, path)


class ClipCache:
    """Renders each segment's clip at most once, on demand, into ``clips_dir/<id>.mp4``."""

    def __init__(self, store: PreferenceStore, clips_dir: Path, renderer: Renderer) -> None:
        self.store = store
        self.clips_dir = Path(clips_dir)
        self.renderer = renderer
        self._locks: dict[int, threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()
        #: Number of renders done by this process.
        self.renders = 0

    def path(self, segment_id: int) -> Path:
        """The cached clip path of a segment, rendering it first if needed."""
        target = self.clips_dir / f"{int(segment_id)}.mp4"
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
