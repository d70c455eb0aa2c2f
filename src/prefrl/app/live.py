"""The labelling app served from inside another run: ``prefrl control train --teacher human --serve``.

One process trains and serves (issue #14, item 4): uvicorn runs in a background thread with the
app's render worker, over the run's own store, while the training loop keeps collecting and
training on whatever people have answered so far — asynchronously, as in Christiano et al. 2017.
The loop never imports the app; the CLI starts a :class:`LiveServer` around ``loop.run()``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from prefrl.app.config import AppConfig
from prefrl.app.middleware import RedactTokenFilter
from prefrl.app.server import Renderer, create_app
from prefrl.data.store import PreferenceStore

__all__ = ["LiveServer", "bind", "labeller_links", "parse_labellers"]

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def parse_labellers(value: str | None) -> list[str]:
    """``"ann,bob"`` → ``["ann", "bob"]`` (blank entries dropped, duplicates refused)."""
    names = [n.strip() for n in (value or "").split(",") if n.strip()]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"--labellers names {', '.join(duplicated)} more than once")
    return names


def labeller_links(store: PreferenceStore, names: Iterable[str], base_url: str) -> dict[str, str]:
    """A fresh one-time login link per name: new labellers are added, existing ones get a new token.

    Reissuing ends the labeller's earlier sessions and links (the store's session epoch).
    """
    links = {}
    for name in names:
        try:
            token = store.reissue_token(name)
        except KeyError:
            token = store.add_labeller(name)
        links[name] = f"{base_url}/login?token={token}"
    return links


def bind(host: str = "127.0.0.1", port: int = 8000) -> socket.socket:
    """A TCP socket bound to ``host:port`` (0: a free port), before anything else is built; ValueError in one line."""
    if host in ("0.0.0.0", "::"):
        raise ValueError(f"--host {host} serves every interface: serve a public app with `prefrl label serve "
                         "--allowed-host NAME` beside the run instead")
    if not 0 <= int(port) <= 65535:
        raise ValueError(f"--port must be in [0, 65535], got {port}")
    # IPPROTO_TCP, or asyncio leaves Nagle on and every keep-alive request waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, int(port)))
    except OSError as e:
        sock.close()
        raise ValueError(f"cannot serve on {host}:{port}: {e.strerror or e}") from None
    return sock


class LiveServer:
    """The labelling app on ``host:port`` in a daemon thread of this process (a context manager).

    Args:
        store: the store the app serves (the training run's own).
        host, port: where to listen; port 0 picks a free one (see :attr:`url`).
        sock: a socket from :func:`bind` to listen on instead (``host`` still names the allowed host).
        clips_dir: cache of rendered clips.
        renderer: renders a segment's clip; ``None`` = MuJoCo replay in a child process.
        app_config: other settings of the app (``clips_dir``/``allowed_hosts`` are set from the above).
    """

    def __init__(self, store: PreferenceStore, host: str = "127.0.0.1", port: int = 8000, *,
                 sock: socket.socket | None = None, clips_dir: str | Path = "clips",
                 renderer: Renderer | None = None, app_config: AppConfig | None = None) -> None:
        self._sock = sock if sock is not None else bind(host, port)
        secret = os.environ.get("PREFRL_APP_SECRET")
        base = app_config or AppConfig(secret=secret.encode() if secret else None)
        base.clips_dir = Path(clips_dir)
        base.allowed_hosts = tuple(dict.fromkeys((host.lower(), *LOOPBACK_NAMES)))
        self.store, self.host, self.config = store, host, base
        self.app = create_app(store, base, renderer=renderer)
        self.port = int(self._sock.getsockname()[1])
        self._server = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 30.0) -> LiveServer:
        """Start serving (the render worker with it); returns once requests are answered."""
        import uvicorn

        config = uvicorn.Config(self.app, log_level="warning")  # the run's progress bar owns the terminal
        logging.getLogger("uvicorn.access").addFilter(RedactTokenFilter())
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name="prefrl-app", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the labelling app did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and rendering (idempotent)."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None
        self.app.state.render_worker.stop()
        self._sock.close()

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
