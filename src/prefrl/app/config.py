"""Settings of the labelling server."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["AppConfig"]


@dataclass
class AppConfig:
    """Settings of the labelling server."""

    clips_dir: Path = Path("clips")
    """Where rendered MP4 clips are cached, one file per segment id."""
    prerender_queries: int = 8
    """How many pending queries ahead the render worker renders, for anyone and for each labeller at
    work (besides those being labelled); 0 renders only clips asked for."""
    render_processes: int = 2
    """Child processes rendering clips side by side (one MuJoCo GL context each). Eight people at one
    answer per 3 s need ~5 HalfCheetah clips/s; one process renders ~3/s on a loaded 2-core machine."""
    clip_wait_seconds: float = 1.0
    """How long a clip request waits (holding no thread) for a render in flight before 202."""
    lease_seconds: float = 300.0
    """How long a shown query stays reserved for its labeller before it returns to the pool."""
    undo_window_seconds: float = 30.0
    """How long after answering a labeller may undo that answer."""
    max_body_bytes: int = 16 * 1024
    """Request bodies larger than this are refused with 413."""
    session_max_age_seconds: float = 12 * 3600.0
    """Lifetime of a login session cookie."""
    secure_cookie: bool = False
    """Set the cookie's ``Secure`` flag (turn on behind HTTPS)."""
    secret: bytes | None = field(default=None, repr=False)
    """HMAC key for session cookies; random per process when ``None``."""
    allowed_hosts: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")
    """Host names the server answers to (the ``Host`` header, without port); ``"*"`` allows any.
    Refusing others stops DNS-rebinding pages from talking to a server on loopback."""
    login_max_failures: int = 10
    """Failed logins allowed per client address in ``login_window_seconds``; then 429."""
    login_window_seconds: float = 60.0
    """The window of the login rate limit."""

    def __post_init__(self) -> None:
        self.clips_dir = Path(self.clips_dir)
        self.allowed_hosts = tuple(h.strip().lower().strip("[]") for h in self.allowed_hosts)
        if not self.allowed_hosts or not all(self.allowed_hosts):
            raise ValueError(f"allowed_hosts must name at least one host, got {self.allowed_hosts!r}")
        if isinstance(self.login_max_failures, bool) or not isinstance(self.login_max_failures, int) \
                or self.login_max_failures < 1:
            raise ValueError(f"login_max_failures must be an int ≥ 1, got {self.login_max_failures!r}")
        if isinstance(self.render_processes, bool) or not isinstance(self.render_processes, int) \
                or not 1 <= self.render_processes <= 64:
            raise ValueError(f"render_processes must be an int from 1 to 64, got {self.render_processes!r}")
        if isinstance(self.prerender_queries, bool) or not isinstance(self.prerender_queries, int) \
                or self.prerender_queries < 0:
            raise ValueError(f"prerender_queries must be an int ≥ 0, got {self.prerender_queries!r}")
        for name in ("lease_seconds", "undo_window_seconds", "session_max_age_seconds", "login_window_seconds",
                     "clip_wait_seconds"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not isinstance(self.max_body_bytes, int) or self.max_body_bytes < 256:
            raise ValueError(f"max_body_bytes must be an int ≥ 256, got {self.max_body_bytes!r}")
